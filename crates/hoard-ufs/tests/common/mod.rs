//! Shared test helpers: deterministic file contents and a real moto_server (a local S3).

#![allow(dead_code)]

use futures::StreamExt;

/// Deterministic, position-dependent bytes, so a read at the wrong offset cannot pass.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 31 + i / 251) as u8).wrapping_add(seed))
        .collect()
}

pub fn hoard(raw: &str) -> hoard_common::HoardPath {
    hoard_common::HoardPath::parse(raw).unwrap()
}

/// Drains a listing stream into sorted names (test-sized listings only).
pub async fn names<T, E: std::fmt::Debug>(
    stream: futures::stream::BoxStream<'static, Result<T, E>>,
    name: impl Fn(&T) -> String,
) -> Vec<String> {
    let mut out: Vec<String> = stream.map(|item| name(&item.expect("listing entry"))).collect().await;
    out.sort();
    out
}

#[allow(unused_imports)]
pub use hoard_testkit::Moto;
