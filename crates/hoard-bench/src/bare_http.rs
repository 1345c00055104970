//! A reference peer for the random-read benchmark: a bare hyper server answering range GETs
//! from a copy of the file in memory, on the worker's connection model (one current-thread
//! tokio runtime per event-loop thread, connections handed out round-robin). It has none of
//! Hoard's work (no page lookup, no checksum, no routing), so the gap between it and nginx is
//! what the HTTP stack itself costs, and the gap between the worker and it is Hoard's own.

use std::convert::Infallible;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

pub struct BareHttp {
    pub address: String,
}

/// Starts the server on a free loopback port with `event_loops` threads serving `data`. Its
/// threads live until the process exits (the benchmark's lifetime).
pub fn start(data: Bytes, event_loops: usize) -> anyhow::Result<BareHttp> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    let data = Arc::new(data);
    let mut loops = Vec::with_capacity(event_loops);
    for index in 0..event_loops.max(1) {
        let (sender, mut receiver) = tokio::sync::mpsc::unbounded_channel::<std::net::TcpStream>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let data = Arc::clone(&data);
        std::thread::Builder::new()
            .name(format!("bare-http-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    while let Some(stream) = receiver.recv().await {
                        let Ok(stream) = tokio::net::TcpStream::from_std(stream) else {
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let data = Arc::clone(&data);
                        tokio::spawn(async move {
                            let service = service_fn(move |request| answer(Arc::clone(&data), request));
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        });
                    }
                });
            })?;
        loops.push(sender);
    }
    std::thread::Builder::new()
        .name("bare-http-accept".to_string())
        .spawn(move || {
            for (next, stream) in listener.incoming().flatten().enumerate() {
                let _ = stream.set_nonblocking(true);
                if loops[next % loops.len()].send(stream).is_err() {
                    return;
                }
            }
        })
        .context("cannot start the bare HTTP server")?;
    Ok(BareHttp { address })
}

async fn answer(
    data: Arc<Bytes>,
    request: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let range = request
        .headers()
        .get(hyper::header::RANGE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_range)
        .filter(|(start, end)| start <= end && *end < data.len());
    let response = match range {
        Some((start, end)) => Response::builder()
            .status(StatusCode::PARTIAL_CONTENT)
            .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
            .header(
                hyper::header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", data.len()),
            )
            .body(Full::new(data.slice(start..=end))),
        None => Response::builder()
            .status(StatusCode::RANGE_NOT_SATISFIABLE)
            .body(Full::new(Bytes::new())),
    };
    Ok(response.unwrap_or_else(|_| Response::new(Full::new(Bytes::new()))))
}

/// `bytes=START-END` (both given), as the benchmark's requests are.
fn parse_range(value: &str) -> Option<(usize, usize)> {
    let (start, end) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some((start.parse().ok()?, end.parse().ok()?))
}
