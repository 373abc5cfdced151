//! The LMTP client against an in-memory server that answers from a script.

use std::sync::Mutex;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::*;
use crate::relay::Route;
use crate::smtp::envelope::{Envelope, Recipient, Sender};

/// How the fake server answers.
#[derive(Clone)]
struct Script {
    lhlo: &'static str,
    /// RCPT replies by address; others get 250.
    rcpt: Vec<(&'static str, &'static str)>,
    /// The replies after the final dot, sent in one write; `None`: stay silent.
    after_data: Option<&'static str>,
    /// Close the connection right after the replies to the final dot.
    hang_up: bool,
}

impl Default for Script {
    fn default() -> Script {
        Script {
            lhlo: "250-lmtp.test\r\n250-8BITMIME\r\n250-SIZE\r\n250 ENHANCEDSTATUSCODES\r\n",
            rcpt: Vec::new(),
            after_data: Some("250 2.0.0 ok\r\n250 2.0.0 ok\r\n"),
            hang_up: false,
        }
    }
}

/// Serves one session; returns the command lines and the data it received.
async fn fake<S: AsyncRead + AsyncWrite>(server: S, script: Script) -> (Vec<String>, Vec<u8>) {
    let (read, mut write) = tokio::io::split(server);
    let mut read = BufReader::new(read);
    let mut commands = Vec::new();
    let mut data = Vec::new();
    let _ = write.write_all(b"220 lmtp.test LMTP\r\n").await;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            break;
        }
        let line = line.trim_end().to_string();
        commands.push(line.clone());
        let verb = line.split([' ', ':']).next().unwrap_or("").to_uppercase();
        let reply: String = match verb.as_str() {
            "LHLO" => script.lhlo.into(),
            "MAIL" => "250 2.1.0 ok\r\n".into(),
            "RCPT" => script
                .rcpt
                .iter()
                .find(|(a, _)| line.contains(a))
                .map_or("250 2.1.5 ok\r\n".into(), |(_, r)| r.to_string()),
            "DATA" => {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                loop {
                    let mut l = Vec::new();
                    if read.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                        return (commands, data);
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(&l);
                }
                match script.after_data {
                    Some(r) if script.hang_up => {
                        let _ = write.write_all(r.as_bytes()).await;
                        return (commands, data);
                    }
                    Some(r) => r.into(),
                    None => {
                        // Silent until the client gives up.
                        let _ = read.read_line(&mut String::new()).await;
                        return (commands, data);
                    }
                }
            }
            "RSET" => "250 2.0.0 ok\r\n".into(),
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                break;
            }
            _ => "502 5.5.2 what?\r\n".into(),
        };
        let _ = write.write_all(reply.as_bytes()).await;
    }
    (commands, data)
}

fn cfg() -> LmtpConfig {
    LmtpConfig {
        address: LmtpAddress::Unix("/nonexistent/lmtp".into()),
        tls: HopTls::None,
        lhlo: "gw.test".into(),
        timeout: Duration::from_secs(5),
        data_timeout: Duration::from_secs(30),
        pool: Arc::default(),
    }
}

fn copy(rcpts: &[&str], data: &str) -> Copy {
    Copy {
        envelope: Envelope {
            sender: Sender::plain("a@remote.example"),
            recipients: rcpts.iter().map(|r| Recipient::plain(*r)).collect(),
        },
        data: crate::blob::Blob::from(data.as_bytes()),
        credentials: None,
        route: Route::Inbound,
        returned_header: None,
    }
}

async fn run(script: Script, c: &Copy) -> (Vec<Outcome>, Vec<String>, Vec<u8>) {
    run_with(script, c, &cfg()).await
}

