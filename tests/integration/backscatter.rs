//! No backscatter: the inbound listener refuses mail for a user who does not exist at RCPT
//! time (550 5.1.1), by asking the mailbox server or a recipients file, instead of
//! accepting it and bouncing it later to a sender anyone can forge.

use std::time::Duration;

use super::common::{write, Raw, Sealpost};
use super::upstream::{free_port, RcptRule, ScriptedUpstream};

fn config(inbound: &str) -> String {
    format!(
        "[[listener]]\nmode = \"inbound\"\naddress = \"127.0.0.1:0\"\ntls = \"none\"\n\n\
         [inbound]\n{inbound}local_domains = [\"example.org\"]\n\n\
         [delivery]\nretry = \"1s\"\n"
    )
}

/// One transaction from a remote sender; the replies to each RCPT and to the final dot.
fn transaction(port: u16, rcpts: &[&str]) -> (Vec<String>, String) {
    let mut c = Raw::connect(port);
    c.cmd("EHLO sender.example");
    let mail = c.cmd("MAIL FROM:<someone@remote.example>");
    assert!(mail.starts_with("250"), "{mail}");
    let replies: Vec<String> = rcpts
        .iter()
        .map(|r| c.cmd(&format!("RCPT TO:<{r}>")))
        .collect();
    let end = if replies.iter().any(|r| r.starts_with("250")) {
        c.cmd("DATA");
        c.cmd("From: someone@remote.example\r\nSubject: hello\r\n\r\nhi\r\n.")
    } else {
        String::new()
    };
    c.cmd("QUIT");
    (replies, end)
}

#[test]
fn an_unknown_user_is_refused_at_rcpt_and_nothing_bounces() {
    let hop = ScriptedUpstream::start();
    hop.rule("nobody@example.org", RcptRule::Reject);
    let s = Sealpost::new();
    let gw = s.serve(&config(&format!("deliver = \"{}\"\n", hop.address())), &[]);
    let (replies, end) = transaction(gw.port(), &["alice@example.org", "nobody@example.org"]);
    assert!(replies[0].starts_with("250"), "{replies:?}");
    assert!(replies[1].starts_with("550 5.1.1"), "{replies:?}");
    assert!(replies[1].contains("nobody@example.org"), "{replies:?}");
    assert!(end.starts_with("250"), "{end}");
    let got = hop.wait_received(1, Duration::from_secs(30));
    assert_eq!(got[0].recipients, vec!["alice@example.org".to_string()]);
    // Nothing owed, so nothing to bounce later.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(hop.received().len(), 1);
    assert!(s.ok(&["queue", "list"]).is_empty());
}

#[test]
fn a_mailbox_server_that_cannot_be_asked_gives_a_temporary_refusal() {
    let s = Sealpost::new();
    let closed = format!("127.0.0.1:{}", free_port());
    let gw = s.serve(&config(&format!("deliver = \"lmtp:{closed}\"\n")), &[]);
    let (replies, _) = transaction(gw.port(), &["alice@example.org"]);
    assert!(replies[0].starts_with("450 4.1.1"), "{replies:?}");
    assert!(replies[0].contains("try again later"), "{replies:?}");
    assert!(s.ok(&["queue", "list"]).is_empty());
}

#[test]
fn a_recipients_file_decides_without_asking() {
    let s = Sealpost::new();
    let list = write(
        s.dir.path(),
        "recipients",
        b"# the people of example.org\nAlice@Example.org\n\nbob@example.org  # with a comment\n",
    );
    let maildir = s.dir.path().join("Maildir");
    let gw = s.serve(
        &config(&format!(
            "deliver = \"maildir:{}\"\nrecipients = \"file:{}\"\n",
            maildir.display(),
            list.display()
        )),
        &[],
    );
    let (replies, end) = transaction(
        gw.port(),
        &["alice@example.org", "bob@example.org", "carol@example.org"],
    );
    assert!(replies[0].starts_with("250"), "{replies:?}");
    assert!(replies[1].starts_with("250"), "{replies:?}");
    assert!(replies[2].starts_with("550 5.1.1"), "{replies:?}");
    assert!(end.starts_with("250"), "{end}");
    // Delivered into the Maildir with LF line ends, as Postfix and Dovecot write them.
    let file = super::upstream::wait_for(Duration::from_secs(30), "a delivered file", || {
        std::fs::read_dir(maildir.join("new"))
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .next()
    });
    let bytes = std::fs::read(file).expect("read delivered");
    assert!(!bytes.contains(&b'\r'), "CR in a Maildir file");
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("Delivered-To: alice@example.org\n"), "{text}");
    assert!(text.contains("\nSubject: hello\n"), "{text}");

    let bad = s.dir.path().join("bad.toml");
    std::fs::write(&bad, config("recipients = \"ldap://somewhere\"\n")).expect("write");
    let err = s.fails(
        &["check-config", "--config", bad.to_str().expect("path")],
        1,
    );
    assert!(err.contains("inbound.recipients"), "{err}");
}
