//! Requests that go to the workers a path maps to, with failover.

use std::ops::Range;

use futures::stream::BoxStream;
use futures::StreamExt;
use hoard_common::api::{self, codes, encode_path_for_url, ErrorBody, FileStat, ListEntry};
use hoard_common::HoardPath;
use reqwest::header::{ETAG, IF_MATCH, RANGE};
use reqwest::StatusCode;
use serde::Serialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::nodes::{describe_reqwest, NodeStatus};
use crate::{Attempt, ClientError, HoardClient};

/// `fs stat`: the file's status from the worker that owns it, and the workers it maps to.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatResult {
    #[serde(flatten)]
    pub stat: FileStat,
    /// The worker that answered.
    pub answered_by: String,
    /// Its replica rule, where its copies are wanted and who holds them.
    #[serde(flatten)]
    pub replicas: crate::placement::ReplicaState,
}

/// How one attempt ended: either a final answer for the caller, or a reason to try the next
/// worker.
enum Outcome<T> {
    Done(Result<T, ClientError>),
    TryNext(String),
}

/// Maps a worker's error answer to a final error (4xx) or a reason to fail over (5xx).
async fn classify_error<T>(path: &HoardPath, response: reqwest::Response) -> Outcome<T> {
    let status = response.status();
    let body = response.bytes().await.unwrap_or_default();
    let (message, code) = match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(error) => (error.error, error.code),
        Err(_) => (String::from_utf8_lossy(&body).trim().to_string(), String::new()),
    };
    if status.is_server_error() {
        return Outcome::TryNext(format!("{status}: {message}"));
    }
    let error = match (status, code.as_str()) {
        (StatusCode::NOT_FOUND, _) => ClientError::NotFound(path.to_string()),
        (StatusCode::RANGE_NOT_SATISFIABLE, _) => ClientError::RangeNotSatisfiable(message),
        (_, codes::INVALID_PATH) => ClientError::InvalidPath(message),
        _ => ClientError::BadRequest(message),
    };
    Outcome::Done(Err(error))
}

impl HoardClient {
    /// Tries `attempt` on each of `path`'s workers in ring order until one gives a final answer.
    async fn with_failover<T>(
        &self,
        path: &HoardPath,
        mut attempt: impl AsyncFnMut(NodeStatus) -> Outcome<T>,
    ) -> Result<T, ClientError> {
        let order = self.failover_order(path).await?;
        let mut attempts = Vec::new();
        for node in order {
            let worker = node.address.clone();
            match attempt(node).await {
                Outcome::Done(result) => return result,
                Outcome::TryNext(reason) => {
                    tracing::debug!(worker = %worker, path = %path, reason = %reason, "worker failed, trying the next");
                    attempts.push(Attempt { worker, reason });
                }
            }
        }
        Err(ClientError::AllWorkersFailed {
            path: path.to_string(),
            attempts,
        })
    }

    /// Every worker of the rings in the order this client tries them for `path` (its replicas
    /// as the selection policy orders them, then the rest); an error when none is available.
    async fn failover_order(&self, path: &HoardPath) -> Result<Vec<NodeStatus>, ClientError> {
        Ok(self.read_order(path).await?.0)
    }

    /// [`Self::failover_order`], and how many of its first nodes are the file's replicas.
    async fn read_order(&self, path: &HoardPath) -> Result<(Vec<NodeStatus>, usize), ClientError> {
        let view = self.view(false).await?;
        let count = self.read_count(&view, path).await;
        let placement = view.placement(path, count);
        let replicas = placement.replicas().count();
        let order = placement.read_order(self.inner.user.replica_selection_policy, self.inner.client_seed);
        if order.is_empty() {
            let offline = view
                .nodes
                .iter()
                .map(|node| format!("{} ({})", node.address, node.error.as_deref().unwrap_or("offline")))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(ClientError::NoWorkers(offline));
        }
        Ok((order, replicas))
    }

