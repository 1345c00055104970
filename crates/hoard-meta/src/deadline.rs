//! A deadline shared between tasks that only ever moves later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An instant, shared by clones, that only moves forward: "certain until" for a lease renewed
/// in the background or a job's confirmed ownership. Measured on the monotonic clock, which keeps
/// running while a process is stopped, so a process that wakes from a pause (SIGSTOP, a frozen
/// VM) finds it passed before any late answer could move it.
#[derive(Clone, Debug)]
pub struct SharedDeadline {
    origin: Instant,
    /// Nanoseconds after `origin`.
    until_nanos: Arc<AtomicU64>,
}

impl SharedDeadline {
    /// A deadline `valid_for` after `start`.
    pub fn new(start: Instant, valid_for: Duration) -> SharedDeadline {
        SharedDeadline {
            origin: start,
            until_nanos: Arc::new(AtomicU64::new(saturating_nanos(valid_for))),
        }
    }

    /// Moves the deadline to `start + valid_for` if that is later (a late answer to an older
    /// request never moves it back).
    pub fn extend(&self, start: Instant, valid_for: Duration) {
        let until = start.saturating_duration_since(self.origin) + valid_for;
        self.until_nanos.fetch_max(saturating_nanos(until), Ordering::SeqCst);
    }

    pub fn until(&self) -> Instant {
        self.origin + Duration::from_nanos(self.until_nanos.load(Ordering::SeqCst))
    }

    /// True until the deadline.
    pub fn holds(&self) -> bool {
        Instant::now() < self.until()
    }
}

fn saturating_nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_only_moves_forward() {
        let start = Instant::now();
        let deadline = SharedDeadline::new(start, Duration::from_secs(2));
        assert_eq!(deadline.until(), start + Duration::from_secs(2));
        assert!(deadline.holds());
        let clone = deadline.clone();
        clone.extend(start + Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(deadline.until(), start + Duration::from_secs(3));
        // A late answer to an older request does not move it back.
        deadline.extend(start, Duration::from_secs(2));
        assert_eq!(clone.until(), start + Duration::from_secs(3));
        assert!(!SharedDeadline::new(start, Duration::ZERO).holds());
    }
}
