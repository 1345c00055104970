use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Cursor;

use proptest::prelude::*;

use super::*;

const GIB: u64 = 1 << 30;

fn members(ids: &[&str]) -> Vec<Member> {
    ids.iter().map(|id| Member::new(*id)).collect()
}

fn workers(n: usize) -> Vec<Member> {
    (0..n).map(|i| Member::new(format!("worker-{i:04}"))).collect()
}

/// Calls `f` with each of `n` distinct, path-like keys (reusing one buffer).
fn for_paths(n: usize, mut f: impl FnMut(&str)) {
    let mut path = String::with_capacity(64);
    for i in 0..n {
        path.clear();
        write!(path, "/warehouse/t{}/dt=2024-{:02}/part-{i:07}.parquet", i % 37, i % 12).unwrap();
        f(&path);
    }
}

/// How many of `paths` paths each member is primary for.
fn primary_counts(ring: &Ring, paths: usize) -> Vec<usize> {
    let mut counts = vec![0; ring.members().len()];
    for_paths(paths, |p| counts[ring.primary(p).unwrap()] += 1);
    counts
}

fn max_over_mean(counts: &[usize]) -> f64 {
    let max = *counts.iter().max().unwrap() as f64;
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    max / mean
}

fn identities(ring: &Ring, picks: &[usize]) -> Vec<String> {
    picks.iter().map(|&i| ring.members()[i].identity.clone()).collect()
}

// ---- reference implementations (slow and obvious) ------------------------------------------

/// The ring as a sorted list of (hash, identity), candidates by the letter of docs/ring.md.
struct Reference {
    vnodes: Vec<(u32, String)>,
    workers: usize,
}

impl Reference {
    fn build(members: &[Member], per_worker: u32, provider: Provider) -> Reference {
        let mut seen = BTreeSet::new();
        let mut vnodes = Vec::new();
        for m in members {
            if !seen.insert(m.identity.clone()) {
                continue;
            }
            for i in 0..provider.virtual_nodes(m, per_worker) {
                let mut bytes = m.identity.as_bytes().to_vec();
                bytes.extend_from_slice(&i.to_le_bytes());
                let h = murmur3::murmur3_32(&mut Cursor::new(bytes), 0).unwrap();
                vnodes.push((h, m.identity.clone()));
            }
        }
        vnodes.sort();
        vnodes.dedup();
        Reference {
            vnodes,
            workers: seen.len(),
        }
    }

    fn position(&self, h: u32) -> usize {
        self.vnodes.iter().position(|(vh, _)| *vh >= h).unwrap_or(0)
    }

    fn candidates(&self, key: &str, count: usize) -> Vec<String> {
        let target = count.min(self.workers);
        let mut out: Vec<String> = Vec::new();
        if target == 0 {
            return out;
        }
        let mut pos = 0;
        for attempt in 0..MAX_ATTEMPTS {
            let mut bytes = key.as_bytes().to_vec();
            bytes.extend_from_slice(&attempt.to_le_bytes());
            let h = murmur3::murmur3_32(&mut Cursor::new(bytes), 0).unwrap();
            pos = self.position(h);
            let id = &self.vnodes[pos].1;
            if !out.contains(id) {
                out.push(id.clone());
                if out.len() == target {
                    return out;
                }
            }
        }
        while out.len() < target {
            pos = (pos + 1) % self.vnodes.len();
            let id = &self.vnodes[pos].1;
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        out
    }
}

/// Alluxio's shape: a map ordered as Java `Integer`s (signed), `ceilingEntry` else `firstEntry`;
/// on a hash collision the smaller identity is kept.
struct SignedMapRing(BTreeMap<i32, String>);

impl SignedMapRing {
    fn build(members: &[Member], per_worker: u32) -> SignedMapRing {
        let mut map: BTreeMap<i32, String> = BTreeMap::new();
        for m in members {
            for i in 0..per_worker {
                let h = vnode_hash(&m.identity, i) as i32;
                match map.get(&h) {
                    Some(existing) if existing <= &m.identity => {}
                    _ => {
                        map.insert(h, m.identity.clone());
                    }
                }
            }
        }
        SignedMapRing(map)
    }

