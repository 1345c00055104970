//! The accept loop: every connection takes a slot in the listener's table (closing the
//! longest-waiting idle one past the cap, or refusing the new one), and running out of
//! descriptors neither spins nor leaves clients waiting in the backlog.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::table::{Claim, ConnectionTable};

/// What a connection refused for the cap is answered, if its socket takes it at once.
static TOO_MANY_CONNECTIONS: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"error":"too many connections; retry later","code":"TOO_MANY_CONNECTIONS"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         retry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Accepts connections on `listener` forever, handing each with its slot to `dispatch`.
/// Runs the table's sweeper on the current runtime.
pub async fn accept_loop(
    listener: TcpListener,
    table: Arc<ConnectionTable>,
    mut dispatch: impl FnMut(TcpStream, Claim),
) {
    table.start_sweeper();
    let mut spare = spare_descriptor();
    loop {
        match listener.accept().await {
            Ok((stream, _)) => match table.admit(stream.as_raw_fd()) {
                Some(claim) => dispatch(stream, claim),
                None => refuse(stream, &table),
            },
            Err(err) => accept_failed(&listener, &table, &mut spare, err).await,
        }
    }
}

/// Answers 503 when the socket takes it without waiting, and closes.
fn refuse(stream: TcpStream, table: &ConnectionTable) {
    let _ = stream.try_write(&TOO_MANY_CONNECTIONS);
    if table.may_warn() {
        let stats = table.stats();
        tracing::warn!(
            listener = table.name(),
            cap = table.cap(),
            refused = stats.refused,
            evicted = stats.evicted,
            "connection limit reached and no connection is idle: refusing new connections"
        );
    }
}

async fn accept_failed(
    listener: &TcpListener,
    table: &ConnectionTable,
    spare: &mut Option<OwnedFd>,
    err: std::io::Error,
) {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE) => {
            if table.may_warn() {
                tracing::warn!(listener = table.name(), error = %err, "out of file descriptors: closing idle connections, refusing new ones");
            }
            // The pending connection stays in the backlog and the listener stays readable:
            // without making room, the next accept fails at once again.
            if table.evict_longest_waiting() {
                // Its descriptor closes when its task notices.
                tokio::time::sleep(Duration::from_millis(1)).await;
                return;
            }
            // Nothing to close: refuse the waiting client with the spare descriptor, so it
            // fails at once instead of waiting in the backlog.
            if let Some(descriptor) = spare.take() {
                drop(descriptor);
                refuse_one(listener);
                *spare = spare_descriptor();
            }
            if spare.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Some(libc::ENOBUFS | libc::ENOMEM) => {
            if table.may_warn() {
                tracing::warn!(listener = table.name(), error = %err, "accept failed");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The client gave up before it was accepted, and the like.
        _ => tracing::debug!(listener = table.name(), error = %err, "accept failed"),
    }
}

/// A descriptor kept open to be given up when the process has no other.
fn spare_descriptor() -> Option<OwnedFd> {
    std::fs::File::open("/dev/null").ok().map(OwnedFd::from)
}

/// Accepts one pending connection and closes it at once.
fn refuse_one(listener: &TcpListener) {
    // SAFETY: accept4 on the listening socket we own, with no address out-parameters.
    let fd = unsafe {
        libc::accept4(
            listener.as_raw_fd(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    };
    if fd >= 0 {
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

/// Raises the soft open-file limit to the hard one, as servers do (nginx's
/// `worker_rlimit_nofile`, Go's runtime): connections and a worker's page files take
/// descriptors, and the usual soft default of 1024 is far below what a server needs. Returns
/// the soft limit now in force (0 when it cannot be read).
pub fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    if limit.rlim_cur >= limit.rlim_max {
        return limit.rlim_cur;
    }
    let before = limit.rlim_cur;
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: as above.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        tracing::warn!(soft = before, hard = limit.rlim_max, error = %std::io::Error::last_os_error(), "cannot raise the open-file limit");
        return before;
    }
    tracing::info!(from = before, to = limit.rlim_max, "raised the open-file limit");
    limit.rlim_cur
}

/// `configured`, lowered to `1/share` of the open-file limit (with a log line saying so), so
/// connections leave descriptors for everything else.
pub fn connection_cap(name: &str, configured: u32, share: u64) -> usize {
    let soft = raise_open_file_limit();
    let configured = configured as usize;
    if soft == 0 || soft == libc::RLIM_INFINITY {
        return configured;
    }
    let budget = usize::try_from(soft / share.max(1)).unwrap_or(usize::MAX).max(1);
    if configured > budget {
        tracing::info!(
            listener = name,
            configured,
            cap = budget,
            open_file_limit = soft,
            "max connections lowered to 1/{share} of the open-file limit"
        );
        return budget;
    }
    configured
}