async fn run_with(
    script: Script,
    c: &Copy,
    cfg: &LmtpConfig,
) -> (Vec<Outcome>, Vec<String>, Vec<u8>) {
    // A pool of its own, dropped after the copy: the session kept for the next copy
    // then ends, and with it the fake server.
    let cfg = LmtpConfig {
        pool: Arc::default(),
        ..cfg.clone()
    };
    let (client, server) = tokio::io::duplex(1 << 16);
    let served = tokio::spawn(fake(server, script));
    let outcomes = match session_on(Connection::new(Box::new(client)), &cfg, Hello::Lhlo).await {
        Ok(s) => deliver(Kept::new(s), &cfg, c).await,
        Err(reply) => all(c, reply),
    };
    drop(cfg);
    let (commands, data) = served.await.unwrap();
    (outcomes, commands, data)
}

fn codes(o: &[Outcome]) -> Vec<String> {
    o.iter()
        .map(|o| match o {
            Outcome::Delivered(r) => format!("ok {}", r.code),
            Outcome::Failed(r) => format!(
                "failed {} {}",
                r.code,
                r.enhanced.unwrap_or(Enhanced(0, 0, 0))
            ),
        })
        .collect()
}

#[tokio::test]
async fn one_data_and_a_reply_per_recipient() {
    let script = Script {
        after_data: Some("250 2.0.0 saved\r\n452 4.2.2 mailbox full\r\n550 5.1.1 gone\r\n"),
        rcpt: vec![("nobody@", "550 5.1.1 no such user\r\n")],
        ..Script::default()
    };
    let c = copy(
        &["a@x.test", "nobody@x.test", "b@x.test", "c@x.test"],
        "Subject: hi\r\n\r\n.dot\r\nbody\r\n",
    );
    let (outcomes, commands, data) = run(script, &c).await;
    assert_eq!(
        codes(&outcomes),
        [
            "ok 250",
            "failed 550 5.1.1",
            "failed 452 4.2.2",
            "failed 550 5.1.1"
        ]
    );
    assert_eq!(commands[0], "LHLO gw.test");
    assert_eq!(
        commands[1],
        format!("MAIL FROM:<a@remote.example> SIZE={}", c.data.len())
    );
    assert_eq!(commands.iter().filter(|c| *c == "DATA").count(), 1);
    assert!(
        !commands.iter().any(|c| c == "QUIT"),
        "the session is kept for the next copy: {commands:?}"
    );
    assert_eq!(
        data, b"Subject: hi\r\n\r\n..dot\r\nbody\r\n",
        "dot-stuffed on the wire"
    );
}

#[tokio::test]
async fn eight_bit_data_gets_body_8bitmime_or_is_re_encoded() {
    let text = "Subject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nGrüße\r\n";
    let c = copy(&["a@x.test"], text);
    let (outcomes, commands, data) = run(Script::default(), &c).await;
    assert_eq!(codes(&outcomes), ["ok 250"]);
    assert!(commands[1].ends_with(" BODY=8BITMIME"), "{commands:?}");
    assert_eq!(data, text.as_bytes());

    let seven = Script {
        lhlo: "250-lmtp.test\r\n250 PIPELINING\r\n",
        ..Script::default()
    };
    let (outcomes, commands, data) = run(seven.clone(), &c).await;
    assert_eq!(codes(&outcomes), ["ok 250"]);
    assert_eq!(commands[1], "MAIL FROM:<a@remote.example>");
    assert!(data.is_ascii());
    assert!(String::from_utf8_lossy(&data).contains("Gr=C3=BC=C3=9Fe"));

    // Not convertible: refused for good, and nothing is sent.
    let c = copy(&["a@x.test"], "Subject: Grüße\r\n\r\nx\r\n");
    let (outcomes, commands, _) = run(seven, &c).await;
    assert_eq!(codes(&outcomes), ["failed 554 5.6.3"]);
    assert!(
        !commands.iter().any(|c| c.starts_with("MAIL")),
        "{commands:?}"
    );
}

