//! The consistent-hash ring (docs/ring.md). Pure functions and data: no IO.
//!
//! CONTRACT (other crates code against these names; keep them stable):
//! [`Provider`], [`Member`], [`Ring::build`], [`Ring::members`], [`Ring::is_empty`],
//! [`Ring::candidates`] (indices into [`Ring::members`]) and [`Ring::primary`].
//!
//! The algorithm, in short (docs/ring.md has the exact, portable definition and test vectors):
//!
//! * every worker gets `v` virtual nodes; virtual node `i` of identity `id` sits at
//!   `murmur3_32(seed 0, utf8(id) ++ le_u32(i))` ([`vnode_hash`]);
//! * a key's `a`-th probe sits at `murmur3_32(seed 0, utf8(key) ++ le_u32(a))` ([`key_hash`]);
//! * a probe lands on the first virtual node whose hash is `>=` the probe (unsigned 32-bit
//!   order), wrapping to the first one; on equal hashes the smaller identity comes first;
//! * candidates are the distinct workers met by probes `a = 0, 1, …, MAX_ATTEMPTS - 1`, then,
//!   if that was not enough, by walking the ring clockwise from the last probe's virtual node.
#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// Virtual nodes per worker when the configuration does not say
/// (`hoard.user.worker.selection.policy.consistent.hash.virtual.node.count.per.worker`).
pub const DEFAULT_VIRTUAL_NODES_PER_WORKER: u32 = 2000;

/// How many re-hash probes (attempt numbers `0..MAX_ATTEMPTS`) [`Ring::candidates`] makes before
/// it falls back to walking the ring. Alluxio's `ConsistentHashPolicy` uses the same cap (100).
pub const MAX_ATTEMPTS: u32 = 100;

/// Under [`Provider::Capacity`], one virtual node per this many bytes of capacity (1 GiB).
pub const CAPACITY_BYTES_PER_VIRTUAL_NODE: u64 = 1 << 30;

/// No worker gets more virtual nodes than this (2^20 = 1,048,576; 1 PiB under
/// [`Provider::Capacity`]), so one bogus capacity figure cannot make every client allocate
/// gigabytes.
pub const MAX_VIRTUAL_NODES_PER_WORKER: u32 = 1 << 20;

/// The seed of every murmur3 hash the ring computes.
pub const HASH_SEED: u32 = 0;

/// How many virtual nodes each worker gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// Every worker gets `virtual_nodes_per_worker`.
    #[default]
    Default,
    /// `capacity_bytes / 1GiB` virtual nodes (at least 1).
    Capacity,
}

impl Provider {
    /// The number of virtual nodes `member` gets on a ring built with `virtual_nodes_per_worker`:
    /// clamped to `1..=MAX_VIRTUAL_NODES_PER_WORKER`.
    pub fn virtual_nodes(self, member: &Member, virtual_nodes_per_worker: u32) -> u32 {
        let wanted = match self {
            Provider::Default => u64::from(virtual_nodes_per_worker),
            Provider::Capacity => member.capacity_bytes / CAPACITY_BYTES_PER_VIRTUAL_NODE,
        };
        wanted.clamp(1, u64::from(MAX_VIRTUAL_NODES_PER_WORKER)) as u32
    }

    /// The configuration spelling (`DEFAULT` or `CAPACITY`).
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Default => "DEFAULT",
            Provider::Capacity => "CAPACITY",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing a [`Provider`] name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownProvider(pub String);

impl fmt::Display for UnknownProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown consistent hash provider {:?} (expected DEFAULT or CAPACITY)",
            self.0
        )
    }
}

impl std::error::Error for UnknownProvider {}

impl FromStr for Provider {
    type Err = UnknownProvider;

    /// `DEFAULT` or `CAPACITY`, in any case, surrounding whitespace ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        if name.eq_ignore_ascii_case("DEFAULT") {
            Ok(Provider::Default)
        } else if name.eq_ignore_ascii_case("CAPACITY") {
            Ok(Provider::Capacity)
        } else {
            Err(UnknownProvider(s.to_string()))
        }
    }
}

/// A worker as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The worker identity hashed onto the ring (UUID, or `host:port` for static membership).
    pub identity: String,
    pub capacity_bytes: u64,
}

impl Member {
    /// A member with no capacity figure (fine for [`Provider::Default`]).
    pub fn new(identity: impl Into<String>) -> Member {
        Member {
            identity: identity.into(),
            capacity_bytes: 0,
        }
    }

