//! Connections that a server can cut: tonic serves each connection on a task of its own, so a
//! stop that has waited its grace period cannot end them by dropping the server. Wrapping each
//! accepted connection lets the server fail its reads and writes instead, and hyper then ends
//! the connection (and the calls on it).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::transport::server::Connected;

/// An accepted connection that fails every read and write once `token` is cancelled.
pub struct Closable<IO> {
    io: IO,
    /// `None` once the token has fired.
    cancelled: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<IO> Closable<IO> {
    pub fn new(io: IO, token: CancellationToken) -> Self {
        Closable {
            io,
            cancelled: Some(Box::pin(token.cancelled_owned())),
        }
    }

    /// Ready with an error once cut; registers the waker of `cx` on the token otherwise, so a
    /// connection idle in a read also wakes up when it is cut.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let fired = match self.cancelled.as_mut() {
            Some(cancelled) => cancelled.as_mut().poll(cx).is_ready(),
            None => true,
        };
        if fired {
            self.cancelled = None;
            return Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the server stopped after its grace period",
            ));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Closable<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Closable<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(error) = this.poll_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut this.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

impl<IO: Connected> Connected for Closable<IO> {
    type ConnectInfo = IO::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}
