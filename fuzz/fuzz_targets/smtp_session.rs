//! The sans-I/O SMTP session: bytes in, steps and replies out.
//!
//! The first two input bytes choose how the stream is cut into reads and how the scripted
//! backend answers (recipients, AUTH, TLS, spilling); the rest is what the client sends.
//!
//! Checked on every input:
//! - every reply renders as CRLF-terminated lines, each with a 3-digit code (2xx to 5xx)
//!   and `-` on all lines but the last, which has a space;
//! - a DATA phase ends only at `<CR><LF>.<CR><LF>` (SMTP smuggling): whenever the session
//!   leaves DATA, the bytes consumed so far end with it, and a `Deliver` comes only then;
//! - a delivered message has CRLF line ends only, stays within the size limit, and has
//!   between one and `max_recipients` recipients, each one the backend accepted;
//! - STARTTLS leaves nothing of the pipelined input behind (CVE-2011-0411);
//! - every step consumes input: the session cannot loop without reading.
#![no_main]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use sealpost::blob::Spill;
use sealpost::smtp::command::auth;
use sealpost::smtp::config::{AuthMode, SessionConfig};
use sealpost::smtp::reply::{Enhanced, Reply};
use sealpost::smtp::session::{Session, Step};

const MAX_MESSAGE: usize = 4096;
const MAX_HEADER: usize = 1024;
const MAX_RECIPIENTS: usize = 5;

/// One session configuration per combination of TLS and spilling.
struct Configs {
    plain: Arc<SessionConfig>,
    tls: Arc<SessionConfig>,
    spilling: Arc<SessionConfig>,
    /// Keeps the spill directory alive for the whole run.
    _dir: tempfile::TempDir,
}

fn configs() -> &'static Configs {
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    CONFIGS.get_or_init(|| {
        let mut base = SessionConfig::new("gw.fuzz.test");
        base.max_message_size = MAX_MESSAGE;
        base.max_header_size = MAX_HEADER;
        base.max_recipients = MAX_RECIPIENTS;
        base.max_errors = 20;
        base.max_auth_failures = 3;
        // The hash is never checked: the fuzzer answers Authenticate itself.
        base.auth = AuthMode::Local(Arc::new(vec![(
            "alice".to_string(),
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".to_string(),
        )]));
        let mut tls = base.clone();
        tls.tls = Some(acceptor());
        let dir = tempfile::tempdir().expect("spill directory");
        let mut spilling = base.clone();
        spilling.spill = Some(Spill::new(dir.path(), 512));
        Configs {
            plain: Arc::new(base),
            tls: Arc::new(tls),
            spilling: Arc::new(spilling),
            _dir: dir,
        }
    })
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .expect("self-signed certificate");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = rustls::pki_types::PrivateKeyDer::try_from(certified.signing_key.serialize_der())
        .expect("key");
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![certified.cert.der().clone()], key)
        .expect("TLS configuration");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// Checks the wire form of one reply.
fn check_reply(reply: &Reply) {
    let wire = reply.to_wire();
    assert!(!wire.is_empty(), "an empty reply: {reply:?}");
    assert!(wire.ends_with(b"\r\n"), "a reply without CRLF: {reply:?}");
    let body = &wire[..wire.len() - 2];
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let line = if last {
            *line
        } else {
            line.strip_suffix(b"\r")
                .unwrap_or_else(|| panic!("a bare LF in {wire:?}"))
        };
        assert!(!line.contains(&b'\r'), "a bare CR in {wire:?}");
        assert!(line.len() >= 4, "a short reply line in {wire:?}");
        let code = &line[..3];
        assert!(
            code.iter().all(u8::is_ascii_digit) && (b'2'..=b'5').contains(&code[0]),
            "not a reply code: {wire:?}"
        );
        assert_eq!(
            code,
            reply.code.to_string().as_bytes(),
            "the code changes between lines: {wire:?}"
        );
        let sep = if last { b' ' } else { b'-' };
        assert_eq!(line[3], sep, "bad continuation mark in {wire:?}");
    }
}

