//! The open connections of one listener: the cap, the closing of the longest-waiting idle
//! connection past it, and the timeouts.
//!
//! A connection's task records what it waits for in its slot (one relaxed store: no lock, no
//! timer, no system call per request). A sweeper task ticking a few times per shortest timeout
//! reads every slot and shuts down (`shutdown(2)`) the sockets whose wait has run out: the
//! connection's own pending read or write then ends (EOF, EPIPE) and its task finishes as it
//! would on a peer's close, closing the descriptor.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use hoard_config::NetworkConfig;
use parking_lot::Mutex;

/// What a connection waits for (and so which timeout applies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A request head: the first one (from the connection's start) or a next one whose first
    /// bytes came. The header timeout.
    Head = 1,
    /// Nothing: keep-alive between requests. The keep-alive timeout.
    Idle = 2,
    /// The server: handling a request or writing its answer. No timeout (a write the socket
    /// does not take is the send timeout, tracked apart).
    Busy = 3,
    /// A request body the handler is reading. The header timeout, between bytes.
    Body = 4,
}

const FREE: u64 = 0;
const SINCE_BITS: u32 = 40;
const PHASE_BITS: u32 = 4;
const SINCE_MASK: u64 = (1 << SINCE_BITS) - 1;
const PHASE_MASK: u64 = (1 << PHASE_BITS) - 1;
const GENERATION_SHIFT: u32 = SINCE_BITS + PHASE_BITS;
const GENERATION_MASK: u64 = (1 << (64 - GENERATION_SHIFT)) - 1;

/// A slot's word: generation (which connection), phase, and since when (ms on the table's clock).
fn pack(generation: u64, phase: u64, since: u64) -> u64 {
    (generation << GENERATION_SHIFT) | (phase << SINCE_BITS) | (since & SINCE_MASK)
}

fn generation_of(word: u64) -> u64 {
    word >> GENERATION_SHIFT
}

fn phase_of(word: u64) -> u64 {
    (word >> SINCE_BITS) & PHASE_MASK
}

fn since_of(word: u64) -> u64 {
    word & SINCE_MASK
}

/// One connection's place. Aligned to a cache line: connections on different threads update
/// their own slots on every request.
#[repr(align(64))]
struct Slot {
    word: AtomicU64,
    /// When a write started waiting for the socket (ms + 1); 0 while none waits.
    send_blocked: AtomicU64,
    /// How many times a write had to wait: responses read ahead only while it stays put.
    send_waits: AtomicU64,
    /// Already shut down (timed out or closed to make room): the sweeper and eviction skip it.
    closing: AtomicBool,
    socket: Mutex<Socket>,
}

/// The descriptor while the connection owns it. The owner clears it under the lock before the
/// socket is closed, so a descriptor number reused by another file is never shut down.
#[derive(Default)]
struct Socket {
    fd: Option<RawFd>,
    generation: u64,
    /// Counted in `open` (a connection closed to make room stops counting at once).
    counted: bool,
}

/// Counters of what the limits did, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub open: usize,
    pub refused: u64,
    pub evicted: u64,
    pub timed_out: u64,
}

/// Every open connection of one listener.
pub struct ConnectionTable {
    name: &'static str,
    slots: Box<[Slot]>,
    free: Mutex<Vec<u32>>,
    /// Connections counted against the cap.
    open: AtomicUsize,
    cap: usize,
    header_ms: u64,
    keepalive_ms: u64,
    send_ms: u64,
    tick: Duration,
    started: Instant,
    /// The table's clock (ms since `started`), advanced by the sweeper: reading it costs a load.
    now: AtomicU64,
    refused: AtomicU64,
    evicted: AtomicU64,
    timed_out: AtomicU64,
    last_warning: AtomicU64,
}

/// At most one warning of each kind per this many ms.
const WARNING_INTERVAL_MS: u64 = 10_000;

