//! An axum router served over one connection with hyper: the connection's slot follows each
//! request (head, handler, body reads, response, idle), `Host` is checked before routing, and
//! the connection ends with a lingering close.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use hoard_common::api::{codes, ApiError};
use http::{Request, StatusCode};
use http_body::{Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tower::Service;

use crate::conn::Conn;
use crate::host::host_problem;
use crate::table::{ConnectionRef, Phase};

/// Serves `router` on `conn` until the client or a limit closes it, then closes it lingering.
/// `max_buf` bounds what hyper buffers of a request head (8KiB at least): a larger head is
/// answered 431.
pub async fn serve_router(conn: Conn, router: Router, max_buf: usize) {
    let Some(slot) = conn.handle() else {
        return;
    };
    let service = Tracked { router, slot };
    let mut connection = hyper::server::conn::http1::Builder::new()
        .max_buf_size(max_buf.max(8192))
        .serve_connection(TokioIo::new(conn), service);
    // Without hyper's own shutdown, so the connection is closed lingering whatever ended it.
    if let Err(err) = std::future::poll_fn(|cx| connection.poll_without_shutdown(cx)).await {
        tracing::debug!(error = %err, "connection ended with an error");
    }
    connection.into_parts().io.into_inner().close().await;
}

/// The router behind the slot's bookkeeping.
struct Tracked {
    router: Router,
    slot: ConnectionRef,
}

type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response<TrackedBody>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracked {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> ResponseFuture {
        self.slot.mark(Phase::Busy);
        let slot = self.slot.clone();
        if let Some(problem) = host_problem(request.version(), request.headers()) {
            let response = ApiError::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, problem).into_response();
            return Box::pin(std::future::ready(Ok(TrackedBody::wrap(response, slot))));
        }
        let (mut parts, body) = request.into_parts();
        parts.extensions.insert(slot.clone());
        let body = RequestBody {
            inner: body,
            slot: slot.clone(),
            waiting: false,
        };
        let future = self.router.clone().call(Request::from_parts(parts, body));
        Box::pin(async move {
            let response = future.await?;
            Ok(TrackedBody::wrap(response, slot))
        })
    }
}

/// A request body: while the handler waits for its bytes the slot says so (the header
/// timeout applies between bytes).
struct RequestBody {
    inner: Incoming,
    slot: ConnectionRef,
    waiting: bool,
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let poll = Pin::new(&mut self.inner).poll_frame(cx);
        match (&poll, self.waiting) {
            (Poll::Pending, false) => {
                self.slot.mark(Phase::Body);
                self.waiting = true;
            }
            (Poll::Ready(_), true) => {
                self.slot.mark(Phase::Busy);
                self.waiting = false;
            }
            _ => {}
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if self.waiting {
            self.slot.mark(Phase::Busy);
        }
    }
}

/// A response body: once hyper has taken all of it (and dropped it) the connection is idle,
/// waiting for the next request. Bytes still in hyper's buffer that the socket does not take
/// are the send timeout's.
pub struct TrackedBody {
    inner: Body,
    slot: ConnectionRef,
}

impl TrackedBody {
    fn wrap(response: Response, slot: ConnectionRef) -> Response<TrackedBody> {
        response.map(|inner| TrackedBody { inner, slot })
    }
}

impl http_body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for TrackedBody {
    fn drop(&mut self) {
        self.slot.mark(Phase::Idle);
    }
}