    fn get(&self, key: &str, attempt: u32) -> &str {
        let h = key_hash(key, attempt) as i32;
        self.0
            .range(h..)
            .next()
            .or_else(|| self.0.iter().next())
            .map(|(_, id)| id.as_str())
            .unwrap()
    }
}

// ---- murmur3 -------------------------------------------------------------------------------

fn crate_murmur(bytes: &[u8]) -> u32 {
    murmur3::murmur3_32(&mut Cursor::new(bytes), 0).unwrap()
}

#[test]
fn murmur3_known_values() {
    // Published murmur3_x86_32 values (seed 0).
    assert_eq!(murmur3_32(b"", 0), 0);
    assert_eq!(murmur3_32(b"", 1), 0x514e_28b7);
    assert_eq!(murmur3_32(b"hello", 0), 0x248b_fa47);
    assert_eq!(murmur3_32(b"hello world", 0), 0x5e92_8f0f);
    assert_eq!(
        murmur3_32(b"The quick brown fox jumps over the lazy dog", 0),
        0x2e4f_f723
    );
}

proptest! {
    #[test]
    fn murmur3_matches_the_crate(bytes in prop::collection::vec(any::<u8>(), 0..64), seed in any::<u32>()) {
        let expected = murmur3::murmur3_32(&mut Cursor::new(&bytes), seed).unwrap();
        prop_assert_eq!(murmur3_32(&bytes, seed), expected);
    }

    #[test]
    fn prefix_plus_u32_matches_the_crate(key in "\\PC{0,24}", x in any::<u32>()) {
        let mut bytes = key.as_bytes().to_vec();
        bytes.extend_from_slice(&x.to_le_bytes());
        let expected = crate_murmur(&bytes);
        prop_assert_eq!(key_hash(&key, x), expected);
        prop_assert_eq!(vnode_hash(&key, x), expected);
    }
}

// ---- test vectors (also in docs/ring.md) ---------------------------------------------------

#[test]
fn test_vectors() {
    assert_eq!(murmur3_32(b"worker-a", 0), 0x3a8c_8468);
    assert_eq!(vnode_hash("worker-a", 0), 0xc93b_4bf1);
    assert_eq!(vnode_hash("worker-a", 1), 0x9319_e4ee);
    assert_eq!(vnode_hash("worker-b", 0), 0x52e8_726f);
    assert_eq!(vnode_hash("worker-c", 1999), 0x72c2_31d8);
    assert_eq!(key_hash("/a/b.parquet", 0), 0x7869_7f4d);
    assert_eq!(key_hash("/a/b.parquet", 1), 0xfabf_ee22);
    assert_eq!(key_hash("s3://bucket/data/part-00000.parquet", 0), 0xd3fd_35dc);
    // A collision between two workers: the smaller identity owns the position.
    assert_eq!(vnode_hash("worker-a", 1607), 0xbff4_7d22);
    assert_eq!(vnode_hash("worker-b", 50500), 0xbff4_7d22);

    let ring = Ring::build(members(&["worker-a", "worker-b", "worker-c"]), 100, Provider::Default);
    assert_eq!(ring.virtual_node_count(), 300);
    let expected: [(&str, [usize; 3]); 8] = [
        ("/a/b.parquet", [2, 0, 1]),
        ("/data/part-0", [1, 0, 2]),
        ("/data/part-1", [1, 2, 0]),
        ("/data/part-2", [1, 2, 0]),
        ("s3://bucket/x", [1, 2, 0]),
        ("/", [1, 0, 2]),
        ("", [2, 1, 0]),
        ("/éè/文件", [0, 1, 2]),
    ];
    for (key, want) in expected {
        assert_eq!(ring.candidates(key, 3), want, "candidates of {key:?}");
        assert_eq!(ring.primary(key), Some(want[0]), "primary of {key:?}");
    }
}

#[test]
fn test_vector_fallback_walk() {
    // 150 workers x 3 vnodes: 100 probes find fewer than 150, the walk finds the rest.
    let ring = Ring::build(workers(150), 3, Provider::Default);
    let all = ring.candidates("/a/b.parquet", 150);
    assert_eq!(all[..10], [131, 36, 117, 14, 108, 107, 128, 32, 110, 28]);
    assert_eq!(all[145..], [74, 3, 115, 21, 139]);
}

#[test]
fn collision_goes_to_the_smaller_identity_in_any_order() {
    let h = vnode_hash("worker-a", 1607);
    assert_eq!(h, vnode_hash("worker-b", 50500));
    let a = Member::with_capacity("worker-a", 1608 * GIB); // vnodes 0..=1607
    let b = Member::with_capacity("worker-b", 50501 * GIB); // vnodes 0..=50500
    for ms in [vec![a.clone(), b.clone()], vec![b, a]] {
        let ring = Ring::build(ms, 0, Provider::Capacity);
        let owner = ring.owner_of_hash(h).unwrap();
        assert_eq!(ring.members()[owner].identity, "worker-a");
        // The loser's virtual node stays on the ring (it only matters to the fallback walk).
        assert!(ring.virtual_node_count() > 1608 + 50501 - 5);
    }
}

// ---- basic behaviour -----------------------------------------------------------------------

#[test]
fn empty_ring() {
    let ring = Ring::build(Vec::new(), 2000, Provider::Default);
    assert!(ring.is_empty());
    assert!(ring.candidates("/x", 3).is_empty());
    assert_eq!(ring.primary("/x"), None);
    assert_eq!(ring.owner_of_hash(0), None);
    assert_eq!(ring.virtual_node_count(), 0);
}

#[test]
fn count_zero_and_count_beyond_members() {
    let ring = Ring::build(members(&["a", "b", "c"]), 50, Provider::Default);
    assert!(ring.candidates("/x", 0).is_empty());
    let all = ring.candidates("/x", 10);
    assert_eq!(all.len(), 3);
    assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 3);
}