impl ConnectionTable {
    /// A table for at most `cap` connections (`name` names the listener in logs). Slots beyond
    /// the cap hold connections closed to make room until their tasks have ended.
    pub fn new(name: &'static str, config: &NetworkConfig, cap: usize) -> Arc<ConnectionTable> {
        let cap = cap.max(1);
        let slots = cap + cap / 8 + 16;
        let millis = |duration: Duration| u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
        let shortest = config
            .header_timeout
            .min(config.keepalive_timeout)
            .min(config.send_timeout);
        Arc::new(ConnectionTable {
            name,
            slots: (0..slots)
                .map(|_| Slot {
                    word: AtomicU64::new(FREE),
                    send_blocked: AtomicU64::new(0),
                    send_waits: AtomicU64::new(0),
                    closing: AtomicBool::new(false),
                    socket: Mutex::new(Socket::default()),
                })
                .collect(),
            // Popped from the end: the lowest slots are used first.
            free: Mutex::new((0..slots as u32).rev().collect()),
            open: AtomicUsize::new(0),
            cap,
            header_ms: millis(config.header_timeout),
            keepalive_ms: millis(config.keepalive_timeout),
            send_ms: millis(config.send_timeout),
            tick: (shortest / 4).clamp(Duration::from_millis(5), Duration::from_secs(1)),
            started: Instant::now(),
            now: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            last_warning: AtomicU64::new(0),
        })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn cap(&self) -> usize {
        self.cap
    }

    pub fn stats(&self) -> TableStats {
        TableStats {
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            evicted: self.evicted.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
        }
    }

    fn now(&self) -> u64 {
        self.now.load(Ordering::Relaxed)
    }

    /// Takes a slot for a new connection on `fd`, first closing the longest-waiting idle
    /// connection when the cap is reached. `None`: the cap is reached and nothing waits.
    pub fn admit(self: &Arc<Self>, fd: RawFd) -> Option<Claim> {
        if self.open.load(Ordering::Relaxed) >= self.cap && !self.evict_longest_waiting() {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let Some(index) = self.free.lock().pop() else {
            // Every spare slot holds a connection closed to make room whose task has not ended.
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let slot = &self.slots[index as usize];
        let mut socket = slot.socket.lock();
        let generation = (socket.generation + 1) & GENERATION_MASK;
        *socket = Socket {
            fd: Some(fd),
            generation,
            counted: true,
        };
        slot.closing.store(false, Ordering::Relaxed);
        slot.send_blocked.store(0, Ordering::Relaxed);
        slot.word
            .store(pack(generation, Phase::Head as u64, self.now()), Ordering::Relaxed);
        drop(socket);
        self.open.fetch_add(1, Ordering::Relaxed);
        Some(Claim {
            slot: ConnectionRef {
                table: Arc::clone(self),
                index,
                generation,
            },
        })
    }

    /// Closes the connection that has waited longest for a request (idle, or with its head not
    /// complete, and nothing left to send). Its slot stops counting against the cap now; its
    /// descriptor is closed as soon as its task notices. False when no connection waits.
    pub fn evict_longest_waiting(&self) -> bool {
        // A candidate may end on its own between the scan and the close: look again then.
        for _ in 0..4 {
            let mut best: Option<(usize, u64)> = None;
            for (index, slot) in self.slots.iter().enumerate() {
                let word = slot.word.load(Ordering::Relaxed);
                let phase = phase_of(word);
                if phase != Phase::Head as u64 && phase != Phase::Idle as u64 {
                    continue;
                }
                if slot.closing.load(Ordering::Relaxed) || slot.send_blocked.load(Ordering::Relaxed) != 0 {
                    continue;
                }
                if best.is_none_or(|(_, oldest)| since_of(word) < since_of(oldest)) {
                    best = Some((index, word));
                }
            }
            let Some((index, word)) = best else {
                return false;
            };
            if self.close(index, generation_of(word), true) {
                self.evicted.fetch_add(1, Ordering::Relaxed);
                return true;
            }
        }
        false
    }

    /// Shuts down the socket of slot `index` if it still holds connection `generation`.
    /// `uncount`: it stops counting against the cap at once.
    fn close(&self, index: usize, generation: u64, uncount: bool) -> bool {
        let slot = &self.slots[index];
        let mut socket = slot.socket.lock();
        let Some(fd) = socket.fd.filter(|_| socket.generation == generation) else {
            return false;
        };
        slot.closing.store(true, Ordering::Relaxed);
        if uncount && socket.counted {
            socket.counted = false;
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        // SAFETY: `fd` is open: its owner clears it under this lock before closing it.
        unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        true
    }

    fn release(&self, index: u32, generation: u64) {
        let slot = &self.slots[index as usize];
        let mut socket = slot.socket.lock();
        debug_assert_eq!(socket.generation, generation);
        socket.fd = None;
        if socket.counted {
            socket.counted = false;
            self.open.fetch_sub(1, Ordering::Relaxed);
        }
        slot.word.store(pack(generation, FREE, 0), Ordering::Relaxed);
        slot.send_blocked.store(0, Ordering::Relaxed);
        drop(socket);
        self.free.lock().push(index);
    }

    /// Runs the sweeper on the current runtime until the table is dropped.
    pub fn start_sweeper(self: &Arc<Self>) {
        let table: Weak<ConnectionTable> = Arc::downgrade(self);
        let tick = self.tick;
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                let Some(table) = table.upgrade() else {
                    return;
                };
                table.sweep();
            }
        });
    }

    /// Advances the clock and closes every connection whose wait has run out.
    fn sweep(&self) {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) & SINCE_MASK;
        self.now.store(now, Ordering::Relaxed);
        let mut closed = 0u64;
        for (index, slot) in self.slots.iter().enumerate() {
            let word = slot.word.load(Ordering::Relaxed);
            let phase = phase_of(word);
            if phase == FREE || slot.closing.load(Ordering::Relaxed) {
                continue;
            }
            let limit = match phase {
                p if p == Phase::Head as u64 || p == Phase::Body as u64 => self.header_ms,
                p if p == Phase::Idle as u64 => self.keepalive_ms,
                _ => u64::MAX,
            };
            let waited_too_long = now.saturating_sub(since_of(word)) > limit;
            let blocked = slot.send_blocked.load(Ordering::Relaxed);
            let send_too_long = blocked != 0 && now.saturating_sub(blocked - 1) > self.send_ms;
            if (waited_too_long || send_too_long) && self.close(index, generation_of(word), false) {
                closed += 1;
            }
        }
        if closed > 0 {
            self.timed_out.fetch_add(closed, Ordering::Relaxed);
            tracing::debug!(listener = self.name, closed, "closed connections that waited too long");
        }
    }

