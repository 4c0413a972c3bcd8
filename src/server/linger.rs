//! Closing a connection without losing the answers already sent. A socket closed while the
//! client's bytes sit unread in it (a WINDOW_UPDATE or the next request, sent before the client
//! saw the GOAWAY or `Connection: close`) makes the kernel answer with a reset instead of a
//! normal close, and a reset makes the client drop what it had received but not yet read: an
//! answered review then fails on the apiserver's side. The load benchmark hit exactly that once
//! in ~10⁵ requests on a retiring h2 connection ("stream closed because of a broken pipe").
//! Like Go's server (`closeWriteAndWait`), a closing connection first ends its side
//! (close_notify and FIN), then reads and discards what the client still sends for a short
//! while, until the client closes too.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// How long a closed connection keeps draining the client's bytes.
pub const LINGER: Duration = Duration::from_millis(500);

/// A connection's stream that, when dropped, closes gracefully on a background task.
pub struct Lingering<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> {
    io: Option<T>,
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Lingering<T> {
    pub fn new(io: T) -> Self {
        Self { io: Some(io) }
    }
}

fn gone() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection already closed")
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncRead for Lingering<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_read(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> AsyncWrite for Lingering<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write(cx, buf),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(gone())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(T::is_write_vectored)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.io.as_mut() {
            Some(io) => Pin::new(io).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Drop for Lingering<T> {
    fn drop(&mut self) {
        let Some(io) = self.io.take() else {
            return;
        };
        // Without a runtime (never the case while serving) the socket just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(close(io, LINGER));
        }
    }
}

/// Ends our side, then discards the client's bytes until it closes or `linger` has passed.
async fn close<T: AsyncRead + AsyncWrite + Unpin>(mut io: T, linger: Duration) {
    let _ = tokio::time::timeout(linger, async {
        let _ = io.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(io.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::{TcpListener, TcpStream};

    /// Dropping a socket with unread bytes in it sends a reset (Linux, deterministic); through
    /// `Lingering` the client reads the whole answer and a normal end instead.
    #[tokio::test]
    async fn a_closed_connection_with_unread_client_bytes_still_delivers_its_answer()
    -> io::Result<()> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let mut client = TcpStream::connect(listener.local_addr()?).await?;
        let (server, _) = listener.accept().await?;
        client
            .write_all(b"next request the server will never read")
            .await?;
        server.readable().await?;
        let mut server = Lingering::new(server);
        server.write_all(b"the answer").await?;
        drop(server);
        let mut received = Vec::new();
        client.read_to_end(&mut received).await?;
        assert_eq!(received, b"the answer");
        Ok(())
    }
}
