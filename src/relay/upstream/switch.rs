//! The upstream socket with a switch that stops its writes: lettre ends every message it
//! is given with the final dot, so a message that cannot be read whole must cut the
//! socket before lettre gets that far. The same switch holds back a message's data until
//! its final dot, so that both go in one write. And the stream after STARTTLS, with the
//! greeting lettre expects.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use zeroize::{Zeroize, Zeroizing};

use crate::relay::hop::Stream;
use crate::smtp::reply::Reply;

/// Cuts the writes of one [`Guarded`] socket, for good; or holds back its writes until a
/// message's final dot.
#[derive(Debug, Clone)]
pub struct Switch {
    cut: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
}

impl Switch {
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
    }

    /// Keeps what is written from now on, up to [`HOLD`] bytes, until the final dot
    /// (`CRLF.CRLF`) is flushed, then writes it all at once: lettre writes and flushes a
    /// message and its final dot separately, which costs a system call, a packet and a
    /// wake-up of the server each, per message. Dot-stuffed data never holds `CRLF.CRLF`
    /// before its end, so the first flush that ends with it ends the holding.
    pub fn hold(&self) {
        self.hold.store(true, Ordering::SeqCst);
    }
}

/// The most a [`Guarded`] socket holds back; more is written as it comes.
pub const HOLD: usize = crate::blob::sealed::CHUNK;

/// A stream to `peer` (TCP, or TLS over it) whose writes fail once its [`Switch`] is
/// cut; reads go on. Below TLS a cut would only break the record layer: it is put above,
/// where the message's bytes are written.
#[derive(Debug)]
pub struct Guarded {
    inner: Box<dyn Stream>,
    peer: SocketAddr,
    cut: Arc<AtomicBool>,
    hold: Arc<AtomicBool>,
    /// What is held back: message data, zeroed once written (and when dropped).
    held: Zeroizing<Vec<u8>>,
    /// How much of `held` is written already.
    sent: usize,
}

impl Guarded {
    pub fn new(inner: Box<dyn Stream>, peer: SocketAddr) -> (Guarded, Switch) {
        let cut = Arc::new(AtomicBool::new(false));
        let hold = Arc::new(AtomicBool::new(false));
        let switch = Switch {
            cut: Arc::clone(&cut),
            hold: Arc::clone(&hold),
        };
        let guarded = Guarded {
            inner,
            peer,
            cut,
            hold,
            held: Zeroizing::new(Vec::new()),
            sent: 0,
        };
        (guarded, switch)
    }

    fn refused(&self) -> Option<io::Error> {
        self.cut.load(Ordering::SeqCst).then(|| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "cut: the message could not be read whole",
            )
        })
    }

    fn holding(&self) -> bool {
        self.hold.load(Ordering::SeqCst)
    }

    /// Writes out what is held, then zeroes it.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let rest = self.held.get(self.sent..).unwrap_or_default();
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // Only what was used: the spare capacity never held anything.
        self.held.as_mut_slice().zeroize();
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        let this = &mut *self;
        if !this.holding() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        if this.held.capacity() < HOLD {
            // Once, at its full size: growing would leave copies of message data in
            // freed memory.
            this.held.reserve_exact(HOLD);
        }
        if this.held.len() + buf.len() > this.held.capacity() {
            ready!(this.poll_drain(cx))?;
        }
        if buf.len() > this.held.capacity() {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        let this = &mut *self;
        if this.holding() {
            let ended = this.held.ends_with(b"\r\n.\r\n");
            if !ended && this.held.len() < HOLD {
                return Poll::Ready(Ok(()));
            }
            ready!(this.poll_drain(cx))?;
            if ended {
                this.hold.store(false, Ordering::SeqCst);
            }
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Guarded {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.peer)
    }
}

/// The stream after STARTTLS, whose first bytes read are the server's greeting from
/// before it: lettre reads a greeting before its EHLO, and a server sends none after
/// STARTTLS (RFC 3207 §4.2). The greeting is not trusted for anything; it only lets lettre
/// begin.
#[derive(Debug)]
pub struct Regreeted {
    greeting: Vec<u8>,
    at: usize,
    inner: Box<dyn Stream>,
}

