//! Session scripts, fed whole and split at every byte.

use std::net::SocketAddr;
use std::sync::Arc;

use super::*;
use crate::smtp::command::auth;
use crate::smtp::config::{AuthMode, SessionConfig};

/// Runs `input` through a session with a scripted backend; returns every reply's wire
/// form, and the transactions delivered. `cut` splits the input into two reads.
fn run(cfg: SessionConfig, input: &[u8], cut: Option<usize>) -> (String, Vec<Transaction>) {
    let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
    let mut s = Session::new(Arc::new(cfg), peer, false);
    let mut out = String::new();
    let mut delivered = Vec::new();
    let chunks: Vec<&[u8]> = match cut {
        Some(c) => vec![&input[..c], &input[c..]],
        None => vec![input],
    };
    let mut buf = Vec::new();
    'outer: for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(step) = s.ingest(&mut buf) {
            let reply = match step {
                Step::Reply(r) | Step::StartTls(r) => r,
                Step::Close(r) => {
                    out.push_str(&String::from_utf8_lossy(&r.to_wire()));
                    break 'outer;
                }
                Step::CheckRecipient(r) => {
                    let res = if r.address.starts_with("refuse") {
                        Err(Reply::new(550, Enhanced(5, 7, 1), "refused by policy"))
                    } else {
                        Ok(())
                    };
                    s.recipient_checked(r, res)
                }
                Step::Deliver(tx) => {
                    delivered.push(*tx);
                    s.delivered(Reply::new(250, Enhanced(2, 0, 0), "queued"))
                }
                Step::Authenticate(c) => {
                    let ok = if c.secret.as_deref() == Some("secret") {
                        Ok(())
                    } else {
                        Err(auth::failed())
                    };
                    match s.authenticated(c, ok) {
                        Step::Reply(r) => r,
                        Step::Close(r) => {
                            out.push_str(&String::from_utf8_lossy(&r.to_wire()));
                            break 'outer;
                        }
                        other => panic!("{other:?}"),
                    }
                }
            };
            out.push_str(&String::from_utf8_lossy(&reply.to_wire()));
        }
    }
    (out, delivered)
}

fn codes(out: &str) -> Vec<&str> {
    out.lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect()
}

/// The script gives the same replies whole and split at every byte.
fn assert_script(cfg: SessionConfig, input: &[u8], want: &[&str]) -> Vec<Transaction> {
    let (whole, txs) = run(cfg.clone(), input, None);
    assert_eq!(codes(&whole), want, "whole: {whole}");
    for cut in 1..input.len() {
        let (split, _) = run(cfg.clone(), input, Some(cut));
        assert_eq!(split, whole, "split at {cut}");
    }
    txs
}

fn cfg() -> SessionConfig {
    SessionConfig::new("gw.test")
}

#[test]
fn plain_transaction_pipelined() {
    let input = b"EHLO client.test\r\nMAIL FROM:<a@x.test> BODY=8BITMIME\r\nRCPT TO:<b@y.test>\r\nRCPT TO:<refuse@y.test>\r\nDATA\r\nSubject: hi\r\n\r\n..dot\r\nbody\r\n.\r\nQUIT\r\n";
    let txs = assert_script(
        cfg(),
        input,
        &["250", "250", "250", "550", "354", "250", "221"],
    );
    assert_eq!(txs.len(), 1);
    let tx = &txs[0];
    assert_eq!(tx.envelope.sender.address, "a@x.test");
    assert!(tx.envelope.sender.eight_bit);
    assert_eq!(tx.envelope.recipients.len(), 1);
    let msg = String::from_utf8_lossy(&tx.message.to_vec().unwrap()).into_owned();
    assert!(
        msg.starts_with(
            "Received: from client.test ([127.0.0.1])\r\n\tby gw.test (sealpost) with ESMTP id "
        ),
        "{msg}"
    );
    assert!(
        msg.ends_with("Subject: hi\r\n\r\n.dot\r\nbody\r\n"),
        "{msg}"
    );
}

#[test]
fn sequence_errors() {
    let input = b"MAIL FROM:<a@x.test>\r\nEHLO c.test\r\nDATA\r\nRCPT TO:<b@y.test>\r\nMAIL FROM:<a@x.test>\r\nMAIL FROM:<a@x.test>\r\nDATA\r\n";
    assert_script(
        cfg(),
        input,
        &["503", "250", "503", "503", "250", "503", "503"],
    );
}

#[test]
fn unknown_garbage_and_long_lines_keep_the_session() {
    let mut input = b"EHLO c.test\r\nXYZZY\r\n\x01\x02\xff\r\n".to_vec();
    input.extend(vec![b'A'; 2000]);
    input.extend_from_slice(b"\r\nNOOP\r\nVRFY bob\r\nHELP\r\nRSET\r\n");
    assert_script(
        cfg(),
        &input,
        &["250", "500", "500", "500", "250", "252", "214", "250"],
    );
}

