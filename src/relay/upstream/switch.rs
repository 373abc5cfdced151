//! The upstream socket with a switch that stops its writes: lettre ends every message it
//! is given with the final dot, so a message that cannot be read whole must cut the
//! socket before lettre gets that far.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use lettre::transport::smtp::client::AsyncTokioStream;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Cuts the writes of one [`Guarded`] socket, for good.
#[derive(Debug, Clone)]
pub struct Switch(Arc<AtomicBool>);

impl Switch {
    pub fn cut(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// A TCP socket whose writes fail once its [`Switch`] is cut; reads go on.
#[derive(Debug)]
pub struct Guarded {
    tcp: TcpStream,
    cut: Arc<AtomicBool>,
}

impl Guarded {
    pub fn new(tcp: TcpStream) -> (Guarded, Switch) {
        let cut = Arc::new(AtomicBool::new(false));
        let switch = Switch(Arc::clone(&cut));
        (Guarded { tcp, cut }, switch)
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
        Pin::new(&mut self.tcp).poll_read(cx, buf)
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
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

impl AsyncTokioStream for Guarded {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn once_cut_nothing_more_is_written() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tcp, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (mut guarded, switch) = Guarded::new(tcp.unwrap());
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
}
