//! The direct path for file reads: `GET /files/...` over HTTP/1.1 answered straight on the
//! socket, below hyper, so pages from the memory tier go out with `sendfile` from their sealed
//! files (no copy through user space) and a request costs a parse and two system calls.
//!
//! Each connection starts here. A request this path does not take (any other route or method,
//! a body, an upgrade, a percent-encoded path, HTTP/1.0, a missing, repeated or invalid
//! `Host`, a head that is malformed or too large) and a file request that fails before its
//! first byte is sent (404, 416, ...) hand the connection, with every byte read so far, to
//! hyper and the axum router for the rest of its life: the answers, errors included, are the
//! router's, and this path only has to be right for the plain successful read.
//!
//! The listener's limits (hoard-http) apply here too: the connection's slot says what it waits
//! for (a head, the next request, the server) and when a write found the socket full, and the
//! table's sweeper closes it when that has lasted too long. A `Connection: close` answer ends
//! with a lingering close.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::Arc;

use axum::Router;
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use hoard_http::{Conn, Phase};
use hoard_pagestore::PageBytes;
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::TcpStream;

use crate::readahead::ReadAheadPages;
use crate::server::{file_body, prepare_file_reply, FileBody, FileRequest};
use crate::WorkerState;

/// What every connection of a worker is served with.
pub(crate) struct Server {
    pub state: Arc<WorkerState>,
    /// The router, for the requests this path hands on.
    pub app: Router,
    /// Bound of a request head (at least 8KiB).
    pub max_buf: usize,
    pub readahead: ReadAheadPages,
}

/// Most headers a request on the direct path may have; one with more goes to hyper.
const MAX_HEADERS: usize = 32;
const FILES_PREFIX: &str = "/files/";

/// A request the direct path answers, copied out of the read buffer.
#[derive(Debug, PartialEq, Eq)]
struct FileGet {
    /// The path after `/files/`, as sent (nothing to decode).
    path: String,
    range: Option<String>,
    if_match: Option<String>,
    keep_alive: bool,
    /// Bytes of the request head.
    head_len: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// The head is not complete yet.
    Partial,
    File(FileGet),
    /// Anything else: hyper's to answer.
    Other,
}