#[test]
fn bare_lf_in_command_and_data_is_refused() {
    assert_script(
        cfg(),
        b"EHLO c.test\nNOOP\r\nNOOP\rX\r\n",
        &["500", "250", "500"],
    );
    let input = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nbody\n.\nsmuggled\r\n.\r\nNOOP\r\n";
    let txs = assert_script(cfg(), input, &["250", "250", "250", "354", "554", "250"]);
    assert!(txs.is_empty(), "nothing smuggled is delivered");
}

/// SMTP smuggling: after `\n.\r\n` the data goes on, so the MAIL, RCPT and DATA behind
/// it are message content and get no reply, however the input is split.
#[test]
fn a_fake_end_of_data_never_starts_a_second_transaction() {
    let input = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nbody\n.\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<v@y.test>\r\nDATA\r\nevil\r\n.\r\nNOOP\r\n";
    let txs = assert_script(cfg(), input, &["250", "250", "250", "354", "554", "250"]);
    assert!(txs.is_empty(), "nothing smuggled is delivered");

    // Without a bare line end (a NUL before the dot) it is one ordinary message.
    let input = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\nbody\r\n\x00.\r\nMAIL FROM:<evil@x.test>\r\n.\r\nNOOP\r\n";
    let txs = assert_script(cfg(), input, &["250", "250", "250", "354", "250", "250"]);
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0].envelope.sender.address, "a@x.test");
    let msg = txs[0].message.to_vec().unwrap();
    assert!(msg.ends_with(b"body\r\n\x00.\r\nMAIL FROM:<evil@x.test>\r\n"));
}

#[test]
fn empty_and_lone_line_ends_do_not_panic() {
    assert_script(
        cfg(),
        b"\n\r\n\r\r\nNOOP\r\n",
        &["500", "500", "500", "250"],
    );
}

#[test]
fn size_limits() {
    let mut c = cfg();
    c.max_message_size = 100;
    let input = b"EHLO c.test\r\nMAIL FROM:<a@x.test> SIZE=1000\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nDATA\r\n";
    let mut input = input.to_vec();
    for _ in 0..10 {
        input.extend_from_slice(b"0123456789012345678901234567890\r\n");
    }
    input.extend_from_slice(b".\r\nNOOP\r\n");
    let (out, txs) = run(c, &input, None);
    assert_eq!(
        codes(&out),
        ["250", "552", "250", "250", "354", "552", "250"],
        "{out}"
    );
    assert!(txs.is_empty());
}

#[test]
fn too_many_recipients() {
    let mut c = cfg();
    c.max_recipients = 3;
    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n".to_vec();
    for i in 0..5 {
        input.extend_from_slice(format!("RCPT TO:<r{i}@y.test>\r\n").as_bytes());
    }
    let (out, _) = run(c, &input, None);
    assert_eq!(
        codes(&out),
        ["250", "250", "250", "250", "250", "452", "452"]
    );
}

#[test]
fn a_repeated_recipient_is_kept_once() {
    let mut c = cfg();
    c.max_recipients = 3;
    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n".to_vec();
    for rcpt in [
        "b@y.test",
        "b@Y.TEST",
        "b@y.test",
        "B@y.test",
        "refuse@y.test",
        "refuse@y.test",
        "b@y.test",
        "c@y.test",
        "d@y.test",
    ] {
        input.extend_from_slice(format!("RCPT TO:<{rcpt}>\r\n").as_bytes());
    }
    input.extend_from_slice(b"DATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n");
    let (out, txs) = run(c, &input, None);
    // Duplicates are answered 250 and count neither as recipients nor against the limit;
    // a different local part is a different mailbox; a refused one may be retried.
    assert_eq!(
        codes(&out),
        [
            "250", "250", "250", "250", "250", "250", "550", "550", "250", "250", "452", "354",
            "250"
        ],
        "{out}"
    );
    assert_eq!(out.matches("duplicate").count(), 3, "{out}");
    let rcpts: Vec<&str> = txs[0]
        .envelope
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(rcpts, ["b@y.test", "B@y.test", "c@y.test"]);
    assert!(same_mailbox("\"a@b\"@x.test", "\"a@b\"@X.test"));
    assert!(!same_mailbox("a@x.test", "a@x.test.example"));
}

#[test]
fn ten_thousand_recipients_do_not_break_anything() {
    let mut input = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n".to_vec();
    for i in 0..10_000 {
        input.extend_from_slice(format!("RCPT TO:<r{i}@y.test>\r\n").as_bytes());
    }
    input.extend_from_slice(b"NOOP\r\n");
    let (out, _) = run(cfg(), &input, None);
    let c = codes(&out);
    assert_eq!(c.iter().filter(|&&x| x == "452").count(), 9_900);
    assert_eq!(c.last(), Some(&"250"));
}