impl Regreeted {
    pub fn new(greeting: &Reply, inner: Box<dyn Stream>) -> Regreeted {
        Regreeted {
            greeting: greeting.to_wire(),
            at: 0,
            inner,
        }
    }
}

impl AsyncRead for Regreeted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(rest) = this.greeting.get(this.at..).filter(|r| !r.is_empty()) {
            let n = rest.len().min(buf.remaining());
            buf.put_slice(rest.get(..n).unwrap_or_default());
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Regreeted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    #[tokio::test]
    async fn once_cut_nothing_more_is_written() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let tcp = tcp.unwrap();
        let peer = tcp.peer_addr().unwrap();
        let (mut guarded, switch) = Guarded::new(Box::new(tcp), peer);
        let (mut peer, _) = accepted.unwrap();
        guarded.write_all(b"before").await.unwrap();
        switch.cut();
        assert!(guarded.write_all(b"after").await.is_err());
        assert!(guarded.flush().await.is_err());
        drop(guarded);
        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"before");
    }

    #[tokio::test]
    async fn a_held_message_goes_with_its_final_dot_in_one_write() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let peer: SocketAddr = "127.0.0.1:25".parse().unwrap();
        let (mut guarded, switch) = Guarded::new(Box::new(a), peer);
        guarded.write_all(b"MAIL FROM:<a@x>\r\n").await.unwrap();
        guarded.flush().await.unwrap();
        let mut got = vec![0u8; 17];
        b.read_exact(&mut got).await.unwrap();
        switch.hold();
        guarded.write_all(b"Subject: x\r\n\r\nbody").await.unwrap();
        guarded.flush().await.unwrap();
        let mut probe = [0u8; 1];
        let early =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.read(&mut probe)).await;
        assert!(early.is_err(), "nothing before the final dot");
        guarded.write_all(b"\r\n.\r\n").await.unwrap();
        guarded.flush().await.unwrap();
        let mut got = vec![0u8; 23];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"Subject: x\r\n\r\nbody\r\n.\r\n");
        assert!(guarded.held.is_empty());
        // Holding ended with the dot: the next command goes at once.
        guarded.write_all(b"QUIT\r\n").await.unwrap();
        guarded.flush().await.unwrap();
        let mut got = vec![0u8; 6];
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"QUIT\r\n");

        // More than HOLD is written as it comes.
        switch.hold();
        let big = vec![b'x'; HOLD + 10];
        guarded.write_all(&big).await.unwrap();
        guarded.flush().await.unwrap();
        let mut got = vec![0u8; HOLD + 10];
        b.read_exact(&mut got).await.unwrap();
        // And a cut drops what is held: no final dot goes.
        guarded.write_all(b"more").await.unwrap();
        switch.cut();
        assert!(guarded.write_all(b"\r\n.\r\n").await.is_err());
        assert!(guarded.flush().await.is_err());
        drop(guarded);
        let mut rest = Vec::new();
        b.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test]
    async fn the_greeting_is_read_first_then_the_stream() {
        let (a, mut b) = tokio::io::duplex(64);
        let greeting = Reply::bare(220, "mx.test ESMTP");
        let mut s = Regreeted::new(&greeting, Box::new(a));
        b.write_all(b"250 after\r\n").await.unwrap();
        let mut first = [0u8; 5];
        s.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"220 m");
        let mut rest = vec![0u8; "x.test ESMTP\r\n250 after\r\n".len()];
        s.read_exact(&mut rest).await.unwrap();
        assert_eq!(rest, b"x.test ESMTP\r\n250 after\r\n");
        s.write_all(b"EHLO gw\r\n").await.unwrap();
        let mut sent = [0u8; 9];
        b.read_exact(&mut sent).await.unwrap();
        assert_eq!(&sent, b"EHLO gw\r\n");
    }
}
