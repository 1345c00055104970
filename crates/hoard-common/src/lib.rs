//! Types shared by every Hoard crate that crosses a process boundary: the normalized
//! [`HoardPath`], the JSON bodies of the worker's HTTP API (`api`), and private files and the
//! cluster secret (`secret`), replica rules (`replica`), and (feature `buffers`) the process's pool of page-aligned read
//! buffers.

pub mod api;
#[cfg(feature = "buffers")]
pub mod buffers;
pub mod path;
pub mod replica;
pub mod secret;

pub use path::{HoardPath, PathError};
