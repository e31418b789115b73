//! The per-class accumulator: what one pass over (logits, labels) collects and
//! how two accumulators merge exactly. The hot loop that fills one is in
//! `partial.rs`, the passes in `pass.rs`, pickling in `persist.rs` and the
//! metrics in `report.rs`.
//!
//! Moments are kept in Welford form (count, mean, M2) and merged with Chan's
//! formula, so shards, threads and DDP ranks combine in any order.

use crate::memory::{check_classes, copy, zeros};
pub use crate::options::{exact_memory_bytes, HessianMode, NanPolicy, Options, EXACT_MAX_CLASSES};
use crate::{Error, Result};

/// Number of equal-width confidence bins of the expected calibration error.
pub const ECE_BINS: usize = 15;

/// Per-class count, mean and sum of squared deviations. Not `Clone`: copies are
/// made by `try_clone`, which reports an allocation the system refuses.
#[derive(Debug, PartialEq)]
pub struct Moments {
    pub n: Vec<u64>,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl Moments {
    pub fn new(k: usize) -> Result<Self> {
        let what = "the per-class moments";
        Ok(Self {
            n: zeros(k, what)?,
            mean: zeros(k, what)?,
            m2: zeros(k, what)?,
        })
    }

    pub fn try_clone(&self) -> Result<Self> {
        let what = "a copy of the per-class moments";
        Ok(Self {
            n: copy(&self.n, what)?,
            mean: copy(&self.mean, what)?,
            m2: copy(&self.m2, what)?,
        })
    }

    /// Chan et al.'s pairwise update: folds (n, mean, m2) into class `j`.
    #[inline]
    pub fn merge_one(&mut self, j: usize, n: u64, mean: f64, m2: f64) {
        if n == 0 {
            return;
        }
        let na = self.n[j];
        if na == 0 {
            (self.n[j], self.mean[j], self.m2[j]) = (n, mean, m2);
            return;
        }
        let total = na + n;
        let delta = mean - self.mean[j];
        let (fa, fb) = (na as f64, n as f64);
        self.mean[j] += delta * fb / total as f64;
        self.m2[j] += m2 + delta * delta * fa * fb / total as f64;
        self.n[j] = total;
    }

    pub fn merge(&mut self, other: &Moments) {
        for j in 0..self.n.len() {
            self.merge_one(j, other.n[j], other.mean[j], other.m2[j]);
        }
    }

    /// Population standard deviation (ddof = 0); NaN without samples.
    pub fn std(&self, j: usize) -> f64 {
        if self.n[j] == 0 {
            f64::NAN
        } else {
            (self.m2[j] / self.n[j] as f64).sqrt()
        }
    }

    pub fn mean_or_nan(&self, j: usize) -> f64 {
        if self.n[j] == 0 {
            f64::NAN
        } else {
            self.mean[j]
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct EceBin {
    pub count: u64,
    pub confidence: f64,
    pub correct: u64,
}

/// Bin of a top-1 confidence in (0, 1]: bin b holds (b/15, (b+1)/15].
#[inline]
pub fn ece_bin(conf: f64) -> usize {
    ((conf * ECE_BINS as f64).ceil() as usize).clamp(1, ECE_BINS) - 1
}

/// What the Hessian check accumulates, per mode.
#[derive(Debug, PartialEq)]
pub enum HessianState {
    None,
    /// Sums over rows of s_i (1 - sum_j s_j) (the Gershgorin lower bound of row
    /// i) and of s_i (the scale rounding errors are relative to).
    Bound {
        gershgorin: Vec<f64>,
        psum: Vec<f64>,
    },
    /// Sums over rows of s, of s_i (1 - s_i) (the diagonal of H, computed
    /// without cancellation) and of s s^T (K x K, column-major, lower triangle
    /// kept; its diagonal is not used).
    Exact {
        ssum: Vec<f64>,
        dsum: Vec<f64>,
        gram: Vec<f64>,
    },
}

impl HessianState {
    pub fn new(mode: HessianMode, k: usize) -> Result<Self> {
        let what = "the Hessian check";
        Ok(match mode {
            HessianMode::None => Self::None,
            HessianMode::Bound => Self::Bound {
                gershgorin: zeros(k, what)?,
                psum: zeros(k, what)?,
            },
            HessianMode::Exact => Self::Exact {
                ssum: zeros(k, what)?,
                dsum: zeros(k, what)?,
                gram: zeros(k * k, "the K x K matrix of hessian='exact'")?,
            },
        })
    }

    fn try_clone(&self) -> Result<Self> {
        let what = "a copy of the Hessian check";
        Ok(match self {
            Self::None => Self::None,
            Self::Bound { gershgorin, psum } => Self::Bound {
                gershgorin: copy(gershgorin, what)?,
                psum: copy(psum, what)?,
            },
            Self::Exact { ssum, dsum, gram } => Self::Exact {
                ssum: copy(ssum, what)?,
                dsum: copy(dsum, what)?,
                gram: copy(gram, "a copy of the K x K matrix of hessian='exact'")?,
            },
        })
    }

    fn merge(&mut self, other: &HessianState) {
        fn add(a: &mut [f64], b: &[f64]) {
            a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        match (self, other) {
            (
                Self::Bound { gershgorin, psum },
                Self::Bound {
                    gershgorin: g,
                    psum: p,
                },
            ) => {
                add(gershgorin, g);
                add(psum, p);
            }
            (
                Self::Exact { ssum, dsum, gram },
                Self::Exact {
                    ssum: s,
                    dsum: d,
                    gram: g,
                },
            ) => {
                add(ssum, s);
                add(dsum, d);
                add(gram, g);
            }
            _ => {}
        }
    }
}

/// The accumulator behind `lort._core.LogitStats`. Not `Clone`: see `try_clone`.
#[derive(Debug, PartialEq)]
pub struct LogitStats {
    pub k: usize,
    pub options: Options,
    /// Rows counted (finite rows).
    pub rows: u64,
    /// Rows skipped under `nan_policy = "omit"`.
    pub omitted: u64,
    pub pos: Moments,
    pub neg: Moments,
    pub correct: Vec<u64>,
    pub predicted: Vec<u64>,
    pub nll_sum: f64,
    pub ece: [EceBin; ECE_BINS],
    pub hessian: HessianState,
}

impl LogitStats {
    /// Refuses K = 0 and K > `MAX_CLASSES` before allocating, and reports an
    /// allocation the system refuses as an error.
    pub fn new(k: usize, options: Options) -> Result<Self> {
        let k = check_classes(k as u64, "num_classes")?;
        if options.hessian == HessianMode::Exact && k > EXACT_MAX_CLASSES {
            return Err(Error::Input(format!(
                "hessian='exact' keeps a K x K matrix and is limited to K <= {EXACT_MAX_CLASSES} \
                 (got K = {k}); use hessian='bound'"
            )));
        }
        Ok(Self {
            k,
            options,
            rows: 0,
            omitted: 0,
            pos: Moments::new(k)?,
            neg: Moments::new(k)?,
            correct: zeros(k, "the per-class counts")?,
            predicted: zeros(k, "the per-class counts")?,
            nll_sum: 0.0,
            ece: [EceBin::default(); ECE_BINS],
            hessian: HessianState::new(options.hessian, k)?,
        })
    }

    /// A copy, or an error when the system refuses its memory (a clone would
    /// abort the process).
    pub fn try_clone(&self) -> Result<Self> {
        let what = "a copy of the per-class counts";
        Ok(Self {
            k: self.k,
            options: self.options,
            rows: self.rows,
            omitted: self.omitted,
            pos: self.pos.try_clone()?,
            neg: self.neg.try_clone()?,
            correct: copy(&self.correct, what)?,
            predicted: copy(&self.predicted, what)?,
            nll_sum: self.nll_sum,
            ece: self.ece,
            hessian: self.hessian.try_clone()?,
        })
    }

    /// An empty accumulator with the same shape and options.
    pub fn empty_like(&self) -> Result<Self> {
        Self::new(self.k, self.options)
    }

    /// Folds `other` into `self`; the result equals one pass over both inputs.
    pub fn merge(&mut self, other: &LogitStats) -> Result<()> {
        if other.k != self.k {
            return Err(Error::Input(format!(
                "cannot merge statistics over {} classes into statistics over {} classes",
                other.k, self.k
            )));
        }
        if other.options.hessian != self.options.hessian {
            return Err(Error::Input(format!(
                "cannot merge hessian='{}' statistics into hessian='{}' statistics; \
                 use the same mode on every shard",
                other.options.hessian.name(),
                self.options.hessian.name()
            )));
        }
        self.rows += other.rows;
        self.omitted += other.omitted;
        self.pos.merge(&other.pos);
        self.neg.merge(&other.neg);
        for j in 0..self.k {
            self.correct[j] += other.correct[j];
            self.predicted[j] += other.predicted[j];
        }
        self.nll_sum += other.nll_sum;
        for (a, b) in self.ece.iter_mut().zip(&other.ece) {
            a.count += b.count;
            a.confidence += b.confidence;
            a.correct += b.correct;
        }
        self.hessian.merge(&other.hessian);
        Ok(())
    }
}