#[test]
fn single_member_single_vnode() {
    let ring = Ring::build(members(&["only"]), 1, Provider::Default);
    for key in ["", "/a", "/b/c"] {
        assert_eq!(ring.candidates(key, 5), vec![0]);
        assert_eq!(ring.primary(key), Some(0));
    }
    // Zero virtual nodes per worker is taken as one.
    let ring = Ring::build(members(&["a", "b"]), 0, Provider::Default);
    assert_eq!(ring.virtual_node_count(), 2);
    assert_eq!(ring.candidates("/k", 2).len(), 2);
}

#[test]
fn duplicate_identities_are_one_worker() {
    let ring = Ring::build(members(&["a", "b", "a"]), 20, Provider::Default);
    assert_eq!(ring.worker_count(), 2);
    assert_eq!(ring.virtual_node_count(), 40);
    for_paths(200, |p| {
        let c = ring.candidates(p, 3);
        assert_eq!(c.len(), 2);
        assert!(!c.contains(&2), "the later duplicate never appears");
    });
}

#[test]
fn provider_virtual_nodes() {
    let m = |cap| Member::with_capacity("w", cap);
    assert_eq!(Provider::Default.virtual_nodes(&m(0), 2000), 2000);
    assert_eq!(Provider::Default.virtual_nodes(&m(0), 0), 1);
    assert_eq!(Provider::Capacity.virtual_nodes(&m(0), 2000), 1);
    assert_eq!(Provider::Capacity.virtual_nodes(&m(GIB - 1), 2000), 1);
    assert_eq!(Provider::Capacity.virtual_nodes(&m(GIB * 3 / 2), 2000), 1);
    assert_eq!(Provider::Capacity.virtual_nodes(&m(2 * GIB), 2000), 2);
    assert_eq!(Provider::Capacity.virtual_nodes(&m(500 * GIB), 7), 500);
    assert_eq!(
        Provider::Capacity.virtual_nodes(&m(u64::MAX), 7),
        MAX_VIRTUAL_NODES_PER_WORKER
    );
    assert_eq!(
        Provider::Default.virtual_nodes(&m(0), u32::MAX),
        MAX_VIRTUAL_NODES_PER_WORKER
    );
}

#[test]
fn provider_parses() {
    assert_eq!("DEFAULT".parse::<Provider>(), Ok(Provider::Default));
    assert_eq!(" capacity ".parse::<Provider>(), Ok(Provider::Capacity));
    assert_eq!("Capacity".parse::<Provider>(), Ok(Provider::Capacity));
    assert!("ketama".parse::<Provider>().is_err());
    assert_eq!(Provider::Capacity.to_string(), "CAPACITY");
    assert_eq!(Provider::default(), Provider::Default);
}

