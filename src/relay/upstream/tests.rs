//! The upstream client against a small SMTP server on a real socket.

use super::*;
use crate::relay::pool::MAX_TRANSACTIONS;
use crate::relay::testutil::{dotted_message, spilled, unstuff, upstream_config as config, Sink};
use crate::relay::Route;
use crate::smtp::envelope::{Envelope, Recipient, Sender};

#[test]
fn upstream_texts_keep_their_enhanced_code() {
    let r = parse_text(550, "5.1.1 <bob@x>: no such user".into());
    assert_eq!(r.to_wire(), b"550 5.1.1 <bob@x>: no such user\r\n");
    let r = parse_text(451, "try later".into());
    assert_eq!(r.to_wire(), b"451 4.0.0 try later\r\n");
}

fn copy(data: Blob) -> Copy {
    Copy {
        envelope: Envelope {
            sender: Sender::plain("a@example.org"),
            recipients: vec![Recipient::plain("b@example.net")],
        },
        data,
        credentials: None,
        route: Route::Outbound,
        returned_header: None,
    }
}

fn delivered(outcomes: &[Outcome]) -> bool {
    outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Delivered(r) if r.code == 250))
}

#[tokio::test]
async fn a_spilled_message_goes_byte_for_byte_with_dots_at_every_chunk_edge() {
    let sink = Sink::start().await;
    let cfg = config(sink.port);
    let dir = tempfile::tempdir().unwrap();
    let message = dotted_message(5);
    let header = b"Received: by gw.test\r\n".to_vec();
    let blob = spilled(&message, dir.path()).prepend(header.clone());
    let mut expected = header;
    expected.extend_from_slice(&message);

    assert!(delivered(&attempt(&cfg, &copy(blob.clone())).await));
    // The same message from memory, on the pooled connection: the same bytes.
    assert!(delivered(
        &attempt(&cfg, &copy(Blob::from(expected.clone()))).await
    ));
    // Without its last CRLF, which the final dot then supplies.
    let cut = blob.slice(0..blob.len() - 2);
    assert!(delivered(&attempt(&cfg, &copy(cut)).await));

    let got = sink.messages.lock().unwrap().clone();
    assert_eq!(got.len(), 3);
    assert!(got[0] == got[1], "spilled and in-memory agree on the wire");
    assert!(got[2] == got[0], "a missing last CRLF is added");
    let dot_lines = expected
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"."))
        .count();
    assert_eq!(got[0].len(), expected.len() + dot_lines);
    assert!(unstuff(&got[0]) == expected, "byte for byte");
}

#[tokio::test]
async fn a_spilled_message_that_cannot_be_read_is_not_sent() {
    let sink = Sink::start().await;
    let cfg = config(sink.port);
    let named = tempfile::NamedTempFile::new().unwrap();
    let key = crate::blob::MasterKey::random();
    let mut w = crate::blob::SealedWriter::new(named.reopen().unwrap(), &key).unwrap();
    w.write(&b"Subject: x\r\n\r\n".repeat(20_000)).unwrap();
    w.finish_durable().unwrap();
    // Opened under another key: no chunk authenticates.
    let f =
        crate::blob::SealedFile::open(named.reopen().unwrap(), &crate::blob::MasterKey::random())
            .unwrap();
    let outcomes = attempt(&cfg, &copy(Blob::from(f))).await;
    assert!(
        matches!(&outcomes[..], [Outcome::Failed(r)] if r.code == 451),
        "{outcomes:?}"
    );
    assert!(sink.messages.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_read_failing_in_the_middle_cuts_the_socket_before_the_final_dot() {
    let sink = Sink::start().await;
    let cfg = config(sink.port);
    // Chunk 2 of 5 fails authentication; the pre-check before MAIL is skipped here.
    let named = tempfile::NamedTempFile::new().unwrap();
    let key = crate::blob::MasterKey::random();
    let mut w = crate::blob::SealedWriter::new(named.reopen().unwrap(), &key).unwrap();
    w.write(&b"line of text\r\n".repeat(23_000)).unwrap();
    w.finish_durable().unwrap();
    let mut raw = std::fs::read(named.path()).unwrap();
    raw[32 + 2 * (CHUNK + 16) + 100] ^= 1;
    std::fs::write(named.path(), &raw).unwrap();
    let blob = Blob::from(crate::blob::SealedFile::open(named.reopen().unwrap(), &key).unwrap());

    let Connected {
        mut conn, switch, ..
    } = connect(&cfg, None).await.unwrap();
    for cmd in [
        "MAIL FROM:<a@example.org>\r\n",
        "RCPT TO:<b@example.net>\r\n",
        "DATA\r\n",
    ] {
        command_checked(&mut conn, cmd.to_string(), cfg.timeout)
            .await
            .unwrap();
    }
    let (reply, broken) = send_message(&mut conn, &switch, &cfg, &blob)
        .await
        .unwrap_err();
    assert_eq!((reply.code, broken), (451, true));
    conn.abort().await;
    drop(conn);
    sink.wait_ended(1).await;
    assert!(
        sink.messages.lock().unwrap().is_empty(),
        "the server never saw the message end"
    );
}

/// A server that offers `mechanisms` and accepts the login `bob` / `pw`, answering each
/// line as a real one would; returns its port and the lines it was sent.
async fn auth_server(
    mechanisms: &'static str,
) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let lines = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let lines = lines.clone();
            tokio::spawn(async move {
                let (r, mut w) = stream.into_split();
                let mut r = BufReader::new(r);
                w.write_all(b"220 up.test ESMTP\r\n").await.unwrap();
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                let mut line = String::new();
                while r.read_line(&mut line).await.unwrap_or(0) > 0 {
                    let got = line.trim_end().to_string();
                    lines.lock().unwrap().push(got.clone());
                    let reply = if got.starts_with("EHLO") {
                        format!("250-up.test\r\n250 AUTH {mechanisms}\r\n")
                    } else if got == format!("AUTH PLAIN {}", b64("\0bob\0pw")) {
                        "235 2.7.0 ok\r\n".into()
                    } else if got == "AUTH LOGIN" {
                        format!("334 {}\r\n", b64("Username:"))
                    } else if got == b64("bob") {
                        format!("334 {}\r\n", b64("Password:"))
                    } else if got == b64("pw") {
                        "235 2.7.0 ok\r\n".into()
                    } else if got == "QUIT" {
                        "221 bye\r\n".into()
                    } else {
                        "535 5.7.8 no\r\n".into()
                    };
                    w.write_all(reply.as_bytes()).await.unwrap();
                    line.clear();
                }
            });
        }
    });
    (port, seen)
}