#[test]
fn open_relay_refused_without_auth() {
    let mut c = cfg();
    c.require_auth = true;
    c.loopback = false;
    let input = b"EHLO c.test\r\nMAIL FROM:<a@x.test>\r\n";
    assert_script(c.clone(), input, &["250", "530"]);
    c.allow = vec!["127.0.0.0/8".parse().unwrap()];
    assert_script(c, input, &["250", "250"]);
}

#[test]
fn starttls_discards_pipelined_plaintext() {
    let mut c = cfg();
    c.tls = Some(test_acceptor());
    let input = b"EHLO c.test\r\nSTARTTLS\r\nMAIL FROM:<evil@x.test>\r\n";
    let (out, _) = run(c, input, None);
    assert_eq!(
        codes(&out),
        ["250", "220"],
        "the injected MAIL is never answered: {out}"
    );
    assert!(out.contains("STARTTLS"));
}

#[test]
fn after_starttls_the_session_starts_over() {
    let mut c = cfg();
    c.tls = Some(test_acceptor());
    c.auth = AuthMode::Passthrough;
    c.loopback = false;
    let mut s = Session::new(Arc::new(c), "192.0.2.1:4000".parse().unwrap(), false);
    let mut input = b"EHLO c.test\r\nSTARTTLS\r\n".to_vec();
    assert!(matches!(s.ingest(&mut input), Some(Step::Reply(r)) if r.text().contains("STARTTLS")));
    assert!(matches!(s.ingest(&mut input), Some(Step::StartTls(r)) if r.code == 220));
    s.tls_started();
    let mut input = b"MAIL FROM:<a@x.test>\r\nEHLO c.test\r\nSTARTTLS\r\n".to_vec();
    assert!(matches!(s.ingest(&mut input), Some(Step::Reply(r)) if r.code == 503));
    let Some(Step::Reply(ehlo)) = s.ingest(&mut input) else {
        panic!("no EHLO reply");
    };
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(matches!(s.ingest(&mut input), Some(Step::Reply(r)) if r.code == 503));
}

#[test]
fn auth_plain_and_login() {
    let mut c = cfg();
    c.auth = AuthMode::Passthrough;
    let input = b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\nAUTH PLAIN\r\n";
    let (out, _) = run(c.clone(), input, None);
    assert_eq!(codes(&out), ["250", "535", "235", "503"], "{out}");
    assert!(out.contains("AUTH PLAIN LOGIN"));

    let input = b"EHLO c.test\r\nAUTH LOGIN\r\nYWxpY2U=\r\nc2VjcmV0\r\nMAIL FROM:<a@x.test>\r\n";
    let (out, _) = assert_pair(c.clone(), input);
    assert_eq!(codes(&out), ["250", "334", "334", "235", "250"], "{out}");

    let input = b"EHLO c.test\r\nAUTH PLAIN\r\n*\r\nAUTH PLAIN !!!\r\nAUTH CRAM-MD5\r\n";
    let (out, _) = run(c.clone(), input, None);
    assert_eq!(codes(&out), ["250", "334", "501", "501", "504"], "{out}");

    // Not before TLS, except on loopback.
    c.loopback = false;
    let (out, _) = run(
        c,
        b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n",
        None,
    );
    assert_eq!(codes(&out), ["250", "538"], "{out}");
    assert!(!out.contains("AUTH PLAIN LOGIN"));
}

fn assert_pair(c: SessionConfig, input: &[u8]) -> (String, Vec<Transaction>) {
    let whole = run(c.clone(), input, None);
    for cut in 1..input.len() {
        assert_eq!(
            run(c.clone(), input, Some(cut)).0,
            whole.0,
            "split at {cut}"
        );
    }
    whole
}

#[test]
fn repeated_auth_failures_close() {
    let mut c = cfg();
    c.auth = AuthMode::Passthrough;
    let input = b"EHLO c.test\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nAUTH PLAIN AGFsaWNlAHdyb25n\r\nNOOP\r\n";
    let (out, _) = run(c, input, None);
    assert_eq!(codes(&out), ["250", "535", "535", "421"], "{out}");
}

#[test]
fn utf8_envelope_needs_smtputf8() {
    let input =
        "EHLO c.test\r\nMAIL FROM:<jörg@x.test>\r\nMAIL FROM:<a@x.test> SMTPUTF8\r\n".as_bytes();
    let (out, _) = run(cfg(), input, None);
    assert_eq!(codes(&out), ["250", "553", "555"], "{out}");
}

fn test_acceptor() -> tokio_rustls::TlsAcceptor {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key =
        rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der()).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}