#[tokio::test]
async fn an_smtp_server_is_not_an_lmtp_server() {
    let script = Script {
        lhlo: "500 5.5.1 command unrecognized\r\n",
        ..Script::default()
    };
    let (outcomes, _, _) = run(script, &copy(&["a@x.test", "b@x.test"], "x\r\n")).await;
    assert_eq!(codes(&outcomes), ["failed 451 4.3.5", "failed 451 4.3.5"]);
    let Outcome::Failed(r) = &outcomes[0] else {
        unreachable!()
    };
    assert!(r.text().contains("is not an LMTP server"), "{r}");
    assert!(r.text().contains("500 5.5.1"), "{r}");
}

#[tokio::test]
async fn required_starttls_not_offered_means_no_transaction() {
    crate::tls::install_provider();
    let mut cfg = cfg();
    cfg.address = LmtpAddress::Tcp {
        host: "lmtp.test".into(),
        port: 24,
    };
    cfg.tls = HopTls::StartTls(crate::tls::ClientTls::new(None).unwrap());
    let c = copy(&["a@x.test", "b@x.test"], "secret\r\n");
    let (outcomes, commands, data) = run_with(Script::default(), &c, &cfg).await;
    assert_eq!(codes(&outcomes), ["failed 451 4.7.5", "failed 451 4.7.5"]);
    let Outcome::Failed(r) = &outcomes[0] else {
        unreachable!()
    };
    assert!(r.text().contains("does not offer STARTTLS"), "{r}");
    assert_eq!(commands, ["LHLO gw.test", "QUIT"]);
    assert!(data.is_empty());
}

#[tokio::test]
async fn tls_to_a_unix_socket_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let mut cfg = cfg();
    cfg.address = LmtpAddress::Unix(path);
    cfg.tls = HopTls::Implicit(crate::tls::ClientTls::new(None).unwrap());
    let outcomes = attempt(&cfg, &copy(&["a@x.test"], "x\r\n")).await;
    assert_eq!(codes(&outcomes), ["failed 451 4.3.5"]);
    let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
    assert!(accepted.is_err(), "no connection was made");
}

#[tokio::test]
async fn a_lost_connection_after_some_replies_fails_only_the_rest() {
    let script = Script {
        // One reply, then the server goes away.
        after_data: Some("250 2.0.0 saved\r\n"),
        hang_up: true,
        ..Script::default()
    };
    let (outcomes, _, _) = run(script, &copy(&["a@x.test", "b@x.test"], "x\r\n")).await;
    assert_eq!(codes(&outcomes), ["ok 250", "failed 451 4.4.2"]);
    let Outcome::Failed(r) = &outcomes[1] else {
        unreachable!()
    };
    assert!(r.text().contains("closed the connection"), "{r}");
}

#[tokio::test]
async fn a_silent_server_times_out_after_the_final_dot() {
    let script = Script {
        after_data: None,
        ..Script::default()
    };
    let mut cfg = cfg();
    cfg.data_timeout = Duration::from_millis(300);
    let (outcomes, _, data) = run_with(script, &copy(&["a@x.test"], "x\r\n"), &cfg).await;
    assert_eq!(data, b"x\r\n");
    assert_eq!(codes(&outcomes), ["failed 451 4.4.2"]);
    let Outcome::Failed(r) = &outcomes[0] else {
        unreachable!()
    };
    assert!(r.text().contains("after the final dot"), "{r}");
}

#[tokio::test]
async fn unreachable_servers_are_temporary_failures() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = cfg();
    cfg.address = LmtpAddress::Unix(dir.path().join("absent.sock"));
    let outcomes = attempt(&cfg, &copy(&["a@x.test"], "x\r\n")).await;
    assert_eq!(codes(&outcomes), ["failed 451 4.4.1"]);
    assert!(!offers_smtputf8(&cfg).await);
}