    /// True at most once per [`WARNING_INTERVAL_MS`], so a flood logs a line, not a line per
    /// connection.
    pub fn may_warn(&self) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.last_warning.load(Ordering::Relaxed);
        (last == 0 || now.saturating_sub(last) >= WARNING_INTERVAL_MS)
            && self
                .last_warning
                .compare_exchange(last, now.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A connection's slot, held by its task; released when dropped (before the socket closes).
pub struct Claim {
    slot: ConnectionRef,
}

impl Claim {
    /// A handle on the slot for what runs inside the connection (bodies, read-ahead).
    pub fn handle(&self) -> ConnectionRef {
        self.slot.clone()
    }

    /// The handle, borrowed (cloning it touches the table's shared count).
    pub fn connection(&self) -> &ConnectionRef {
        &self.slot
    }

    /// Records what the connection waits for now.
    pub fn mark(&self, phase: Phase) {
        let table = &self.slot.table;
        table.slots[self.slot.index as usize]
            .word
            .store(pack(self.slot.generation, phase as u64, table.now()), Ordering::Relaxed);
    }

    /// Bytes of a request arrived: an idle connection now waits for the rest of a head.
    pub fn arrived(&self) {
        let slot = &self.slot.table.slots[self.slot.index as usize];
        if phase_of(slot.word.load(Ordering::Relaxed)) == Phase::Idle as u64 {
            self.mark(Phase::Head);
        }
    }

    /// A write found the socket full: the send timeout runs from now (unless it runs already).
    pub fn send_waiting(&self) {
        let table = &self.slot.table;
        let slot = &table.slots[self.slot.index as usize];
        if slot.send_blocked.load(Ordering::Relaxed) == 0 {
            slot.send_blocked.store(table.now() + 1, Ordering::Relaxed);
            slot.send_waits.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A write went through: the send timeout stops.
    pub fn send_resumed(&self) {
        let slot = &self.slot.table.slots[self.slot.index as usize];
        if slot.send_blocked.load(Ordering::Relaxed) != 0 {
            slot.send_blocked.store(0, Ordering::Relaxed);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.slot.table.release(self.slot.index, self.slot.generation);
    }
}

/// A handle on one connection's slot that may outlive it (a response body dropped after the
/// connection): it acts only while the slot still holds that connection.
#[derive(Clone)]
pub struct ConnectionRef {
    table: Arc<ConnectionTable>,
    index: u32,
    generation: u64,
}

impl ConnectionRef {
    /// Records what the connection waits for, if it is still open.
    pub fn mark(&self, phase: Phase) {
        let slot = &self.table.slots[self.index as usize];
        let word = slot.word.load(Ordering::Relaxed);
        // Only the connection's own task writes its word, so nothing changes it in between.
        if generation_of(word) == self.generation && phase_of(word) != FREE {
            slot.word
                .store(pack(self.generation, phase as u64, self.table.now()), Ordering::Relaxed);
        }
    }

    /// How many times a write of this connection found the socket full so far.
    pub fn send_waits(&self) -> u64 {
        self.table.slots[self.index as usize].send_waits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ms: u64) -> NetworkConfig {
        NetworkConfig {
            header_timeout: Duration::from_millis(ms),
            keepalive_timeout: Duration::from_millis(ms),
            send_timeout: Duration::from_millis(ms),
            max_connections: 2,
        }
    }

    #[test]
    fn words_round_trip() {
        let word = pack(GENERATION_MASK, Phase::Body as u64, SINCE_MASK);
        assert_eq!(generation_of(word), GENERATION_MASK);
        assert_eq!(phase_of(word), Phase::Body as u64);
        assert_eq!(since_of(word), SINCE_MASK);
    }

    #[test]
    fn cap_evicts_the_longest_waiting_and_refuses_when_none_waits() {
        let table = ConnectionTable::new("test", &config(60_000), 2);
        // Descriptors that are not sockets: shutdown(2) fails harmlessly on them.
        let first = table.admit(-1).expect("first");
        table.now.store(10, Ordering::Relaxed);
        let second = table.admit(-1).expect("second");
        assert_eq!(table.stats().open, 2);
        // The oldest waiting one (first) makes room for the third.
        let third = table.admit(-1).expect("third");
        assert_eq!(table.stats().evicted, 1);
        assert!(table.slots[first.slot.index as usize].closing.load(Ordering::Relaxed));
        // Busy connections are not closed: with both others busy, a fourth is refused.
        second.mark(Phase::Busy);
        third.mark(Phase::Busy);
        assert!(table.admit(-1).is_none());
        assert_eq!(table.stats().refused, 1);
        // The evicted one no longer counts; its slot frees when its task ends.
        drop(first);
        assert_eq!(table.stats().open, 2);
        drop(second);
        drop(third);
        assert_eq!(table.stats().open, 0);
        assert_eq!(table.free.lock().len(), table.slots.len());
    }

    #[test]
    fn stale_handles_do_nothing() {
        let table = ConnectionTable::new("test", &config(60_000), 2);
        let claim = table.admit(-1).expect("claim");
        let handle = claim.handle();
        drop(claim);
        handle.mark(Phase::Busy);
        assert_eq!(
            phase_of(table.slots[handle.index as usize].word.load(Ordering::Relaxed)),
            FREE
        );
        let again = table.admit(-1).expect("again");
        assert_eq!(again.slot.index, handle.index);
        handle.mark(Phase::Idle);
        let word = table.slots[handle.index as usize].word.load(Ordering::Relaxed);
        assert_eq!(phase_of(word), Phase::Head as u64);
    }

    #[test]
    fn sweep_times_out_waits_and_stalled_sends() {
        let table = ConnectionTable::new("test", &config(100), 10);
        let idle = table.admit(-1).expect("idle");
        idle.mark(Phase::Idle);
        let busy = table.admit(-1).expect("busy");
        busy.mark(Phase::Busy);
        let sending = table.admit(-1).expect("sending");
        sending.mark(Phase::Busy);
        sending.send_waiting();
        std::thread::sleep(Duration::from_millis(150));
        table.sweep();
        assert_eq!(table.stats().timed_out, 2);
        let closing = |claim: &Claim| table.slots[claim.slot.index as usize].closing.load(Ordering::Relaxed);
        assert!(closing(&idle) && closing(&sending) && !closing(&busy));
    }
}