#[test]
fn hash_space_shares() {
    assert!(Ring::build(Vec::new(), 5, Provider::Default)
        .hash_space_shares()
        .is_empty());
    assert_eq!(
        Ring::build(members(&["a"]), 1, Provider::Default).hash_space_shares(),
        vec![1.0]
    );
    let ring = Ring::build(members(&["a", "b", "a", "c"]), 50, Provider::Default);
    let shares = ring.hash_space_shares();
    assert_eq!(shares[2], 0.0);
    assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // Two virtual nodes, placed by hand: check the arcs against the definition.
    let ring = Ring::build(members(&["x", "y"]), 1, Provider::Default);
    let (hx, hy) = (vnode_hash("x", 0) as f64, vnode_hash("y", 0) as f64);
    let space = (1u64 << 32) as f64;
    let (lo, hi) = if hx < hy { (0, 1) } else { (1, 0) };
    let (low, high) = (hx.min(hy), hx.max(hy));
    let shares = ring.hash_space_shares();
    assert!((shares[hi] - (high - low) / space).abs() < 1e-12);
    assert!((shares[lo] - (space - high + low) / space).abs() < 1e-12);
}

#[test]
fn memory_is_small() {
    let ring = Ring::build(workers(10), 2000, Provider::Default);
    let per_vnode = ring.memory_bytes() as f64 / ring.virtual_node_count() as f64;
    println!("bytes per virtual node at 10 x 2000: {per_vnode:.2}");
    assert!(per_vnode < 11.0, "{per_vnode}");
}

#[test]
fn fallback_walk_returns_every_member() {
    // 150 workers: 100 probes cannot find them all, so the walk must.
    let ms = workers(150);
    let ring = Ring::build(ms.clone(), 3, Provider::Default);
    let reference = Reference::build(&ms, 3, Provider::Default);
    for_paths(20, |p| {
        let all = ring.candidates(p, ms.len());
        assert_eq!(all.len(), ms.len());
        assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), ms.len());
        assert_eq!(identities(&ring, &all), reference.candidates(p, ms.len()));
        for n in [1, 2, 31, 32, 33, 100, 149] {
            assert_eq!(ring.candidates(p, n), all[..n]);
        }
    });
}

#[test]
fn lone_vnode_that_loses_a_collision_is_still_a_candidate() {
    // z33028's only virtual node sits exactly on one of worker-a's and loses the tie, so no
    // probe ever lands on z33028; only the fallback walk reaches it.
    let h = vnode_hash("z33028", 0);
    assert_eq!(h, 0x109f_6b69);
    assert_eq!(vnode_hash("worker-a", 81972), h);
    let ring = Ring::build(
        vec![
            Member::with_capacity("z33028", 0),
            Member::with_capacity("worker-a", 81973 * GIB),
        ],
        0,
        Provider::Capacity,
    );
    assert_eq!(ring.owner_of_hash(h), Some(1));
    for_paths(50, |p| {
        assert_eq!(ring.primary(p), Some(1));
        assert_eq!(ring.candidates(p, 2), vec![1, 0]);
    });
}

// ---- properties ----------------------------------------------------------------------------