/// Checks a delivered message: CRLF line ends only, within the limits.
fn check_delivered(message: &[u8], rcpts: usize, accepted: &[String], addresses: &[String]) {
    assert!(
        (1..=MAX_RECIPIENTS).contains(&rcpts),
        "{rcpts} recipients delivered"
    );
    for a in addresses {
        assert!(
            accepted.contains(a),
            "a recipient the backend never accepted: {a}"
        );
    }
    // The Received: header (at most a few hundred bytes) is added in front.
    assert!(
        message.len() <= MAX_MESSAGE + 1024,
        "a message of {} bytes passed a {MAX_MESSAGE}-byte limit",
        message.len()
    );
    for (i, &b) in message.iter().enumerate() {
        match b {
            b'\n' => assert!(
                i > 0 && message[i - 1] == b'\r',
                "a bare LF at {i} in a delivered message"
            ),
            b'\r' => assert!(
                message.get(i + 1) == Some(&b'\n'),
                "a bare CR at {i} in a delivered message"
            ),
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [cut, flags, stream @ ..] = data else {
        return;
    };
    let cfgs = configs();
    let cfg = match flags & 3 {
        1 => &cfgs.tls,
        2 => &cfgs.spilling,
        _ => &cfgs.plain,
    };
    let auth_ok = flags & 4 != 0;
    let refuse_every_other = flags & 8 != 0;
    let chunk = usize::from(*cut).max(1);

    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let mut s = Session::new(Arc::clone(cfg), peer, false);
    check_reply(&s.greeting());
    let mut buf: Vec<u8> = Vec::new();
    let mut fed = 0usize;
    let mut steps = 0usize;
    let mut rcpt_answers = 0usize;
    let mut accepted: Vec<String> = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        fed += piece.len();
        loop {
            let was_in_data = s.in_data();
            let before = buf.len();
            let Some(step) = s.ingest(&mut buf) else {
                break;
            };
            steps += 1;
            assert!(
                buf.len() < before || matches!(step, Step::StartTls(_)),
                "a step that consumed nothing: {step:?}"
            );
            assert!(steps <= stream.len(), "more steps than input bytes");
            let consumed = &stream[..fed - buf.len()];
            if was_in_data && !s.in_data() {
                assert!(
                    consumed.ends_with(b"\r\n.\r\n"),
                    "DATA ended without CRLF.CRLF: {:?}",
                    String::from_utf8_lossy(&consumed[consumed.len().saturating_sub(40)..])
                );
            }
            let reply = match step {
                Step::Reply(r) => r,
                Step::Close(r) => {
                    check_reply(&r);
                    return;
                }
                Step::StartTls(r) => {
                    assert!(buf.is_empty(), "input kept across STARTTLS");
                    check_reply(&r);
                    s.tls_started();
                    continue;
                }
                Step::CheckRecipient(r) => {
                    rcpt_answers += 1;
                    let refuse = refuse_every_other && rcpt_answers % 2 == 0;
                    let result = if refuse {
                        Err(Reply::new(550, Enhanced(5, 7, 1), "refused by policy"))
                    } else {
                        accepted.push(r.address.as_str().to_string());
                        Ok(())
                    };
                    s.recipient_checked(r, result)
                }
                Step::Deliver(tx) => {
                    assert!(
                        was_in_data && consumed.ends_with(b"\r\n.\r\n"),
                        "a transaction delivered without CRLF.CRLF"
                    );
                    let message = tx.message.to_vec().expect("message bytes");
                    let addresses: Vec<String> = tx
                        .envelope
                        .recipients
                        .iter()
                        .map(|r| r.address.as_str().to_string())
                        .collect();
                    check_delivered(&message, addresses.len(), &accepted, &addresses);
                    s.delivered(Reply::new(250, Enhanced(2, 0, 0), "queued"))
                }
                Step::Authenticate(c) => {
                    let result = if auth_ok { Ok(()) } else { Err(auth::failed()) };
                    match s.authenticated(c, result) {
                        Step::Reply(r) => r,
                        Step::Close(r) => {
                            check_reply(&r);
                            return;
                        }
                        other => panic!("authenticated gave {other:?}"),
                    }
                }
            };
            check_reply(&reply);
        }
    }
});
