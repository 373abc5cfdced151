//! Shared by the relay's tests: large messages with a `.` line at every chunk edge, and a
//! small SMTP server on a real socket that records what it is sent.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::blob::{sealed::CHUNK, Blob, Spill, Writer};

/// A message of `chunks` sealed chunks and a bit, where every chunk edge cuts a line in
/// a way that matters to dot-stuffing: a line starting with `.` right at the edge, a CRLF
/// split by the edge followed by a `.` line, and a `.` line split after its dot. It starts
/// with a `.` line too, for the edge between a prepended header and the file.
pub fn dotted_message(chunks: usize) -> Vec<u8> {
    let mut m = b".first line starts with a dot\r\nSubject: big\r\n\r\n".to_vec();
    for k in 1..=chunks {
        let edge = k * CHUNK;
        // Where the line that matters starts, relative to the edge.
        let (start, line): (usize, &[u8]) = match k % 3 {
            0 => (edge, b".dot right at the edge\r\n"),
            // "\r" is the last byte before the edge, "\n" the first after it.
            1 => (edge + 1, b".\r\n"),
            _ => (edge - 1, b".split after its dot\r\n"),
        };
        while start - m.len() > 200 {
            m.extend_from_slice(&[b'a'; 98]);
            m.extend_from_slice(b"\r\n");
        }
        let room = start - m.len();
        m.extend(std::iter::repeat_n(b'b', room - 2));
        m.extend_from_slice(b"\r\n");
        assert_eq!(m.len(), start);
        m.extend_from_slice(line);
        if k % 3 == 1 {
            assert_eq!(&m[edge - 1..edge + 1], b"\r\n");
        }
    }
    m.extend_from_slice(b"last line\r\n.\r\n");
    m
}

/// `data` in a sealed temporary file in `dir`.
pub fn spilled(data: &[u8], dir: &std::path::Path) -> Blob {
    let mut w = Writer::new(Some(Spill::new(dir, 1000)));
    for piece in data.chunks(10_000) {
        w.write(piece).unwrap();
    }
    let b = w.finish().unwrap();
    assert!(b.is_spilled());
    b
}

/// What a server stores from DATA lines: the leading dot of each line taken off.
pub fn unstuff(lines: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.len());
    for line in lines.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// An SMTP server on 127.0.0.1 that accepts everything and records each message as
/// received on the wire (still dot-stuffed).
pub struct Sink {
    pub port: u16,
    pub messages: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Sessions that have ended (the client closed or quit).
    pub ended: Arc<std::sync::atomic::AtomicUsize>,
}

impl Sink {
    pub async fn start() -> Sink {
        Sink::refusing(None).await
    }

    /// A sink that answers RCPT for `later` with 451.
    pub async fn refusing(later: Option<&'static str>) -> Sink {
        Sink::scripted(later, None).await
    }

    /// A sink that answers RCPT for `later` with 451 and for `gone` with 550 (each matched
    /// as a part of the RCPT line).
    pub async fn scripted(later: Option<&'static str>, gone: Option<&'static str>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (store, count) = (Arc::clone(&messages), Arc::clone(&ended));
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let (store, count) = (Arc::clone(&store), Arc::clone(&count));
                tokio::spawn(async move {
                    session(sock, store, later, gone).await;
                    count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        Sink {
            port,
            messages,
            ended,
        }
    }

    /// Waits (up to five seconds) until `n` sessions have ended.
    pub async fn wait_ended(&self, n: usize) {
        for _ in 0..500 {
            if self.ended.load(std::sync::atomic::Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("sessions did not end");
    }
}

async fn session(
    sock: tokio::net::TcpStream,
    store: Arc<Mutex<Vec<Vec<u8>>>>,
    later: Option<&'static str>,
    gone: Option<&'static str>,
) {
    let (read, mut write) = sock.into_split();
    let mut read = BufReader::new(read);
    let _ = write.write_all(b"220 sink.test ESMTP\r\n").await;
    loop {
        let mut line = String::new();
        if read.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.test\r\n250-8BITMIME\r\n250-SIZE\r\n250 PIPELINING\r\n",
            "DATA" => {
                let _ = write.write_all(b"354 go ahead\r\n").await;
                let mut data = Vec::new();
                loop {
                    let mut l = Vec::new();
                    if read.read_until(b'\n', &mut l).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    data.extend_from_slice(&l);
                }
                store.lock().unwrap().push(data);
                b"250 2.0.0 queued\r\n"
            }
            "RCPT" if later.is_some_and(|l| line.contains(l)) => b"451 4.2.0 try later\r\n",
            "RCPT" if gone.is_some_and(|g| line.contains(g)) => b"550 5.1.1 no such user\r\n",
            "QUIT" => {
                let _ = write.write_all(b"221 2.0.0 bye\r\n").await;
                return;
            }
            _ => b"250 2.0.0 ok\r\n",
        };
        let _ = write.write_all(reply).await;
    }
}

/// The upstream client's configuration for a server on 127.0.0.1:`port`, without TLS.
pub fn upstream_config(port: u16) -> crate::relay::UpstreamConfig {
    crate::relay::UpstreamConfig {
        host: "127.0.0.1".into(),
        port,
        tls: crate::relay::HopTls::None,
        credentials: None,
        helo: "gw.test".into(),
        timeout: std::time::Duration::from_secs(5),
        data_timeout: std::time::Duration::from_secs(30),
        pool: Arc::new(crate::relay::upstream::Pool::default()),
    }
}

/// A relay with its spool in `dir` that sends both ways upstream to 127.0.0.1:`port`.
pub fn smtp_relay(dir: &std::path::Path, port: u16) -> crate::relay::Relay {
    let up = crate::relay::Transport::Smtp(upstream_config(port));
    crate::relay::Relay::open(
        crate::relay::Spool::open(dir, None).unwrap(),
        up.clone(),
        up,
        crate::relay::RelayConfig::new("gw.test"),
    )
    .unwrap()
}

/// A spool entry for one recipient, due now, its message still to be given.
pub fn entry(id: &str) -> crate::relay::Entry {
    use crate::smtp::envelope::{Envelope, Recipient, Sender};
    crate::relay::Entry {
        id: id.into(),
        queue_id: id.split('.').next().unwrap_or(id).into(),
        envelope: Envelope {
            sender: Sender::plain("a@example.org"),
            recipients: vec![Recipient::plain("b@example.net")],
        },
        data: String::new(),
        file: None,
        credentials: None,
        route: crate::relay::Route::Outbound,
        returned_header: None,
        created: crate::relay::unix(std::time::SystemTime::now()),
        attempts: 1,
        next_attempt: 0,
        last_error: None,
    }
}
