//! The per-class accumulator: what one pass over (logits, labels) collects, how
//! two accumulators merge exactly, and the per-worker partial that the hot loop
//! writes into.
//!
//! Moments are kept in Welford form (count, mean, M2) and merged with Chan's
//! formula, so shards, threads and DDP ranks combine in any order. Inside a
//! worker the negatives are accumulated as sums shifted by the worker's first
//! row, which is cheaper per element and exact enough (the shift sits inside
//! the data); they are folded into Welford form when the worker finishes.

use crate::kernel::{Logit, Terms};
use crate::labels::Labels;
use crate::{Error, Result};

/// Number of equal-width confidence bins of the expected calibration error.
pub const ECE_BINS: usize = 15;
/// Largest K for which the exact K x K Hessian is accumulated (4.3 GB, see
/// `exact_memory_bytes`).
pub const EXACT_MAX_CLASSES: usize = 16_384;

/// Peak memory of hessian='exact' over K classes beyond the plain pass: the
/// accumulated K x K float64 Gram matrix, a second one (a pass's delta before it
/// is merged, or the copy `finalize` decomposes in place), and the block of
/// softmax rows gathered per Gram update.
pub fn exact_memory_bytes(k: usize) -> u64 {
    16 * (k as u64) * (k as u64) + crate::drive::EXACT_BLOCK_BYTES as u64
}
/// Rows processed together by the negative-sum kernel.
const GROUP: usize = 8;

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

/// Per-class count, mean and sum of squared deviations.
#[derive(Clone, Debug, PartialEq)]
pub struct Moments {
    pub n: Vec<u64>,
    pub mean: Vec<f64>,
    pub m2: Vec<f64>,
}

impl Moments {
    pub fn new(k: usize) -> Self {
        Self {
            n: vec![0; k],
            mean: vec![0.0; k],
            m2: vec![0.0; k],
        }
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
#[derive(Clone, Debug, PartialEq)]
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
    pub fn new(mode: HessianMode, k: usize) -> Self {
        match mode {
            HessianMode::None => Self::None,
            HessianMode::Bound => Self::Bound {
                gershgorin: vec![0.0; k],
                psum: vec![0.0; k],
            },
            HessianMode::Exact => Self::Exact {
                ssum: vec![0.0; k],
                dsum: vec![0.0; k],
                gram: vec![0.0; k * k],
            },
        }
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

/// The accumulator behind `lort._core.LogitStats`.
#[derive(Clone, Debug, PartialEq)]
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
    pub fn new(k: usize, options: Options) -> Result<Self> {
        if k == 0 {
            return Err(Error::Input("num_classes must be at least 1".into()));
        }
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
            pos: Moments::new(k),
            neg: Moments::new(k),
            correct: vec![0; k],
            predicted: vec![0; k],
            nll_sum: 0.0,
            ece: [EceBin::default(); ECE_BINS],
            hessian: HessianState::new(options.hessian, k),
        })
    }

