//! A worker SIGKILLed in the middle of a read: the client finishes from the next candidate
//! and the bytes are exactly the file's.

mod common;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use common::*;
use hoard_client::HoardClient;
use hoard_common::HoardPath;

/// Collects the bytes and SIGKILLs `victim` once `kill_after` bytes have arrived.
struct KillingSink {
    received: Vec<u8>,
    kill_after: usize,
    victim: u32,
    victim_address: String,
    killed: bool,
}

impl tokio::io::AsyncWrite for KillingSink {
    fn poll_write(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.received.extend_from_slice(buf);
        if !self.killed && self.received.len() >= self.kill_after {
            kill9(self.victim);
            let address = self.victim_address.clone();
            wait_until("victim is gone", Duration::from_secs(10), || {
                std::net::TcpStream::connect(&address).is_err()
            });
            self.killed = true;
        }
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_read_finishes_from_next_candidate() {
    let data = content(7, 48 << 20);
    let ufs = tempfile::tempdir().expect("ufs");
    std::fs::write(ufs.path().join("big.bin"), &data).expect("write");
    let cluster = Cluster::start(3, ufs.path(), &[]);
    let primary = cluster.primary_of("/big.bin");

    let config = hoard_config::SiteConfig::load(&cluster.conf)
        .expect("client conf")
        .config;
    let client = HoardClient::connect(&config).await.expect("client");
    let mut sink = KillingSink {
        received: Vec::new(),
        kill_after: 4 << 20,
        victim: primary.pid,
        victim_address: primary.address.clone(),
        killed: false,
    };
    let path = HoardPath::parse("/big.bin").expect("path");
    let read = client
        .read_to(&path, None, &mut sink)
        .await
        .expect("read survives the kill");
    assert!(sink.killed, "the primary was killed mid-read");
    assert_eq!(read, data.len() as u64);
    assert!(sink.received == data, "bytes after failover differ from the file");

    // With every worker gone, the error names each worker tried and why.
    for process in cluster.processes() {
        kill9(process.pid);
    }
    let mut sink = Vec::new();
    let error = client
        .read_to(&path, None, &mut sink)
        .await
        .expect_err("no worker left");
    let message = error.to_string();
    for process in cluster.processes() {
        assert!(
            message.contains(&process.address),
            "{message} names {}",
            process.address
        );
    }
}