#[tokio::test]
async fn a_spilled_message_goes_byte_for_byte_with_dots_at_every_chunk_edge() {
    use crate::relay::testutil::{dotted_message, spilled, unstuff};
    let dir = tempfile::tempdir().unwrap();
    let message = dotted_message(5);
    let header = b"Received: by gw.test\r\n".to_vec();
    let mut c = copy(&["a@x.test"], "");
    // The header is a piece in memory, the message a file that starts with a `.` line.
    c.data = spilled(&message, dir.path()).prepend(header.clone());
    assert!(c.data.is_spilled());
    let (outcomes, commands, data) = run(Script::default(), &c).await;
    assert_eq!(codes(&outcomes), ["ok 250"]);
    assert_eq!(
        commands[1],
        format!("MAIL FROM:<a@remote.example> SIZE={}", c.data.len())
    );
    let mut expected = header;
    expected.extend_from_slice(&message);
    let dot_lines = expected
        .split_inclusive(|&b| b == b'\n')
        .filter(|l| l.starts_with(b"."))
        .count();
    assert!(dot_lines >= 7, "{dot_lines}");
    assert_eq!(
        data.len(),
        expected.len() + dot_lines,
        "each `.` line stuffed once"
    );
    assert!(unstuff(&data) == expected, "byte for byte");
}

/// A sealed file of `len` bytes whose chunk `bad` fails authentication.
fn broken_blob(len: usize, bad: u64) -> (crate::blob::Blob, tempfile::NamedTempFile) {
    use crate::blob::sealed::{MasterKey, SealedFile, SealedWriter, CHUNK};
    let named = tempfile::NamedTempFile::new().unwrap();
    let key = MasterKey::random();
    let mut w = SealedWriter::new(named.reopen().unwrap(), &key).unwrap();
    let line = b"line of text\r\n";
    let mut data = Vec::new();
    while data.len() < len {
        data.extend_from_slice(line);
    }
    w.write(&data).unwrap();
    w.finish_durable().unwrap();
    let mut raw = std::fs::read(named.path()).unwrap();
    // After the salt (32 bytes), chunk `bad` starts; flip a byte well inside it.
    let at = 32 + bad as usize * (CHUNK + 16) + 100;
    raw[at] ^= 1;
    std::fs::write(named.path(), &raw).unwrap();
    let f = SealedFile::open(named.reopen().unwrap(), &key).unwrap();
    (crate::blob::Blob::from(f), named)
}

#[tokio::test]
async fn a_spilled_message_that_cannot_be_read_is_never_ended_with_a_dot() {
    // Caught by the scan before MAIL: nothing is sent.
    let (blob, _file) = broken_blob(300_000, 2);
    let mut c = copy(&["a@x.test"], "");
    c.data = blob.clone();
    let (outcomes, commands, _) = run(Script::default(), &c).await;
    assert_eq!(codes(&outcomes), ["failed 451 4.3.0"]);
    assert!(
        !commands.iter().any(|c| c.starts_with("MAIL")),
        "{commands:?}"
    );

    // Failing in the middle of the data: what went out has no final dot.
    let (client, server) = tokio::io::duplex(1 << 16);
    let reader = tokio::spawn(async move {
        let mut got = Vec::new();
        let mut server = server;
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut server, &mut got).await;
        got
    });
    let mut conn = Connection::new(Box::new(client));
    let r = send_data(&mut conn, &cfg(), &blob).await.unwrap_err();
    assert_eq!((r.code, r.enhanced), (451, Some(Enhanced(4, 3, 0))));
    drop(conn);
    let got = reader.await.unwrap();
    assert!(got.len() >= 2 * crate::blob::sealed::CHUNK, "{}", got.len());
    assert!(!got.ends_with(b"\r\n.\r\n"));
    assert!(!got.windows(5).any(|w| w == b"\r\n.\r\n"));
}

/// The fake server on a Unix socket in `dir`, serving every connection with `script`:
/// the configuration to reach it, and what each ended session received.
type Ended = Arc<Mutex<Vec<Vec<String>>>>;

fn serving(dir: &std::path::Path, script: Script) -> (LmtpConfig, Ended) {
    let path = dir.join("lmtp.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let ended: Ended = Arc::default();
    let e = ended.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (e, script) = (e.clone(), script.clone());
            tokio::spawn(async move {
                let (commands, _) = fake(stream, script).await;
                e.lock().unwrap().push(commands);
            });
        }
    });
    let mut cfg = cfg();
    cfg.address = LmtpAddress::Unix(path);
    (cfg, ended)
}