    /// An empty accumulator with the same shape and options.
    pub fn empty_like(&self) -> Self {
        Self::new(self.k, self.options).expect("options were valid for self")
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

/// One worker's accumulator. Negatives are shifted sums; everything else is in
/// the same form as `LogitStats`.
pub(crate) struct Partial {
    stats: LogitStats,
    shift: Option<Vec<f64>>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    /// exp(z - max) of the current row, for exact mode.
    exps: Vec<f64>,
    /// Bound mode: the softmax terms of a group of rows, kept so that the
    /// per-class sums are loaded and stored once per group, and each row's
    /// weights (see `kernel::bound_span`).
    terms: Terms,
    weights: [[f64; 2]; GROUP],
}

/// sum_j e_j * inv, in lanes so that it vectorises (a plain float sum cannot
/// be reordered by the compiler).
#[inline(always)]
fn scaled_sum<E: Copy + Into<f64>>(e: &[E], inv: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = e.chunks_exact(8);
    let tail: f64 = chunks.remainder().iter().map(|&v| v.into() * inv).sum();
    for c in chunks {
        for l in 0..8 {
            acc[l] += c[l].into() * inv;
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// A row that holds NaN or Inf under `nan_policy = "raise"` (its global index).
pub(crate) struct BadRow(pub u64);

impl Partial {
    pub fn k(&self) -> usize {
        self.stats.k
    }

    pub fn new(template: &LogitStats) -> Self {
        let k = template.k;
        let mut stats = template.empty_like();
        // The Gram matrix of exact mode lives with the driver, not per worker.
        if let HessianState::Exact { gram, .. } = &mut stats.hessian {
            *gram = Vec::new();
        }
        let exps = if template.options.hessian == HessianMode::Exact {
            vec![0.0; k]
        } else {
            Vec::new()
        };
        Self {
            stats,
            shift: None,
            s1: vec![0.0; k],
            s2: vec![0.0; k],
            exps,
            terms: Terms::default(),
            weights: [[0.0; 2]; GROUP],
        }
    }

    /// Processes `data` (rows of K logits) whose first row is global row `row0`.
    /// In exact mode `probs` receives each row's softmax (zero for skipped rows).
    pub fn process<T: Logit>(
        &mut self,
        data: &[T],
        labels: &Labels,
        row0: u64,
        probs: Option<&mut [f64]>,
    ) -> std::result::Result<(), BadRow> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU supports the features the wrapper is compiled for.
                return unsafe { self.process_avx2(data, labels, row0, probs) };
            }
        }
        self.process_impl::<T, false>(data, labels, row0, probs)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn process_avx2<T: Logit>(
        &mut self,
        data: &[T],
        labels: &Labels,
        row0: u64,
        probs: Option<&mut [f64]>,
    ) -> std::result::Result<(), BadRow> {
        self.process_impl::<T, true>(data, labels, row0, probs)
    }

    #[inline(always)]
    fn process_impl<T: Logit, const AVX: bool>(
        &mut self,
        data: &[T],
        labels: &Labels,
        row0: u64,
        mut probs: Option<&mut [f64]>,
    ) -> std::result::Result<(), BadRow> {
        let k = self.stats.k;
        let n = data.len() / k;
        let omit = self.stats.options.nan_policy == NanPolicy::Omit;
        let bound = self.stats.options.hessian == HessianMode::Bound;
        if bound {
            T::terms(&mut self.terms).resize(GROUP * k, T::Term::default());
        }
        let mut i = 0;
        while i < n {
            let g = GROUP.min(n - i);
            let mut kept = [(0usize, 0usize); GROUP];
            let mut count = 0;
            for r in i..i + g {
                let row = &data[r * k..(r + 1) * k];
                let Some((max, arg)) = T::scan::<AVX>(row) else {
                    if omit {
                        self.stats.omitted += 1;
                        continue;
                    }
                    return Err(BadRow(row0 + r as u64));
                };
                let y = labels.class((row0 + r as u64) as usize);
                let prow = probs.as_deref_mut().map(|p| &mut p[r * k..(r + 1) * k]);
                self.row_outputs::<T, AVX>(row, max, arg, y, prow, count);
                kept[count] = (r, y);
                count += 1;
            }
            if count > 0 && self.shift.is_none() {
                let first = &data[kept[0].0 * k..(kept[0].0 + 1) * k];
                self.shift = Some(first.iter().map(|v| v.to_f64()).collect());
            }
            if count == GROUP {
                let rows: [&[T]; GROUP] =
                    std::array::from_fn(|r| &data[kept[r].0 * k..(kept[r].0 + 1) * k]);
                let ys: [usize; GROUP] = std::array::from_fn(|r| kept[r].1);
                self.negatives::<T, AVX, GROUP>(&rows, &ys);
            } else {
                for &(r, y) in &kept[..count] {
                    self.negatives::<T, AVX, 1>(&[&data[r * k..(r + 1) * k]], &[y]);
                }
            }
            if bound {
                self.bound_group::<T, AVX>(count);
            }
            i += g;
        }
        Ok(())
    }

    /// Everything a row contributes except its negative sums and, in bound
    /// mode, its Gershgorin terms, which it leaves in group slot `slot`.
    #[inline(always)]
    fn row_outputs<T: Logit, const AVX: bool>(
        &mut self,
        row: &[T],
        max: T,
        arg: usize,
        y: usize,
        probs: Option<&mut [f64]>,
        slot: usize,
    ) {
        let st = &mut self.stats;
        let k = st.k;
        let zy = row[y].to_f64();
        // Welford update of the positive moments of class y.
        let n = st.pos.n[y] + 1;
        let delta = zy - st.pos.mean[y];
        st.pos.mean[y] += delta / n as f64;
        st.pos.m2[y] += delta * (zy - st.pos.mean[y]);
        st.pos.n[y] = n;

        st.predicted[arg] += 1;
        let hit = arg == y;
        st.correct[y] += hit as u64;

        let sum = match st.hessian {
            HessianState::None => T::sum_exp::<AVX>(row, max, None),
            HessianState::Bound { .. } => {
                let terms = &mut T::terms(&mut self.terms)[slot * k..(slot + 1) * k];
                let sum = T::sum_exp_terms::<AVX>(row, max, terms);
                let inv = 1.0 / sum;
                // 1 - the sum of the row's softmax entries as computed: the
                // Gershgorin bound's row weight, rounding error only.
                let w = 1.0 - scaled_sum(terms, inv);
                self.weights[slot] = [inv, inv * w];
                sum
            }
            HessianState::Exact { .. } => T::sum_exp::<AVX>(row, max, Some(&mut self.exps)),
        };
        st.nll_sum += max.to_f64() + sum.ln() - zy;
        let conf = 1.0 / sum;
        let bin = &mut st.ece[ece_bin(conf)];
        bin.count += 1;
        bin.confidence += conf;
        bin.correct += hit as u64;
        st.rows += 1;

        if let HessianState::Exact { ssum, dsum, .. } = &mut st.hessian {
            let inv = 1.0 / sum;
            let out = probs.expect("exact mode passes a probability block");
            // 1 - s_i = (sum - e_i) / sum. For the largest term (e = 1) that
            // difference cancels when the row is nearly one-hot, so it is
            // summed from the other terms instead; for every other i,
            // sum - e_i >= sum / 2.
            let others: f64 =
                self.exps[..arg].iter().sum::<f64>() + self.exps[arg + 1..].iter().sum::<f64>();
            for (i, &e) in self.exps.iter().enumerate() {
                let s = e * inv;
                let rest = if i == arg { others } else { sum - e };
                out[i] = s;
                ssum[i] += s;
                dsum[i] += s * rest * inv;
            }
        }
    }

    /// Adds the Gershgorin terms of the group's first `count` slots.
    #[inline(always)]
    fn bound_group<T: Logit, const AVX: bool>(&mut self, count: usize) {
        let HessianState::Bound { gershgorin, psum } = &mut self.stats.hessian else {
            return;
        };
        let k = self.stats.k;
        let terms = &T::terms(&mut self.terms)[..];
        if count == GROUP {
            let rows: [&[T::Term]; GROUP] = std::array::from_fn(|r| &terms[r * k..(r + 1) * k]);
            T::bound::<AVX, GROUP>(&rows, &self.weights, psum, gershgorin);
        } else {
            for (r, w) in self.weights[..count].iter().enumerate() {
                T::bound::<AVX, 1>(&[&terms[r * k..(r + 1) * k]], &[*w], psum, gershgorin);
            }
        }
    }

    /// Adds a group of rows to the negative sums, skipping each row's label column.
    #[inline(always)]
    fn negatives<T: Logit, const AVX: bool, const R: usize>(
        &mut self,
        rows: &[&[T]; R],
        ys: &[usize; R],
    ) {
        let k = self.stats.k;
        let shift = self
            .shift
            .as_deref()
            .expect("shift is set before negatives");
        let (s1, s2) = (&mut self.s1, &mut self.s2);
        let mut cuts = *ys;
        cuts.sort_unstable();
        let mut a = 0;
        for (ci, &c) in cuts.iter().enumerate() {
            if ci > 0 && cuts[ci - 1] == c {
                continue;
            }
            T::negatives::<AVX, R>(rows, shift, s1, s2, a, c);
            for (row, &y) in rows.iter().zip(ys) {
                if y != c {
                    let d = row[c].to_f64() - shift[c];
                    s1[c] += d;
                    s2[c] += d * d;
                }
            }
            a = c + 1;
        }
        T::negatives::<AVX, R>(rows, shift, s1, s2, a, k);
    }

    /// Converts the shifted negative sums to Welford form and returns the result.
    #[allow(clippy::needless_range_loop)] // five arrays indexed by class
    pub fn finish(mut self) -> LogitStats {
        let st = &mut self.stats;
        if let Some(shift) = &self.shift {
            for j in 0..st.k {
                let n = st.rows - st.pos.n[j];
                if n == 0 {
                    continue;
                }
                let nf = n as f64;
                let (s1, s2) = (self.s1[j], self.s2[j]);
                st.neg.n[j] = n;
                st.neg.mean[j] = shift[j] + s1 / nf;
                st.neg.m2[j] = (s2 - s1 * s1 / nf).max(0.0);
            }
        }
        self.stats
    }
}
