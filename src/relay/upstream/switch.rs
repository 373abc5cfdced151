//! The upstream socket with a switch that stops its writes: lettre ends every message it
//! is given with the final dot, so a message that cannot be read whole must cut the
//! socket before lettre gets that far. And the stream after STARTTLS, with the greeting
//! lettre expects.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::relay::hop::Stream;
use crate::smtp::reply::Reply;

/// Cuts the writes of one [`Guarded`] socket, for good.
#[derive(Debug, Clone)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A stream to `peer` (TCP, or TLS over it) whose writes fail once its [`Switch`] is
/// cut; reads go on. Below TLS a cut would only break the record layer: it is put above,
/// where the message's bytes are written.
#[derive(Debug)]
pub struct Guarded {
    inner: Box<dyn Stream>,
    peer: SocketAddr,
    cut: Arc<AtomicBool>,
}

impl Guarded {
    pub fn new(inner: Box<dyn Stream>, peer: SocketAddr) -> (Guarded, Switch) {
        let cut = Arc::new(AtomicBool::new(false));
        let switch = Switch(Arc::clone(&cut));
        (Guarded { inner, peer, cut }, switch)
    }

    fn refused(&self) -> Option<io::Error> {
        self.cut.load(Ordering::SeqCst).then(|| {
            io::Error::new(
                io::ErrorKind::BrokenPipe,
                "cut: the message could not be read whole",
            )
        })
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
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
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
