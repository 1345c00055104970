//! Types shared by every Hoard crate that crosses a process boundary: the normalized
//! [`HoardPath`] and the JSON bodies of the worker's HTTP API (`api`).

pub mod api;
pub mod path;

pub use path::{HoardPath, PathError};