    pub fn with_capacity(identity: impl Into<String>, capacity_bytes: u64) -> Member {
        Member {
            identity: identity.into(),
            capacity_bytes,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// murmur3_32 (x86 32-bit variant), byte-for-byte the `murmur3` crate's `murmur3_32` and Guava's
// `Hashing.murmur3_32_fixed()`. Implemented here over slices (the crate hashes an `io::Read`) so
// that the common prefix of `key ++ le_u32(attempt)` is hashed once for all attempts; the tests
// check it against the crate.

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

#[inline(always)]
fn mix_h(h: u32, k: u32) -> u32 {
    (h ^ mix_k(k)).rotate_left(13).wrapping_mul(5).wrapping_add(0xe654_6b64)
}

#[inline(always)]
fn fmix(mut h: u32, len: u64) -> u32 {
    // The reference takes the length as a 32-bit integer.
    h ^= len as u32;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// murmur3 state after the whole 4-byte blocks of a prefix; the rest is kept as a tail.
#[derive(Debug, Clone, Copy)]
struct Murmur3Prefix {
    h: u32,
    /// The 0..=3 bytes after the last whole block, little-endian.
    tail: u32,
    tail_len: u32,
    len: u64,
}

impl Murmur3Prefix {
    #[inline]
    fn new(bytes: &[u8], seed: u32) -> Murmur3Prefix {
        let mut h = seed;
        let mut blocks = bytes.chunks_exact(4);
        for block in &mut blocks {
            h = mix_h(h, u32::from_le_bytes([block[0], block[1], block[2], block[3]]));
        }
        let rest = blocks.remainder();
        let mut tail = 0u32;
        for (i, &b) in rest.iter().enumerate() {
            tail |= u32::from(b) << (8 * i);
        }
        Murmur3Prefix {
            h,
            tail,
            tail_len: rest.len() as u32,
            len: bytes.len() as u64,
        }
    }

    /// The hash of the prefix alone.
    #[inline]
    fn finish(self) -> u32 {
        let mut h = self.h;
        if self.tail_len > 0 {
            h ^= mix_k(self.tail);
        }
        fmix(h, self.len)
    }

    /// The hash of the prefix followed by the 4 little-endian bytes of `x`.
    #[inline]
    fn finish_with_u32(self, x: u32) -> u32 {
        let len = self.len + 4;
        if self.tail_len == 0 {
            return fmix(mix_h(self.h, x), len);
        }
        let shift = 8 * self.tail_len; // 8, 16 or 24
        let h = mix_h(self.h, self.tail | (x << shift));
        // The last `tail_len` bytes of `x` form the new tail.
        fmix(h ^ mix_k(x >> (32 - shift)), len)
    }
}

/// murmur3_32 (x86, 32-bit) of `bytes` with `seed`: the same value as the `murmur3` crate's
/// `murmur3_32(&mut Cursor::new(bytes), seed)` and Guava's `murmur3_32_fixed(seed)`.
pub fn murmur3_32(bytes: &[u8], seed: u32) -> u32 {
    Murmur3Prefix::new(bytes, seed).finish()
}

/// Where virtual node `index` of worker `identity` sits:
/// `murmur3_32(utf8(identity) ++ le_u32(index), seed 0)`.
pub fn vnode_hash(identity: &str, index: u32) -> u32 {
    Murmur3Prefix::new(identity.as_bytes(), HASH_SEED).finish_with_u32(index)
}

/// Where probe `attempt` of `key` lands: `murmur3_32(utf8(key) ++ le_u32(attempt), seed 0)`.
pub fn key_hash(key: &str, attempt: u32) -> u32 {
    Murmur3Prefix::new(key.as_bytes(), HASH_SEED).finish_with_u32(attempt)
}

// ---------------------------------------------------------------------------------------------

/// The consistent-hash ring: virtual nodes of every (distinct) member, sorted.
///
/// Layout (about 9–10 bytes per virtual node): one sorted `Vec<u64>` of `hash << 32 | rank`,
/// where `rank` is the worker's position among the distinct identities in byte order (so sorting
/// the `u64`s sorts by hash, then by identity: the collision rule for free), plus a bucket index
/// over the top bits of the hash that narrows a lookup to a handful of adjacent entries.
#[derive(Clone)]
pub struct Ring {
    members: Vec<Member>,
    /// `(vnode hash as u64) << 32 | rank`, sorted ascending, no duplicates.
    entries: Vec<u64>,
    /// rank (index into the distinct identities sorted by bytes) -> index into `members`.
    rank_to_member: Vec<u32>,
    /// `buckets[b]` = index of the first entry whose `hash >> shift >= b`; one extra at the end
    /// equal to `entries.len()`.
    buckets: Vec<u32>,
    /// `32 - bucket bits`, in `2..=32` (32: a single bucket).
    shift: u32,
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("members", &self.members)
            .field("distinct_workers", &self.rank_to_member.len())
            .field("virtual_nodes", &self.entries.len())
            .field("buckets", &self.buckets.len().saturating_sub(1))
            .finish()
    }
}

impl Ring {
    /// Builds the ring. Member order does not affect placement.
    ///
    /// Members with the same identity are one worker: the first of them (lowest index) stands for
    /// it, the others never appear in [`Ring::candidates`].
    ///
    /// # Panics
    ///
    /// If the ring would hold 2^32 - 1 virtual nodes or more.
    pub fn build(members: Vec<Member>, virtual_nodes_per_worker: u32, provider: Provider) -> Ring {
        assert!(
            members.len() < u32::MAX as usize,
            "too many ring members: {}",
            members.len()
        );
        // Distinct identities in byte order; the lowest member index stands for each.
        let mut order: Vec<u32> = (0..members.len() as u32).collect();
        order.sort_unstable_by(|&a, &b| {
            members[a as usize]
                .identity
                .as_bytes()
                .cmp(members[b as usize].identity.as_bytes())
                .then(a.cmp(&b))
        });
        order.dedup_by(|later, kept| members[*later as usize].identity == members[*kept as usize].identity);
        let rank_to_member = order;

        let counts: Vec<u32> = rank_to_member
            .iter()
            .map(|&m| provider.virtual_nodes(&members[m as usize], virtual_nodes_per_worker))
            .collect();
        let total: u64 = counts.iter().map(|&c| u64::from(c)).sum();
        assert!(
            total < u64::from(u32::MAX),
            "a ring of {total} virtual nodes is too large"
        );

        let mut entries: Vec<u64> = Vec::with_capacity(total as usize);
        for (rank, (&m, &count)) in rank_to_member.iter().zip(&counts).enumerate() {
            let prefix = Murmur3Prefix::new(members[m as usize].identity.as_bytes(), HASH_SEED);
            let rank = rank as u64;
            entries.extend((0..count).map(|i| (u64::from(prefix.finish_with_u32(i)) << 32) | rank));
        }
        entries.sort_unstable();
        // Two virtual nodes of one worker on the same hash: keep one (unobservable either way).
        entries.dedup();
        entries.shrink_to_fit();

        let (buckets, shift) = bucket_index(&entries);
        Ring {
            members,
            entries,
            rank_to_member,
            buckets,
            shift,
        }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// How many distinct workers (identities) are on the ring.
    pub fn worker_count(&self) -> usize {
        self.rank_to_member.len()
    }

    /// How many virtual nodes are on the ring (a worker's virtual nodes that hash to the same
    /// value count once).
    pub fn virtual_node_count(&self) -> usize {
        self.entries.len()
    }

    /// Heap bytes the ring's lookup structures take (members' strings excluded).
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * std::mem::size_of::<u64>()
            + self.buckets.capacity() * std::mem::size_of::<u32>()
            + self.rank_to_member.capacity() * std::mem::size_of::<u32>()
    }

    /// Index of the first entry whose hash is `>= hash`, wrapping to 0. The ring is not empty.
    #[inline]
    fn position(&self, hash: u32) -> usize {
        let bucket = (u64::from(hash) >> self.shift) as usize;
        let lo = self.buckets[bucket] as usize;
        let hi = self.buckets[bucket + 1] as usize;
        let probe = u64::from(hash) << 32;
        // Entries of this bucket below the probe form a prefix of it; count them branch-free.
        let below = self.entries[lo..hi].iter().filter(|&&e| e < probe).count();
        let at = lo + below;
        if at == self.entries.len() {
            0
        } else {
            at
        }
    }

    #[inline]
    fn rank_at(&self, position: usize) -> u32 {
        self.entries[position] as u32
    }

    #[inline]
    fn member_of_rank(&self, rank: u32) -> usize {
        self.rank_to_member[rank as usize] as usize
    }

    /// The member owning ring position `hash`: the first virtual node whose hash is `>= hash`
    /// (unsigned), wrapping to the first; `None` on an empty ring.
    pub fn owner_of_hash(&self, hash: u32) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        Some(self.member_of_rank(self.rank_at(self.position(hash))))
    }

    /// The fraction of the 32-bit hash space each member is primary for, indexed like
    /// [`Ring::members`] (0 for a duplicate identity; the shares sum to 1 unless the ring is
    /// empty). With uniformly hashed keys this is each worker's expected share of primaries.
    pub fn hash_space_shares(&self) -> Vec<f64> {
        let mut arcs = vec![0u64; self.members.len()];
        let Some(&last) = self.entries.last() else {
            return vec![0.0; self.members.len()];
        };
        // Keys in (previous hash, this hash] land on this entry; entry 0 also takes the keys
        // above the last hash.
        let mut previous = (last >> 32) as i64 - (1i64 << 32);
        for &e in &self.entries {
            let hash = (e >> 32) as i64;
            arcs[self.member_of_rank(e as u32)] += (hash - previous) as u64;
            previous = hash;
        }
        arcs.iter().map(|&a| a as f64 / (1u64 << 32) as f64).collect()
    }

    /// Up to `count` distinct members for `key`, best first, as indices into [`Ring::members`].
    ///
    /// Returns exactly `min(count, worker_count())` members; `candidates(key, n)` is a prefix of
    /// `candidates(key, n + 1)`, so `candidates(key, members().len())` is a full failover order.
    pub fn candidates(&self, key: &str, count: usize) -> Vec<usize> {
        let target = count.min(self.rank_to_member.len());
        let mut out = Vec::with_capacity(target);
        if target == 0 {
            return out;
        }
        let mut seen = Seen::new(self.rank_to_member.len(), target);
        let prefix = Murmur3Prefix::new(key.as_bytes(), HASH_SEED);
        let mut position = 0;
        for attempt in 0..MAX_ATTEMPTS {
            position = self.position(prefix.finish_with_u32(attempt));
            let rank = self.rank_at(position);
            if seen.insert(rank, &out, self) {
                out.push(self.member_of_rank(rank));
                if out.len() == target {
                    return out;
                }
            }
        }
        // Attempts exhausted: walk clockwise from the last probe's virtual node. Every distinct
        // worker has at least one virtual node, so one lap finds them all.
        let n = self.entries.len();
        for _ in 1..n {
            position += 1;
            if position == n {
                position = 0;
            }
            let rank = self.rank_at(position);
            if seen.insert(rank, &out, self) {
                out.push(self.member_of_rank(rank));
                if out.len() == target {
                    break;
                }
            }
        }
        debug_assert_eq!(out.len(), target);
        out
    }

    /// The first candidate for `key`.
    pub fn primary(&self, key: &str) -> Option<usize> {
        self.owner_of_hash(key_hash(key, 0))
    }
}

/// Picks the bucket bits so that there are 2–4 entries per bucket on average
/// (`bits = floor(log2(n)) - 1`), i.e. 1–2 bytes of index per virtual node.
fn bucket_index(entries: &[u64]) -> (Vec<u32>, u32) {
    let n = entries.len();
    let bits = if n < 4 {
        0
    } else {
        (usize::BITS - 1 - n.leading_zeros()) - 1
    };
    let shift = 32 - bits;
    let bucket_count = 1usize << bits;
    let mut buckets = Vec::with_capacity(bucket_count + 1);
    for (i, &e) in entries.iter().enumerate() {
        let b = ((e >> 32) >> shift) as usize;
        while buckets.len() <= b {
            buckets.push(i as u32);
        }
    }
    buckets.resize(bucket_count + 1, n as u32);
    (buckets, shift)
}

/// Which ranks a candidates list already holds: a scan of the (short) list, or a bitmap.
enum Seen {
    Scan,
    Bits(Vec<u64>),
}

impl Seen {
    fn new(workers: usize, target: usize) -> Seen {
        if target <= 32 {
            Seen::Scan
        } else {
            Seen::Bits(vec![0; workers.div_ceil(64)])
        }
    }

    /// Records `rank`; false if it was there already.
    #[inline]
    fn insert(&mut self, rank: u32, out: &[usize], ring: &Ring) -> bool {
        match self {
            Seen::Scan => {
                let member = ring.member_of_rank(rank);
                !out.contains(&member)
            }
            Seen::Bits(bits) => {
                let (word, bit) = (rank as usize / 64, rank % 64);
                let fresh = bits[word] & (1 << bit) == 0;
                bits[word] |= 1 << bit;
                fresh
            }
        }
    }
}

#[cfg(test)]
mod tests;