    pub async fn stat(&self, path: &HoardPath) -> Result<StatResult, ClientError> {
        let view = self.view(false).await?;
        let rules = self.rules().await;
        let replicas =
            crate::placement::replica_state(self.http(), &view, &rules, path, self.inner.probe.timeout()).await;
        let url_path = encode_path_for_url(path.as_str());
        self.with_failover(path, async |node: NodeStatus| {
            let url = format!("http://{}{}?path={url_path}", node.address, api::STAT_ROUTE);
            {
                let response = match self.http().get(&url).send().await {
                    Ok(response) => response,
                    Err(err) => return Outcome::TryNext(describe_reqwest(&err)),
                };
                if !response.status().is_success() {
                    return classify_error(path, response).await;
                }
                match response.json::<FileStat>().await {
                    Ok(stat) => Outcome::Done(Ok(StatResult {
                        stat,
                        answered_by: node.address,
                        replicas: replicas.clone(),
                    })),
                    Err(err) => Outcome::TryNext(describe_reqwest(&err)),
                }
            }
        })
        .await
    }

    /// Streams one directory level. The listing comes from the path's first worker that answers.
    pub async fn list(
        &self,
        path: &HoardPath,
    ) -> Result<BoxStream<'static, Result<ListEntry, ClientError>>, ClientError> {
        let response = self
            .with_failover(path, async |node: NodeStatus| {
                let url = format!(
                    "http://{}{}?path={}",
                    node.address,
                    api::LIST_ROUTE,
                    encode_path_for_url(path.as_str())
                );
                {
                    match self.http().get(&url).send().await {
                        Ok(response) if response.status().is_success() => Outcome::Done(Ok((node.address, response))),
                        Ok(response) => classify_error(path, response).await,
                        Err(err) => Outcome::TryNext(describe_reqwest(&err)),
                    }
                }
            })
            .await?;
        let (worker, response) = response;
        let list_path = path.to_string();
        let lines = ndjson_lines(response.bytes_stream().boxed()).map(move |line| {
            let line = line.map_err(|reason| ClientError::AllWorkersFailed {
                path: list_path.clone(),
                attempts: vec![Attempt {
                    worker: worker.clone(),
                    reason,
                }],
            })?;
            serde_json::from_slice::<ListEntry>(&line)
                .map_err(|err| ClientError::BadRequest(format!("bad listing entry: {err}")))
        });
        Ok(lines.boxed())
    }

    /// Reads `range` of `path` (the whole file when `None`) into `sink`, failing over between
    /// workers; a read resumed on another worker continues at the byte where the last one
    /// stopped and must be the same file version. Returns the bytes written.
    pub async fn read_to<W>(
        &self,
        path: &HoardPath,
        range: Option<Range<u64>>,
        sink: &mut W,
    ) -> Result<u64, ClientError>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let mut progress = ReadProgress {
            start: range.as_ref().map_or(0, |range| range.start),
            end: range.as_ref().map(|range| range.end),
            offset: range.as_ref().map_or(0, |range| range.start),
            version: None,
        };
        if progress.end.is_some_and(|end| end <= progress.start) {
            return Ok(0);
        }
        // A loop rather than `with_failover`'s closure: the closure's future borrows `sink` and
        // `progress` in a way rustc cannot prove `Send` for every lifetime, and a read must be
        // spawnable on a multi-threaded runtime.
        let (mut order, replicas) = self.read_order(path).await?;
        let user = &self.inner.user;
        let first_choice = order.first().map(|node| node.address.clone());
        let whole = if user.prefer_cached_replicas {
            let whole = self.inner.probe.whole_on(self.http(), path, &order[..replicas]).await;
            crate::cached::prefer_whole(&mut order, replicas, &whole);
            Some(whole)
        } else {
            None
        };
        let mut attempts = Vec::new();
        for node in order {
            let before = progress.offset;
            let outcome = self.read_attempt(path, &node, &mut progress, sink).await;
            if let Some(whole) = &whole {
                let hot = whole.contains(&node.address);
                let local = node.cluster == user.cluster_name;
                self.inner
                    .replica_reads
                    .add(&node.cluster, local, hot, progress.offset - before);
                if hot && matches!(outcome, Outcome::TryNext(_)) {
                    self.inner.probe.forget(path);
                }
            }
            match outcome {
                Outcome::Done(result) => {
                    // Served by another replica than the preferred one, which lacks the file:
                    // the passive cache has the preferred one load it for the next read.
                    let preferred = first_choice.filter(|first| *first != node.address);
                    if let (Some(whole), Some(preferred), true) = (&whole, preferred, user.passive_cache) {
                        if result.is_ok() && !whole.contains(&preferred) {
                            let request = crate::cached::request_passive_load(self.http().clone(), preferred, path);
                            let mut background = self.inner.background.lock();
                            background.retain(|task| !task.is_finished());
                            background.push(request);
                        }
                    }
                    return result;
                }
                Outcome::TryNext(reason) => {
                    tracing::debug!(worker = %node.address, path = %path, reason = %reason, "worker failed, trying the next");
                    attempts.push(Attempt {
                        worker: node.address,
                        reason,
                    });
                }
            }
        }
        Err(ClientError::AllWorkersFailed {
            path: path.to_string(),
            attempts,
        })
    }

    async fn read_attempt<W>(
        &self,
        path: &HoardPath,
        node: &NodeStatus,
        progress: &mut ReadProgress,
        sink: &mut W,
    ) -> Outcome<u64>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let url = format!(
            "http://{}{}{}",
            node.address,
            api::FILES_PREFIX,
            encode_path_for_url(path.as_str())
        );
        let mut request = self.http().get(&url);
        let resuming = progress.version.is_some();
        if progress.offset > 0 || progress.end.is_some() {
            let last = progress.end.map(|end| (end - 1).to_string()).unwrap_or_default();
            request = request.header(RANGE, format!("bytes={}-{last}", progress.offset));
        }
        if let Some(version) = progress.version.as_deref() {
            request = request.header(IF_MATCH, version);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) => return Outcome::TryNext(describe_reqwest(&err)),
        };
        let status = response.status();
        if status == StatusCode::PRECONDITION_FAILED {
            return Outcome::Done(Err(ClientError::FileChanged {
                path: path.to_string(),
                version: progress.version.clone().unwrap_or_default(),
            }));
        }
        if status == StatusCode::RANGE_NOT_SATISFIABLE && resuming {
            // Resuming exactly at the end of the file: nothing was left to read.
            return Outcome::Done(Ok(progress.offset - progress.start));
        }
        if !status.is_success() {
            return classify_error(path, response).await;
        }
        if progress.version.is_none() {
            progress.version = response
                .headers()
                .get(ETAG)
                .and_then(|tag| tag.to_str().ok())
                .map(str::to_string);
        }
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(err) => {
                    return Outcome::TryNext(format!(
                        "read stopped at byte {}: {}",
                        progress.offset,
                        describe_reqwest(&err)
                    ))
                }
            };
            if let Err(err) = sink.write_all(&chunk).await {
                return Outcome::Done(Err(ClientError::Output(err)));
            }
            progress.offset += chunk.len() as u64;
        }
        if progress.end.is_some_and(|end| progress.offset < end) {
            return Outcome::TryNext(format!("response ended early at byte {}", progress.offset));
        }
        if let Err(err) = sink.flush().await {
            return Outcome::Done(Err(ClientError::Output(err)));
        }
        Outcome::Done(Ok(progress.offset - progress.start))
    }
}

/// Where a read with failover stands.
struct ReadProgress {
    start: u64,
    end: Option<u64>,
    /// Next byte to read.
    offset: u64,
    /// The ETag of the first response; later responses must match it.
    version: Option<String>,
}

/// Splits a byte stream into newline-terminated lines (without the newline).
fn ndjson_lines(
    body: BoxStream<'static, Result<bytes::Bytes, reqwest::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, String>> {
    futures::stream::unfold(
        (body, Vec::<u8>::new(), false),
        |(mut body, mut pending, mut done)| async move {
            loop {
                if let Some(newline) = pending.iter().position(|byte| *byte == b'\n') {
                    let line: Vec<u8> = pending.drain(..=newline).take(newline).collect();
                    if line.is_empty() {
                        continue;
                    }
                    return Some((Ok(line), (body, pending, done)));
                }
                if done {
                    if pending.is_empty() {
                        return None;
                    }
                    let line = std::mem::take(&mut pending);
                    return Some((Ok(line), (body, pending, done)));
                }
                match body.next().await {
                    Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                    Some(Err(err)) => {
                        done = true;
                        pending.clear();
                        return Some((Err(describe_reqwest(&err)), (body, pending, done)));
                    }
                    None => done = true,
                }
            }
        },
    )
}
