//! One accepted connection: the socket, its slot in the listener's table, the bytes already read
//! from it, and the lingering close.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::table::{Claim, ConnectionRef, Phase};

/// How long a closing connection keeps reading (and discarding) what the client still sends,
/// and how much at most (nginx's `lingering_time` is 30s, `lingering_timeout` 5s).
pub const LINGER_TIME: Duration = Duration::from_secs(5);
pub const LINGER_MAX_BYTES: usize = 4 << 20;

/// An accepted connection. As I/O (for hyper) it reads `prefix` first, marks the slot when a
/// request's first bytes arrive, and starts or stops the send timeout as writes wait or go
/// through.
pub struct Conn {
    // Dropped first (see `Drop`): the slot forgets the descriptor before it is closed.
    claim: Option<Claim>,
    stream: TcpStream,
    prefix: Bytes,
}

impl Conn {
    pub fn new(stream: TcpStream, claim: Claim) -> Conn {
        Conn {
            claim: Some(claim),
            stream,
            prefix: Bytes::new(),
        }
    }

    /// Bytes read from the socket already, to be read again before it (a request head the
    /// direct path hands on).
    pub fn set_prefix(&mut self, prefix: Bytes) {
        self.prefix = prefix;
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    pub fn stream_mut(&mut self) -> &mut TcpStream {
        &mut self.stream
    }

    /// A handle on the connection's slot (for bodies and the read-ahead).
    pub fn handle(&self) -> Option<ConnectionRef> {
        self.claim.as_ref().map(Claim::handle)
    }

    /// The connection's slot, borrowed.
    pub fn connection(&self) -> Option<&ConnectionRef> {
        self.claim.as_ref().map(Claim::connection)
    }

    /// Bytes of a request arrived: an idle connection now waits for the rest of a head.
    pub fn arrived(&self) {
        if let Some(claim) = &self.claim {
            claim.arrived();
        }
    }

    pub fn mark(&self, phase: Phase) {
        if let Some(claim) = &self.claim {
            claim.mark(phase);
        }
    }

    /// A write found the socket full.
    pub fn send_waiting(&self) {
        if let Some(claim) = &self.claim {
            claim.send_waiting();
        }
    }

    /// A write went through.
    pub fn send_resumed(&self) {
        if let Some(claim) = &self.claim {
            claim.send_resumed();
        }
    }

    /// Closes like nginx's lingering close: the write side is shut down first (the client
    /// gets the whole answer, then EOF), then whatever the client still sends is read and
    /// discarded until it closes too, for at most [`LINGER_TIME`] and [`LINGER_MAX_BYTES`].
    /// Closing with unread input would make the kernel reset the connection, and a reset
    /// discards the answer's bytes the client has not read yet.
    pub async fn close(mut self) {
        self.mark(Phase::Idle);
        if self.stream.shutdown().await.is_err() {
            return;
        }
        let deadline = tokio::time::sleep(LINGER_TIME);
        tokio::pin!(deadline);
        let mut buffer = [0u8; 8192];
        let mut discarded = 0usize;
        while discarded < LINGER_MAX_BYTES {
            tokio::select! {
                read = self.stream.read(&mut buffer) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(read) => discarded += read,
                },
                () = &mut deadline => return,
            }
        }
    }

    fn track_write(&self, poll: &Poll<io::Result<usize>>) {
        match poll {
            Poll::Pending => self.send_waiting(),
            Poll::Ready(Ok(written)) if *written > 0 => self.send_resumed(),
            Poll::Ready(_) => {}
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Before `stream` closes the descriptor.
        self.claim.take();
    }
}

impl AsyncRead for Conn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let take = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..take]);
            self.prefix.advance(take);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(poll, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            if let Some(claim) = &self.claim {
                claim.arrived();
            }
        }
        poll
    }
}

impl AsyncWrite for Conn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.track_write(&poll);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.track_write(&poll);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
