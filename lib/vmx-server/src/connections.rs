//! The bound on open client connections (`VMX_MAX_CONNECTIONS`).
//!
//! An open HTTP/1.1 connection costs the server memory whether or not a request is in
//! flight (hyper keeps an 8 KiB read buffer and an 8 KiB header buffer per connection, and
//! its task), so the in-flight bound of [`crate::shed`] alone does not bound memory: a
//! client, or a flood, that opens connections faster than it closes them would. Two
//! measures:
//!
//! - **At the bound no connection is accepted** until one closes: the next ones wait in
//!   the kernel's listen queue, holding no memory or file descriptor of ours, and are
//!   accepted in turn.
//! - **From [`CLOSE_FROM_PERCENT`] % of the bound every HTTP/1.1 response carries
//!   `Connection: close`**, so connections that client pools keep open and idle give their
//!   slot back after their next request instead of holding it, and a client waiting in the
//!   listen queue is not starved by idle ones.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, Version, header};
use axum::middleware::{self, Next};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The share of the bound (in percent) from which responses close their connection.
pub const CLOSE_FROM_PERCENT: usize = 90;

/// Open client connections, counted by the slots they hold.
#[derive(Clone)]
pub struct ConnectionLimit {
    slots: Arc<Semaphore>,
    max: usize,
    close_from: usize,
}

impl ConnectionLimit {
    /// At most `max` open connections (0: no bound).
    pub fn new(max: usize) -> Self {
        let (max, close_from) = match max {
            0 => (Semaphore::MAX_PERMITS, usize::MAX),
            n => (n, (n * CLOSE_FROM_PERCENT).div_ceil(100).max(1)),
        };
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            close_from,
        }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// `inner`, accepting a connection only while a slot is free.
    pub fn listener(&self, inner: TcpListener) -> BoundedListener {
        BoundedListener {
            inner,
            slots: self.slots.clone(),
        }
    }

    /// `router` with `Connection: close` on every HTTP/1.1 response while at least
    /// [`CLOSE_FROM_PERCENT`] % of the slots are taken.
    pub fn close_when_crowded(&self, router: Router) -> Router {
        if self.close_from == usize::MAX {
            return router;
        }
        let limit = self.clone();
        router.layer(middleware::from_fn(move |req: Request, next: Next| {
            let http1 = req.version() == Version::HTTP_11;
            let limit = limit.clone();
            async move {
                let mut res = next.run(req).await;
                // Read after the handler: a long request sees the crowd of its end.
                if http1 && limit.open() >= limit.close_from {
                    res.headers_mut()
                        .insert(header::CONNECTION, HeaderValue::from_static("close"));
                }
                res
            }
        }))
    }
}

/// A TCP listener that takes a slot before it accepts.
pub struct BoundedListener {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl axum::serve::Listener for BoundedListener {
    type Io = Counted;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Counted, SocketAddr) {
        // The semaphore is never closed, so a slot always comes.
        let slot = self.slots.clone().acquire_owned().await.ok();
        let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        (
            Counted {
                stream,
                _slot: slot,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// An accepted connection holding its slot until it is dropped (closed).
pub struct Counted {
    stream: TcpStream,
    _slot: Option<OwnedSemaphorePermit>,
}

impl Counted {
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
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