/// The login is written by the gateway (lettre never holds the password): PLAIN when
/// offered, else LOGIN, and a wrong password is refused either way.
#[tokio::test]
async fn logs_in_with_plain_or_login_and_refuses_a_wrong_password() {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let creds = |pass: &str| Credentials {
        username: "bob".into(),
        secret: Some(pass.into()),
    };
    for (mechanisms, expected) in [
        (
            "PLAIN LOGIN",
            vec![format!("AUTH PLAIN {}", b64("\0bob\0pw"))],
        ),
        (
            "LOGIN",
            vec!["AUTH LOGIN".to_string(), b64("bob"), b64("pw")],
        ),
    ] {
        let (port, seen) = auth_server(mechanisms).await;
        let cfg = config(port);
        assert!(
            check_login(&cfg, &creds("pw")).await.is_ok(),
            "{mechanisms}"
        );
        let sent: Vec<String> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.starts_with("EHLO") && *l != "QUIT")
            .cloned()
            .collect();
        assert_eq!(sent, expected, "{mechanisms}");
        let refused = check_login(&cfg, &creds("wrong")).await.unwrap_err();
        assert_eq!(refused.code, 535, "{mechanisms}: {refused:?}");
    }
    let (port, _) = auth_server("CRAM-MD5").await;
    let refused = check_login(&config(port), &creds("pw")).await.unwrap_err();
    assert_eq!(refused.code, 454, "{refused:?}");
}

/// The pool tells logins apart without keeping the password.
#[test]
fn pooled_logins_are_told_apart_by_a_digest() {
    let c = |user: &str, pass: &str| Credentials {
        username: user.into(),
        secret: Some(pass.into()),
    };
    assert!(Login::of(&c("bob", "pw")) == Login::of(&c("bob", "pw")));
    assert!(Login::of(&c("bob", "pw")) != Login::of(&c("bob", "pw2")));
    assert!(Login::of(&c("bob", "pw")) != Login::of(&c("eve", "pw")));
}

/// Copies reuse one connection, which is retired with QUIT after
/// [`MAX_TRANSACTIONS`]; the next copy opens a fresh one.
#[tokio::test]
async fn a_connection_is_reused_and_retired_after_its_transactions() {
    let sink = Sink::start().await;
    let cfg = config(sink.port);
    let n = MAX_TRANSACTIONS as usize + 3;
    for _ in 0..n {
        let m = Blob::from(b"Subject: x\r\n\r\nhello\r\n".to_vec());
        assert!(delivered(&attempt(&cfg, &copy(m)).await));
    }
    assert_eq!(sink.messages.lock().unwrap().len(), n);
    // The first connection quit after its hundredth message; the second is idle.
    sink.wait_ended(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(sink.ended.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(cfg.pool.idle.idle_transactions(), [3]);
}

/// A server that refuses the login and then never answers QUIT: lettre's abort (QUIT and
/// its reply) is bounded by the command timeout, so the attempt still ends.
#[tokio::test]
async fn a_server_silent_after_a_refused_login_does_not_hold_the_attempt() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write.write_all(b"220 mx.test ESMTP\r\n").await.unwrap();
        let mut line = String::new();
        while read.read_line(&mut line).await.unwrap_or(0) > 0 {
            let reply: &[u8] = if line.starts_with("EHLO") {
                b"250-mx.test\r\n250 AUTH PLAIN\r\n"
            } else if line.starts_with("AUTH") {
                b"535 5.7.8 no\r\n"
            } else {
                // QUIT: no reply, and the connection stays open.
                b""
            };
            write.write_all(reply).await.unwrap();
            line.clear();
        }
    });
    let mut cfg = config(port);
    cfg.timeout = Duration::from_millis(300);
    cfg.credentials = Some(Credentials {
        username: "bob".into(),
        secret: Some("pw".into()),
    });
    let m = Blob::from(b"Subject: x\r\n\r\nhello\r\n".to_vec());
    let outcomes = tokio::time::timeout(Duration::from_secs(5), attempt(&cfg, &copy(m)))
        .await
        .expect("the attempt ends");
    assert!(
        matches!(&outcomes[..], [Outcome::Failed(r)] if r.code == 535),
        "{outcomes:?}"
    );
}
