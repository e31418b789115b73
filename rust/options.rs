//! What a `LogitStats` accumulates (`Options`: the Hessian check's mode and the
//! treatment of non-finite rows), and what hessian='exact' costs.

use crate::{Error, Result};

/// Largest K for which the exact K x K Hessian is accumulated (4.3 GB, see
/// `exact_memory_bytes`).
pub const EXACT_MAX_CLASSES: usize = 16_384;

/// Peak memory of hessian='exact' over K classes beyond the plain pass: the
/// accumulated K x K float64 Gram matrix, a second one (a pass's delta before it
/// is merged, or the copy `finalize` decomposes in place), and the block of
/// softmax rows gathered per Gram update.
pub fn exact_memory_bytes(k: usize) -> u64 {
    (k as u64)
        .saturating_mul(k as u64)
        .saturating_mul(16)
        .saturating_add(EXACT_BLOCK_BYTES as u64)
}

/// Bytes of softmax rows gathered per Gram-matrix update in exact mode.
pub(crate) const EXACT_BLOCK_BYTES: usize = 16 * 1024 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HessianMode {
    None,
    Bound,
    Exact,
}

impl HessianMode {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "bound" => Ok(Self::Bound),
            "exact" => Ok(Self::Exact),
            _ => Err(Error::Input(format!(
                "hessian={s:?} is not a mode; use 'bound', 'exact' or 'none'"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Bound => "bound",
            Self::Exact => "exact",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NanPolicy {
    Raise,
    Omit,
}

impl NanPolicy {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "raise" => Ok(Self::Raise),
            "omit" => Ok(Self::Omit),
            _ => Err(Error::Input(format!(
                "nan_policy={s:?} is not a policy; use 'raise' or 'omit'"
            ))),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Self::Raise => "raise",
            Self::Omit => "omit",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub hessian: HessianMode,
    pub nan_policy: NanPolicy,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hessian: HessianMode::Bound,
            nan_policy: NanPolicy::Raise,
        }
    }
}