fn identity_set() -> impl Strategy<Value = Vec<String>> {
    prop::collection::btree_set("[a-z0-9:.-]{1,12}", 1..12).prop_map(|s| s.into_iter().collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_the_reference(
        ids in identity_set(),
        vnodes in 1u32..40,
        caps in prop::collection::vec(0u64..40, 12),
        capacity in any::<bool>(),
        keys in prop::collection::vec("\\PC{0,30}", 1..8),
    ) {
        let provider = if capacity { Provider::Capacity } else { Provider::Default };
        let ms: Vec<Member> = ids
            .iter()
            .zip(&caps)
            .map(|(id, c)| Member::with_capacity(id.clone(), c * GIB))
            .collect();
        let ring = Ring::build(ms.clone(), vnodes, provider);
        let reference = Reference::build(&ms, vnodes, provider);
        prop_assert_eq!(ring.virtual_node_count(), reference.vnodes.len());
        for key in &keys {
            for count in [1, 2, 3, ms.len()] {
                prop_assert_eq!(
                    identities(&ring, &ring.candidates(key, count)),
                    reference.candidates(key, count)
                );
            }
        }
    }

    #[test]
    fn unsigned_order_equals_javas_signed_order(
        ids in identity_set(),
        vnodes in 1u32..30,
        keys in prop::collection::vec("\\PC{0,30}", 1..8),
    ) {
        let ms: Vec<Member> = ids.iter().map(Member::new).collect();
        let ring = Ring::build(ms.clone(), vnodes, Provider::Default);
        let signed = SignedMapRing::build(&ms, vnodes);
        for key in &keys {
            for attempt in [0, 1, 2, 99] {
                let owner = ring.owner_of_hash(key_hash(key, attempt)).unwrap();
                prop_assert_eq!(ring.members()[owner].identity.as_str(), signed.get(key, attempt));
            }
        }
    }

    #[test]
    fn member_order_does_not_matter(
        ids in identity_set().prop_shuffle(),
        vnodes in 1u32..50,
        keys in prop::collection::vec("\\PC{0,30}", 1..8),
    ) {
        let ms: Vec<Member> = ids.iter().map(Member::new).collect();
        let mut sorted = ms.clone();
        sorted.sort_by(|a, b| a.identity.cmp(&b.identity));
        let shuffled = Ring::build(ms.clone(), vnodes, Provider::Default);
        let canonical = Ring::build(sorted, vnodes, Provider::Default);
        let again = Ring::build(ms.clone(), vnodes, Provider::Default);
        for key in &keys {
            let n = ms.len();
            prop_assert_eq!(
                identities(&shuffled, &shuffled.candidates(key, n)),
                identities(&canonical, &canonical.candidates(key, n))
            );
            prop_assert_eq!(shuffled.candidates(key, n), again.candidates(key, n));
        }
    }

    #[test]
    fn candidates_are_distinct_and_prefixes(
        ids in identity_set(),
        vnodes in 1u32..20,
        key in "\\PC{0,30}",
    ) {
        let ms: Vec<Member> = ids.iter().map(Member::new).collect();
        let ring = Ring::build(ms.clone(), vnodes, Provider::Default);
        let all = ring.candidates(&key, ms.len() + 3);
        prop_assert_eq!(all.len(), ms.len());
        prop_assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), ms.len());
        prop_assert_eq!(ring.primary(&key), Some(all[0]));
        for n in 0..=ms.len() {
            prop_assert_eq!(&ring.candidates(&key, n)[..], &all[..n]);
        }
    }

    #[test]
    fn adding_moves_only_to_the_new_worker(
        ids in identity_set(),
        new_id in "[A-Z]{1,8}",
        vnodes in 1u32..50,
        keys in prop::collection::vec("\\PC{0,30}", 1..16),
    ) {
        let ms: Vec<Member> = ids.iter().map(Member::new).collect();
        let before = Ring::build(ms.clone(), vnodes, Provider::Default);
        let mut grown = ms.clone();
        grown.push(Member::new(new_id));
        let after = Ring::build(grown, vnodes, Provider::Default);
        for key in &keys {
            let (old, new) = (before.primary(key).unwrap(), after.primary(key).unwrap());
            prop_assert!(new == old || new == ms.len());
        }
    }

    #[test]
    fn removing_moves_only_the_removed_workers_keys(
        ids in identity_set().prop_filter("two or more", |ids| ids.len() >= 2),
        vnodes in 1u32..50,
        keys in prop::collection::vec("\\PC{0,30}", 1..16),
    ) {
        let ms: Vec<Member> = ids.iter().map(Member::new).collect();
        let before = Ring::build(ms.clone(), vnodes, Provider::Default);
        let after = Ring::build(ms[1..].to_vec(), vnodes, Provider::Default);
        for key in &keys {
            let old = before.primary(key).unwrap();
            let new = after.primary(key).unwrap() + 1;
            prop_assert!(old == 0 || new == old);
        }
    }
}

// ---- distribution at scale -----------------------------------------------------------------

