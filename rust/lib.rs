//! lort core: streaming per-class statistics of classifier logits.
//!
//! Pure Rust; the PyO3 bindings live in `py.rs` behind the `python` feature so
//! that `cargo test` needs no interpreter.
//!
//! Layers, bottom to top; a module uses only modules on lines above its own
//! (none uses one on its own line or below):
//!
//! 1. `error`, `exp` (the f32 exp)
//! 2. `memory` (`MAX_CLASSES`, fallible allocation)
//! 3. `labels`, `npy`, `options`, `avx2` (x86-64 intrinsics)
//! 4. `kernel` (per-row arithmetic, the one AVX2 dispatch point), `pool`
//!    (threads, `Control`)
//! 5. `stream` (rows, blocks, sources, the dtype decoder, the block scheduler)
//! 6. `stats` (the accumulator `LogitStats`: data, `new`, `merge`)
//! 7. `partial` (the per-worker hot loop), `curvature` (lambda_2, lambda_max)
//! 8. `hessian` (the Proposition 1 verdict), `persist` (`to_bytes`)
//! 9. `pass` (`update`, `pass_rows`, ...), `report` (`finalize`)
//! 10. `py` (the `lort._core` bindings)

#[cfg(target_arch = "x86_64")]
mod avx2;
pub mod curvature;
pub mod error;
mod exp;
pub mod hessian;
mod kernel;
pub mod labels;
pub mod memory;
pub mod npy;
pub mod options;
mod partial;
mod pass;
mod persist;
mod pool;
pub mod report;
pub mod stats;
mod stream;

#[cfg(feature = "python")]
mod py;

pub use error::{Error, Result};
pub use labels::Labels;
pub use pool::{resolve_threads, Control};
pub use stats::{HessianMode, LogitStats, NanPolicy, Options};
pub use stream::Rows;
