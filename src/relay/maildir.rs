//! Local delivery to a Maildir: written to `tmp/`, synced, renamed into `new/`, and the
//! directory synced, so that a crash leaves the message whole or absent. Lines end in LF
//! on disk, as Postfix's and Dovecot's local delivery write them (mail readers and
//! Dovecot's Maildir code take CRLF for part of the line's content).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use crate::smtp::reply::{Enhanced, Reply};

use super::Copy;

/// Delivers one copy into the Maildir at `root`.
///
/// # Errors
/// `451 4.3.0` when the file cannot be written; nothing is half-delivered then.
pub fn deliver(root: &Path, hostname: &str, copy: &Copy) -> Result<Reply, Reply> {
    let fail = |what: &str, path: &Path, e: std::io::Error| {
        tracing::error!(path = %path.display(), error = %e, "{what}");
        Reply::new(
            451,
            Enhanced(4, 3, 0),
            "Local delivery failed; try again later",
        )
    };
    // Decrypted mail: folders 0700 and files 0600, whatever the umask. Existing folders
    // keep the mode their owner gave them (a mailbox server may need group access).
    for sub in ["tmp", "new", "cur"] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join(sub))
            .map_err(|e| fail("cannot create the Maildir", &root.join(sub), e))?;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let host: String = hostname
        .chars()
        .map(|c| if c == '/' || c == ':' { '_' } else { c })
        .collect();
    let name = format!(
        "{}.M{}P{}R{:016x}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        rand::random::<u64>()
    );
    let tmp = root.join("tmp").join(&name);
    let mut header = format!("Return-Path: <{}>\n", copy.envelope.sender.address);
    for r in &copy.envelope.recipients {
        header.push_str(&format!("Delivered-To: {}\n", r.address));
    }
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(header.as_bytes())?;
        let mut lf = LfWriter::default();
        copy.data.for_each_piece(|p| lf.write(&mut f, p))?;
        lf.finish(&mut f)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail("cannot write to the Maildir", &tmp, e));
    }
    let new = root.join("new").join(&name);
    std::fs::rename(&tmp, &new).map_err(|e| fail("cannot move the message into new/", &new, e))?;
    std::fs::File::open(root.join("new"))
        .and_then(|d| d.sync_all())
        .map_err(|e| fail("cannot sync the Maildir", &root.join("new"), e))?;
    Ok(Reply::new(
        250,
        Enhanced(2, 0, 0),
        format!("Delivered to the Maildir as {name}"),
    ))
}

/// Writes CRLF as LF, a piece at a time: a CR at the end of one piece waits for the first
/// byte of the next. A CR not followed by LF is kept (the relay never hands one over).
#[derive(Default)]
struct LfWriter {
    pending_cr: bool,
    out: Vec<u8>,
}

impl LfWriter {
    fn write(&mut self, f: &mut impl Write, piece: &[u8]) -> std::io::Result<()> {
        self.out.clear();
        self.out.reserve(piece.len() + 1);
        let mut bytes = piece.iter().peekable();
        if self.pending_cr {
            self.pending_cr = false;
            if bytes.peek() != Some(&&b'\n') {
                self.out.push(b'\r');
            }
        }
        while let Some(&b) = bytes.next() {
            if b == b'\r' {
                match bytes.peek() {
                    Some(b'\n') => continue,
                    Some(_) => self.out.push(b),
                    None => self.pending_cr = true,
                }
            } else {
                self.out.push(b);
            }
        }
        let written = f.write_all(&self.out);
        // The copy may be decrypted mail: the staging buffer does not keep it.
        self.out.iter_mut().for_each(|b| *b = 0);
        written
    }

    fn finish(self, f: &mut impl Write) -> std::io::Result<()> {
        if self.pending_cr {
            f.write_all(b"\r")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crlf_becomes_lf_across_any_split() {
        let input = b"Subject: a\r\n\r\nline one\r\nbare\rcr\r\nend\r\n";
        for cut in 0..=input.len() {
            let mut out = Vec::new();
            let mut w = LfWriter::default();
            w.write(&mut out, &input[..cut]).unwrap();
            w.write(&mut out, &input[cut..]).unwrap();
            w.finish(&mut out).unwrap();
            assert_eq!(
                out, b"Subject: a\n\nline one\nbare\rcr\nend\n",
                "cut at {cut}"
            );
        }
    }
}