/// Classifies the request at the front of `buffer`. Pure: tested without a socket.
fn parse(buffer: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        // Malformed, or too many headers: hyper says what is wrong.
        Err(_) => return Parsed::Other,
    };
    if request.method != Some("GET") || request.version != Some(1) {
        return Parsed::Other;
    }
    let Some(path) = request.path.and_then(|path| path.strip_prefix(FILES_PREFIX)) else {
        return Parsed::Other;
    };
    // Percent-encoded paths and queries are left to the router's decoding.
    if path.is_empty() || path.contains(['%', '?', '#']) {
        return Parsed::Other;
    }
    let mut get = FileGet {
        path: path.to_string(),
        range: None,
        if_match: None,
        keep_alive: true,
        head_len,
    };
    // RFC 9112 §3.2: exactly one valid Host; otherwise the router answers 400.
    let mut hosts = 0;
    for header in request.headers.iter() {
        let name = header.name;
        // The router refuses values that are not visible ASCII with its own error.
        let Some(value) = std::str::from_utf8(header.value)
            .ok()
            .filter(|value| value.bytes().all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte)))
        else {
            return Parsed::Other;
        };
        if name.eq_ignore_ascii_case("host") {
            hosts += 1;
            if hosts > 1 || !hoard_http::valid_host(header.value) {
                return Parsed::Other;
            }
        } else if name.eq_ignore_ascii_case("range") {
            if get.range.is_some() {
                return Parsed::Other;
            }
            get.range = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("if-match") {
            if get.if_match.is_some() {
                return Parsed::Other;
            }
            get.if_match = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    get.keep_alive = false;
                } else if token.eq_ignore_ascii_case("upgrade") {
                    return Parsed::Other;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            if value.trim() != "0" {
                return Parsed::Other;
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("expect")
            || name.eq_ignore_ascii_case("upgrade")
        {
            return Parsed::Other;
        }
    }
    if hosts == 0 {
        return Parsed::Other;
    }
    Parsed::File(get)
}

/// How answering one request ended.
enum Answered {
    /// Sent in full; the connection may carry the next request.
    Sent,
    /// Nothing was sent: hand the connection (this request included) to hyper.
    Refused,
}

/// Serves one connection: file reads on the direct path until a request it does not take,
/// then hyper for the rest.
pub(crate) async fn serve_connection(mut conn: Conn, server: Arc<Server>) {
    if let Err(err) = conn.stream().set_nodelay(true) {
        tracing::debug!(error = %err, "cannot set TCP_NODELAY");
    }
    let mut buffer = BytesMut::with_capacity(8192);
    loop {
        let get = match parse(&buffer) {
            Parsed::File(get) => get,
            Parsed::Other => break,
            Parsed::Partial if buffer.len() >= server.max_buf => break,
            Parsed::Partial => {
                if buffer.capacity() - buffer.len() < 4096 {
                    buffer.reserve(8192);
                }
                match conn.stream_mut().read_buf(&mut buffer).await {
                    // The client closed (or a limit shut the socket down).
                    Ok(0) => return,
                    Ok(_) => {
                        conn.arrived();
                        continue;
                    }
                    Err(err) => {
                        tracing::debug!(error = %err, "connection read failed");
                        return;
                    }
                }
            }
        };
        conn.mark(Phase::Busy);
        match answer(&server, &conn, &get).await {
            Ok(Answered::Sent) if get.keep_alive => {
                buffer.advance(get.head_len);
                // Pipelined bytes of the next request may be here already.
                conn.mark(if buffer.is_empty() { Phase::Idle } else { Phase::Head });
            }
            Ok(Answered::Sent) => {
                conn.close().await;
                return;
            }
            Ok(Answered::Refused) => break,
            Err(err) => {
                // Mid-response: the client sees a short body and a closed connection, as it
                // would from hyper.
                tracing::debug!(error = %err, "direct response failed");
                return;
            }
        }
    }
    conn.set_prefix(buffer.freeze());
    hoard_http::serve_router(conn, server.app.clone(), server.max_buf).await;
}

async fn answer(server: &Server, conn: &Conn, get: &FileGet) -> io::Result<Answered> {
    let state = &server.state;
    let request = FileRequest {
        range: get.range.as_deref(),
        if_match: get.if_match.as_deref(),
    };
    let Ok(reply) = prepare_file_reply(state, &get.path, &request).await else {
        return Ok(Answered::Refused);
    };
    let Ok(body) = file_body(
        Arc::clone(state),
        reply.file,
        reply.range,
        server.readahead,
        conn.connection(),
    )
    .await
    else {
        return Ok(Answered::Refused);
    };
    state.metrics.requests.inc();
    let mut head = Vec::with_capacity(512);
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(reply.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(reply.status.canonical_reason().unwrap_or("").as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &reply.headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    push_date(&mut head);
    if !get.keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let Some(FileBody { first, rest }) = body else {
        write_all(conn, &head, &[]).await?;
        return Ok(Answered::Sent);
    };
    let sendfile_max_bytes = state.sendfile_max_bytes();
    send_part(conn, &head, &first, sendfile_max_bytes).await?;
    if let Some(mut rest) = rest {
        while let Some(part) = rest.next().await {
            let part = part.map_err(io::Error::other)?;
            send_part(conn, &[], &part, sendfile_max_bytes).await?;
        }
    }
    Ok(Answered::Sent)
}

/// Appends a `Date` header (RFC 9110 §6.6.1), formatted at most once a second per thread, as
/// hyper does.
fn push_date(head: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = std::time::SystemTime::now();
    let second = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DATE.with_borrow_mut(|(formatted_at, value)| {
        if *formatted_at != second || value.is_empty() {
            *value = httpdate::fmt_http_date(now);
            *formatted_at = second;
        }
        head.extend_from_slice(b"date: ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    });
}

/// Sends `head` then `part`: from the part's sealed file with `sendfile` when it has one and
/// is at most `sendfile_max_bytes` long, else from memory with one vectored write. (On
/// loopback, copying streams large parts faster, while `sendfile` keeps the tail latency of
/// many small reads low: docs/worker-http.md#direct-path.)
async fn send_part(conn: &Conn, head: &[u8], part: &PageBytes, sendfile_max_bytes: u64) -> io::Result<()> {
    let Some((file, offset)) = part.sealed_file().filter(|_| part.len() as u64 <= sendfile_max_bytes) else {
        return write_all(conn, head, part).await;
    };
    let stream = conn.stream();
    let mut waiting = SendWait::default();
    if !head.is_empty() {
        // MSG_MORE holds the head back so it leaves in one segment with the body's first bytes.
        let mut sent = 0;
        while sent < head.len() {
            sent += stream
                .async_io(Interest::WRITABLE, || {
                    waiting.track(conn, send_more(stream, &head[sent..]))
                })
                .await?;
        }
    }
    let mut offset = offset;
    let end = offset + part.len() as u64;
    while offset < end {
        let remaining = usize::try_from(end - offset).unwrap_or(usize::MAX);
        stream
            .async_io(Interest::WRITABLE, || {
                waiting.track(conn, sendfile(stream, file, &mut offset, remaining))
            })
            .await?;
    }
    Ok(())
}

/// Writes `head` and `body` with as few vectored writes as the socket allows.
async fn write_all(conn: &Conn, head: &[u8], body: &[u8]) -> io::Result<()> {
    let stream = conn.stream();
    let mut waiting = SendWait::default();
    let mut parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
    let mut remaining: &mut [io::IoSlice<'_>] = &mut parts;
    while !remaining.is_empty() {
        stream.writable().await?;
        let written = match waiting.track(conn, stream.try_write_vectored(remaining)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => written,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => return Err(err),
        };
        io::IoSlice::advance_slices(&mut remaining, written);
    }
    Ok(())
}

/// Tells the connection's slot when writes start and stop waiting for a full socket (the
/// send timeout), touching it only on those changes.
#[derive(Default)]
struct SendWait {
    waiting: bool,
}

impl SendWait {
    fn track<T>(&mut self, conn: &Conn, result: io::Result<T>) -> io::Result<T> {
        match &result {
            Err(err) if err.kind() == io::ErrorKind::WouldBlock && !self.waiting => {
                conn.send_waiting();
                self.waiting = true;
            }
            Ok(_) if self.waiting => {
                conn.send_resumed();
                self.waiting = false;
            }
            _ => {}
        }
        result
    }
}

fn send_more(stream: &TcpStream, bytes: &[u8]) -> io::Result<usize> {
    // SAFETY: the pointer and length come from a live slice.
    let sent = unsafe {
        libc::send(
            stream.as_raw_fd(),
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_MORE | libc::MSG_NOSIGNAL,
        )
    };
    syscall_result(sent)
}

fn sendfile(stream: &TcpStream, file: BorrowedFd<'_>, offset: &mut u64, count: usize) -> io::Result<()> {
    let mut at = libc::off_t::try_from(*offset).map_err(io::Error::other)?;
    // SAFETY: both descriptors are open for the call; `at` is a valid out-pointer.
    let sent = unsafe { libc::sendfile(stream.as_raw_fd(), file.as_raw_fd(), &mut at, count) };
    let sent = syscall_result(sent)?;
    if sent == 0 {
        // The sealed file cannot shrink, so this is a bug, not a short file: never spin on it.
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "sendfile sent nothing"));
    }
    *offset += sent as u64;
    Ok(())
}

fn syscall_result(result: isize) -> io::Result<usize> {
    usize::try_from(result).map_err(|_| io::Error::last_os_error())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, range: Option<&str>, keep_alive: bool, head: &str) -> Parsed {
        Parsed::File(FileGet {
            path: path.to_string(),
            range: range.map(str::to_string),
            if_match: None,
            keep_alive,
            head_len: head.len(),
        })
    }

    #[test]
    fn plain_file_reads_take_the_direct_path() {
        let head = "GET /files/a/b.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-9\r\n\r\n";
        assert_eq!(parse(head.as_bytes()), file("a/b.bin", Some("bytes=0-9"), true, head));
        let close = "GET /files/c HTTP/1.1\r\nConnection: keep-alive, Close\r\nHost: h\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse(close.as_bytes()), file("c", None, false, close));
        // A pipelined request after the head is not part of it.
        let pipelined = format!("{head}GET /files/next HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(
            parse(pipelined.as_bytes()),
            file("a/b.bin", Some("bytes=0-9"), true, head)
        );
        assert_eq!(parse(b"GET /files/a HTTP/1.1\r\nHost: x\r\n"), Parsed::Partial);
        assert_eq!(parse(b""), Parsed::Partial);
    }

    #[test]
    fn everything_else_goes_to_hyper() {
        let others: &[&str] = &[
            "HEAD /files/a HTTP/1.1\r\n\r\n",
            "POST /files/a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi",
            "GET /files/a HTTP/1.0\r\n\r\n",
            "GET /health HTTP/1.1\r\n\r\n",
            "GET /files/ HTTP/1.1\r\n\r\n",
            "GET /files HTTP/1.1\r\n\r\n",
            "GET /files/a%20b HTTP/1.1\r\n\r\n",
            "GET /files/a?x=1 HTTP/1.1\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "GET /files/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nIf-Match: \"x\"\r\nIf-Match: \"y\"\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nRange: bytes=\u{e9}\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nBad Header\r\n\r\n",
            "NOT A REQUEST\r\n\r\n",
        ];
        for head in others {
            // With a Host, so each is handed on for its own reason.
            let head = head.replacen("\r\n", "\r\nHost: h\r\n", 1);
            assert_eq!(parse(head.as_bytes()), Parsed::Other, "{head:?}");
        }
        // RFC 9112 §3.2: the router answers these 400.
        let hosts: &[&str] = &[
            "GET /files/a HTTP/1.1\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "GET /files/a HTTP/1.1\r\nHost: a b\r\n\r\n",
        ];
        for head in hosts {
            assert_eq!(parse(head.as_bytes()), Parsed::Other, "{head:?}");
        }
        let many = format!(
            "GET /files/a HTTP/1.1\r\nHost: h\r\n{}\r\n",
            "X-A: 1\r\n".repeat(MAX_HEADERS)
        );
        assert_eq!(parse(many.as_bytes()), Parsed::Other, "too many headers");
    }
}
