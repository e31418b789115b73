//! One error type for the whole core. Each variant maps to one Python exception
//! class in `py.rs` (see `python/lort/errors.py`).

use std::fmt;

#[derive(Debug)]
pub enum Error {
    /// Bad arguments: shapes, dtypes, options, incompatible accumulators.
    Input(String),
    /// A label outside `[0, K)` or a labels/logits length mismatch.
    Label(String),
    /// NaN or Inf in the logits under `nan_policy = "raise"`.
    NonFinite(String),
    /// The `.npy` header or layout is not one the reader accepts.
    Format(String),
    /// The `.npy` file holds fewer data bytes than its header promises.
    Truncated(String),
    /// An operating-system error while reading a file.
    Io(String),
    /// The caller asked to stop (Ctrl-C).
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Input(m)
            | Error::Label(m)
            | Error::NonFinite(m)
            | Error::Format(m)
            | Error::Truncated(m)
            | Error::Io(m) => f.write_str(m),
            Error::Interrupted => f.write_str("interrupted"),
        }
    }
}

impl std::error::Error for Error {}