/// Waits until `n` sessions have ended; their commands.
async fn sessions(ended: &Ended, n: usize) -> Vec<Vec<String>> {
    for _ in 0..200 {
        if ended.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ended.lock().unwrap().clone()
}

#[tokio::test]
async fn copies_share_one_session_with_rset_after_a_transaction_left_open() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        rcpt: vec![("nobody@", "550 5.1.1 no such user\r\n")],
        after_data: Some("250 2.0.0 ok\r\n"),
        ..Script::default()
    };
    let (cfg, ended) = serving(dir.path(), script);
    let nobody = attempt(&cfg, &copy(&["nobody@x.test"], "x\r\n")).await;
    assert_eq!(codes(&nobody), ["failed 550 5.1.1"]);
    for _ in 0..2 {
        let o = attempt(&cfg, &copy(&["a@x.test"], "x\r\n")).await;
        assert_eq!(codes(&o), ["ok 250"]);
    }
    // A probe goes over the same session, and leaves it clean.
    let probed = probe(&cfg, Hello::Lhlo, "a@x.test").await.unwrap();
    assert_eq!(probed.code, 250);
    assert_eq!(cfg.pool.idle.idle_transactions(), [4]);
    drop(cfg);
    let ended = sessions(&ended, 1).await;
    assert_eq!(ended.len(), 1, "one connection for every copy");
    assert_eq!(
        ended[0],
        [
            "LHLO gw.test",
            "MAIL FROM:<a@remote.example> SIZE=3",
            "RCPT TO:<nobody@x.test>",
            "RSET",
            "MAIL FROM:<a@remote.example> SIZE=3",
            "RCPT TO:<a@x.test>",
            "DATA",
            "MAIL FROM:<a@remote.example> SIZE=3",
            "RCPT TO:<a@x.test>",
            "DATA",
            "MAIL FROM:<>",
            "RCPT TO:<a@x.test>",
            "RSET",
        ]
    );
}

#[tokio::test]
async fn a_session_the_server_closed_while_idle_is_replaced_and_nothing_is_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    // The server ends every session after its replies to the final dot, as a restarted
    // server would have.
    let script = Script {
        after_data: Some("250 2.0.0 ok\r\n"),
        hang_up: true,
        ..Script::default()
    };
    let (cfg, ended) = serving(dir.path(), script);
    for _ in 0..2 {
        let o = attempt(&cfg, &copy(&["a@x.test"], "x\r\n")).await;
        assert_eq!(codes(&o), ["ok 250"]);
    }
    // One reply of two, then the server goes: the message may have been delivered to
    // the first, so nothing is tried again; only the second is failed (and spooled).
    let o = attempt(&cfg, &copy(&["a@x.test", "b@x.test"], "x\r\n")).await;
    assert_eq!(codes(&o), ["ok 250", "failed 451 4.4.2"]);
    let ended = sessions(&ended, 3).await;
    assert_eq!(ended.len(), 3, "{ended:?}");
    let data: usize = ended
        .iter()
        .map(|c| c.iter().filter(|c| *c == "DATA").count())
        .sum();
    assert_eq!(data, 3, "each copy's data went once: {ended:?}");
    assert!(cfg.pool.idle.idle_transactions().is_empty());
}

#[tokio::test]
async fn the_servers_size_is_learned_from_lhlo() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script {
        lhlo: "250-lmtp.test\r\n250-SIZE 5000\r\n250 8BITMIME\r\n",
        ..Script::default()
    };
    let (cfg, _) = serving(dir.path(), script);
    assert_eq!(cfg.pool.size().get(), None, "not asked yet");
    assert!(!offers_smtputf8(&cfg).await);
    assert_eq!(cfg.pool.size().get(), Some(5000));
    assert_eq!(
        cfg.pool.idle.idle_transactions(),
        [0],
        "kept for the first copy"
    );
}
