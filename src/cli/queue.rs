//! Command-line parser and runner for `sealpost queue`.

use clap::Subcommand;

use crate::relay::{Entry, Escaped, Relay};

use super::keys::Io;

/// Inspect and manage the spool: copies the gateway accepted and still owes a delivery.
#[derive(Debug, Subcommand)]
#[command(after_help = "\
Examples:
  sealpost queue list
  sealpost queue retry               # everything, now
  sealpost queue retry 7KQ2M9XBD4FZ.0
  sealpost queue remove 7KQ2M9XBD4FZ.0")]
pub enum QueueCommand {
    /// List spooled copies: ID, sender, recipients, attempts, next try, last error
    List,
    /// Retry now: one copy (by ID or queue ID), or all
    Retry { id: Option<String> },
    /// Remove a copy without delivering it (no DSN is sent)
    Remove { id: String },
}

pub fn execute(cmd: QueueCommand, relay: &Relay, io: &mut Io<'_>) -> anyhow::Result<()> {
    match cmd {
        QueueCommand::List => list(&relay.spool().all()?, io),
        QueueCommand::Retry { id } => {
            let n = relay.retry_now(id.as_deref())?;
            if n == 0 {
                anyhow::bail!("nothing in the spool matches");
            }
            writeln!(
                io.out,
                "{n} cop{} due now",
                if n == 1 { "y is" } else { "ies are" }
            )?;
            Ok(())
        }
        QueueCommand::Remove { id } => {
            if !relay.remove(&id)? {
                anyhow::bail!(
                    "no spooled copy {}; see `sealpost queue list`",
                    Escaped(&id)
                );
            }
            writeln!(io.out, "removed {}", Escaped(&id))?;
            Ok(())
        }
    }
}

/// One line per spooled copy, and its last error. Addresses, IDs and error texts come
/// from the network (an upstream's reply, a client's envelope): each is printed escaped,
/// so that no control character or terminal escape reaches the admin's terminal and no
/// line feed forges a line (security rule 17).
pub fn list(entries: &[Entry], io: &mut Io<'_>) -> anyhow::Result<()> {
    if entries.is_empty() {
        writeln!(io.err, "the spool is empty")?;
        return Ok(());
    }
    for e in entries {
        let rcpts: Vec<String> = e
            .envelope
            .recipients
            .iter()
            .map(|r| Escaped(&r.address).to_string())
            .collect();
        let next = chrono::DateTime::<chrono::Utc>::from_timestamp(e.next_attempt as i64, 0)
            .map_or_else(String::new, |t| {
                t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
            });
        writeln!(
            io.out,
            "{}  from <{}>  to {}  attempts {}  next {}",
            Escaped(&e.id),
            Escaped(&e.envelope.sender.address),
            rcpts.join(", "),
            e.attempts,
            next
        )?;
        if let Some(err) = &e.last_error {
            writeln!(io.out, "    last error: {}", Escaped(err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::testutil::entry;
    use crate::relay::Spool;

    #[test]
    fn list_prints_control_characters_escaped() {
        // Addresses with control characters are refused at MAIL and RCPT (and when read
        // back from the spool); ids and replies are what can carry them.
        let entry = Entry {
            last_error: Some("451 4.2.0 \x1b[31mred\x1b[0m\nforged: line\u{9b}".into()),
            ..entry("Q\x1b[2J.0")
        };
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut input = |_: &std::path::Path| Ok(Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            input: &mut input,
        };
        list(&[entry], &mut io).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            !text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{9b}'),
            "{text:?}"
        );
        assert_eq!(text.lines().count(), 2, "one line and its error: {text:?}");
        for shown in [
            "Q\\x1b[2J.0",
            "from <a@example.org>",
            "to b@example.net",
            "last error: 451 4.2.0 \\x1b[31mred\\x1b[0m\\nforged: line\\u{9b}",
        ] {
            assert!(text.contains(shown), "{shown} in {text:?}");
        }
        // And an entry as it comes back from the spool lists the same way.
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), None).unwrap();
        let mut stored = spool_entry();
        stored.last_error = Some("550 \x1b[5mblink".into());
        spool.put(&[stored]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut io = Io {
            out: &mut out,
            err: &mut err,
            input: &mut input,
        };
        list(&spool.all().unwrap(), &mut io).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("last error: 550 \\x1b[5mblink"), "{text:?}");
        assert!(!text.contains('\x1b'), "{text:?}");
    }

    fn spool_entry() -> Entry {
        Entry {
            data: Entry::encode(b"Subject: s\r\n\r\nx\r\n"),
            ..entry("R.0")
        }
    }
}