#[test]
fn fair_share_10_and_100_workers() {
    for n in [10, 100] {
        let ring = Ring::build(workers(n), DEFAULT_VIRTUAL_NODES_PER_WORKER, Provider::Default);
        let counts = primary_counts(&ring, 1_000_000);
        let ratio = max_over_mean(&counts);
        let min = *counts.iter().min().unwrap() as f64 / (1_000_000.0 / n as f64);
        let shares = ring.hash_space_shares();
        let space_max = shares.iter().cloned().fold(0.0, f64::max) * n as f64;
        let space_min = shares.iter().cloned().fold(1.0, f64::min) * n as f64;
        println!(
            "{n} workers x 2000 vnodes, 1M paths: max/mean {ratio:.4}, min/mean {min:.4}; \
             hash space: max/mean {space_max:.4}, min/mean {space_min:.4}"
        );
        assert!(ratio < 1.2, "max/mean {ratio} with {n} workers");
        assert!(min > 0.8, "min/mean {min} with {n} workers");
        assert!(space_max < 1.15, "hash-space max/mean {space_max} with {n} workers");
        // Sampled shares track the hash-space shares.
        for (count, share) in counts.iter().zip(&shares) {
            let sampled = *count as f64 / 1_000_000.0;
            assert!((sampled - share).abs() < 0.006, "sampled {sampled}, hash space {share}");
        }
    }
}

#[test]
fn adding_a_worker_moves_about_one_in_n_plus_one() {
    const PATHS: usize = 200_000;
    for n in [10, 100] {
        let ms = workers(n);
        let before = Ring::build(ms.clone(), DEFAULT_VIRTUAL_NODES_PER_WORKER, Provider::Default);
        let mut grown = ms.clone();
        grown.push(Member::new("worker-new"));
        let after = Ring::build(grown, DEFAULT_VIRTUAL_NODES_PER_WORKER, Provider::Default);
        let (mut moved, mut between_old) = (0usize, 0usize);
        for_paths(PATHS, |p| {
            let (old, new) = (before.primary(p).unwrap(), after.primary(p).unwrap());
            if old != new {
                moved += 1;
                if new != n {
                    between_old += 1;
                }
            }
        });
        let fraction = moved as f64 / PATHS as f64;
        let expected = 1.0 / (n + 1) as f64;
        println!("add to {n}: moved {fraction:.4} (expected {expected:.4}), between old {between_old}");
        assert_eq!(between_old, 0);
        assert!(
            (fraction - expected).abs() < expected * 0.2,
            "moved {fraction}, expected {expected}"
        );
    }
}

#[test]
fn removing_a_worker_moves_only_its_paths() {
    const PATHS: usize = 200_000;
    let n = 10;
    let ms = workers(n);
    let removed = 3;
    let before = Ring::build(ms.clone(), DEFAULT_VIRTUAL_NODES_PER_WORKER, Provider::Default);
    let mut shrunk = ms.clone();
    shrunk.remove(removed);
    let after = Ring::build(shrunk, DEFAULT_VIRTUAL_NODES_PER_WORKER, Provider::Default);
    let mut moved = 0usize;
    for_paths(PATHS, |p| {
        let old = before.primary(p).unwrap();
        let new = after.primary(p).unwrap();
        let new = if new >= removed { new + 1 } else { new };
        if old == removed {
            moved += 1;
            assert_ne!(new, removed);
        } else {
            assert_eq!(new, old, "{p} moved from a surviving worker");
        }
    });
    let fraction = moved as f64 / PATHS as f64;
    println!("remove 1 of {n}: moved {fraction:.4} (expected {:.4})", 1.0 / n as f64);
    assert!((fraction - 0.1).abs() < 0.02, "{fraction}");
}

#[test]
fn capacity_provider_gives_proportional_shares() {
    const PATHS: usize = 200_000;
    let caps = [1000u64, 2000, 4000, 1000];
    let ms: Vec<Member> = caps
        .iter()
        .enumerate()
        .map(|(i, c)| Member::with_capacity(format!("worker-{i}"), c * GIB + GIB / 2))
        .collect();
    let ring = Ring::build(ms, 7, Provider::Capacity);
    assert_eq!(ring.virtual_node_count(), 8000);
    let counts = primary_counts(&ring, PATHS);
    let total_cap: u64 = caps.iter().sum();
    for (count, cap) in counts.iter().zip(caps) {
        let share = *count as f64 / PATHS as f64;
        let expected = cap as f64 / total_cap as f64;
        println!("capacity {cap} GiB: share {share:.4} (expected {expected:.4})");
        assert!(
            (share / expected - 1.0).abs() < 0.15,
            "share {share}, expected {expected}"
        );
    }
}

#[test]
fn ring_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_send_sync::<Ring>();
    let debug = format!("{:?}", Ring::build(members(&["a"]), 3, Provider::Default));
    assert!(debug.contains("virtual_nodes: 3"), "{debug}");
}
