//! The pages of one response after its first, fetched ahead of the one being sent
//! (`hoard.worker.network.readahead.size`), so a cold read overlaps UFS reads with sending.
//!
//! Pages fetched ahead sit in memory until the client takes them, so the read-ahead grows only
//! while the client keeps up: it starts at one page and doubles at each page the client took
//! without a slow wait, up to the limit; after a slow wait only the page needed next is
//! fetched. A wait is slow when a write had to wait for the socket and the page took longer
//! than [`KEEPING_UP`] to go out: a fast client on a fast network fills its socket buffer all the
//! time (every 1MiB page waits a little on loopback), and fetching one page at a time would
//! halve its throughput. A client that stops reading therefore holds the page being sent and
//! what was fetched before it stopped, never more than the limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::stream::{FuturesOrdered, Stream, StreamExt};
use hoard_http::ConnectionRef;

/// A page that goes out within this after the previous one, waits on the socket or not, comes
/// from a client that keeps up (1MiB in 5ms is 200MB/s).
const KEEPING_UP: Duration = Duration::from_millis(5);

/// Pages fetched ahead at most, as the axum state's extension (the direct path passes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadAheadPages(pub usize);

impl ReadAheadPages {
    /// Whole pages of `bytes` with pages of `page_size` bytes.
    pub(crate) fn of(bytes: u64, page_size: u64) -> ReadAheadPages {
        ReadAheadPages(usize::try_from(bytes / page_size.max(1)).unwrap_or(usize::MAX))
    }
}

/// Yields `make(index)` for each page index in order, with the adaptive read-ahead above.
pub(crate) struct ReadAhead<F, Fut: Future> {
    make: F,
    /// Page indexes not started yet.
    pending: std::ops::RangeInclusive<u64>,
    started: FuturesOrdered<Fut>,
    /// Pages allowed ahead of the one needed now.
    ahead: usize,
    max_ahead: usize,
    connection: Option<ConnectionRef>,
    waits_seen: u64,
    /// `Some` until the next page's read-ahead is decided: when the previous page was yielded
    /// (`None` for the first page).
    asked: Option<Option<Instant>>,
}

impl<F, Fut> ReadAhead<F, Fut>
where
    F: FnMut(u64) -> Fut,
    Fut: Future,
{
    pub(crate) fn new(
        pages: std::ops::RangeInclusive<u64>,
        make: F,
        max_ahead: ReadAheadPages,
        connection: Option<ConnectionRef>,
    ) -> Self {
        let waits_seen = connection.as_ref().map_or(0, ConnectionRef::send_waits);
        ReadAhead {
            make,
            pending: pages,
            started: FuturesOrdered::new(),
            ahead: 0,
            max_ahead: max_ahead.0,
            connection,
            waits_seen,
            asked: Some(None),
        }
    }
}

impl<F, Fut> Stream for ReadAhead<F, Fut>
where
    F: FnMut(u64) -> Fut + Unpin,
    Fut: Future,
{
    type Item = Fut::Output;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Fut::Output>> {
        let this = self.get_mut();
        // Decided once per page, at the first poll after the previous page went out (a fetch
        // still running makes the stream poll again, which must not count as another page).
        if let Some(asked) = this.asked.take() {
            let waited = match &this.connection {
                Some(connection) => {
                    let waits = connection.send_waits();
                    let waited = waits != this.waits_seen;
                    this.waits_seen = waits;
                    waited
                }
                None => false,
            };
            let slow = asked.is_some_and(|yielded| yielded.elapsed() > KEEPING_UP);
            let want = if waited && slow {
                1
            } else {
                this.ahead = (this.ahead * 2).clamp(1, this.max_ahead.max(1)).min(this.max_ahead);
                1 + this.ahead
            };
            while this.started.len() < want {
                let Some(index) = this.pending.next() else {
                    break;
                };
                this.started.push_back((this.make)(index));
            }
        }
        let polled = this.started.poll_next_unpin(cx);
        if let Poll::Ready(Some(_)) = &polled {
            this.asked = Some(Some(Instant::now()));
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::rc::Rc;

    /// Records which pages were started by the time each is yielded.
    fn run(pages: u64, max_ahead: usize) -> Vec<(u64, usize)> {
        let started = Rc::new(RefCell::new(0usize));
        let counter = Rc::clone(&started);
        let stream = ReadAhead::new(
            0..=pages - 1,
            move |index| {
                *counter.borrow_mut() += 1;
                std::future::ready(index)
            },
            ReadAheadPages(max_ahead),
            None,
        );
        futures::executor::block_on(stream.map(|index| (index, *started.borrow())).collect())
    }

    #[test]
    fn grows_to_the_limit() {
        // Started pages when page i is yielded: 1 ahead, then 2, then 4 (capped at 3 here).
        assert_eq!(run(6, 3), vec![(0, 2), (1, 4), (2, 6), (3, 6), (4, 6), (5, 6)]);
        assert_eq!(run(3, 0), vec![(0, 1), (1, 2), (2, 3)]);
        assert_eq!(ReadAheadPages::of(4 << 20, 1 << 20), ReadAheadPages(4));
        assert_eq!(ReadAheadPages::of(1 << 20, 4 << 20), ReadAheadPages(0));
    }
}
