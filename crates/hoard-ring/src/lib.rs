//! The consistent-hash ring (docs/ring.md). Pure functions and data: no IO.
//!
//! CONTRACT (other crates code against these names; keep them stable):

/// How many virtual nodes each worker gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// Every worker gets `virtual_nodes_per_worker`.
    Default,
    /// `capacity_bytes / 1GiB` virtual nodes (at least 1).
    Capacity,
}

/// A worker as the ring sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The worker identity hashed onto the ring (UUID, or `host:port` for static membership).
    pub identity: String,
    pub capacity_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Ring {
    members: Vec<Member>,
}

impl Ring {
    /// Builds the ring. Member order does not affect placement.
    pub fn build(members: Vec<Member>, virtual_nodes_per_worker: u32, provider: Provider) -> Ring {
        let _ = (virtual_nodes_per_worker, provider);
        Ring { members }
    }

    pub fn members(&self) -> &[Member] {
        &self.members
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Up to `count` distinct members for `key`, best first, as indices into [`Ring::members`].
    pub fn candidates(&self, key: &str, count: usize) -> Vec<usize> {
        let _ = (key, count);
        todo!()
    }

    /// The first candidate for `key`.
    pub fn primary(&self, key: &str) -> Option<usize> {
        self.candidates(key, 1).first().copied()
    }
}
