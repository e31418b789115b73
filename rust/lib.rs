//! lort core: streaming per-class statistics of classifier logits.
//!
//! Pure Rust; the PyO3 bindings live in `py.rs` behind the `python` feature so
//! that `cargo test` needs no interpreter.

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod curvature;
mod drive;
pub mod error;
pub mod hessian;
mod kernel;
pub mod labels;
pub mod npy;
mod persist;
pub mod report;
pub mod stats;

#[cfg(feature = "python")]
mod py;

pub use drive::{resolve_threads, Control, Rows};
pub use error::{Error, Result};
pub use labels::Labels;
pub use stats::{HessianMode, LogitStats, NanPolicy, Options};
