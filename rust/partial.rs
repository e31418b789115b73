//! The per-worker accumulator that the hot loop writes into: one pass's rows
//! go through `Partial::process` (compiled twice, see `kernel::dispatch`) and
//! come out as a `LogitStats` (`Partial::finish`).
//!
//! Inside a worker the negatives are accumulated as sums shifted by the
//! worker's first row, which is cheaper per element and exact enough (the
//! shift sits inside the data); they are folded into Welford form when the
//! worker finishes.

use crate::kernel::{dispatch, Logit, Simd, Terms};
use crate::labels::Labels;
use crate::memory::{reserve, zeros};
use crate::options::{HessianMode, NanPolicy};
use crate::stats::{ece_bin, HessianState, LogitStats};
use crate::Result;

/// Rows processed together by the negative-sum kernel.
const GROUP: usize = 8;

/// One worker's accumulator. Negatives are shifted sums; everything else is in
/// the same form as `LogitStats`.
pub(crate) struct Partial {
    stats: LogitStats,
    /// The worker's first counted row, once `shifted`.
    shift: Vec<f64>,
    shifted: bool,
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

/// The arguments of `Partial::process`, for `kernel::dispatch`.
struct Process<'a, 'b, T> {
    partial: &'a mut Partial,
    data: &'a [T],
    labels: &'a Labels<'b>,
    row0: u64,
    probs: Option<&'a mut [f64]>,
}

impl<T: Logit> Simd for Process<'_, '_, T> {
    type Output = std::result::Result<(), BadRow>;
    #[inline(always)]
    fn run<const AVX: bool>(self) -> Self::Output {
        self.partial
            .process_impl::<T, AVX>(self.data, self.labels, self.row0, self.probs)
    }
}

impl Partial {
    pub fn new(template: &LogitStats) -> Result<Self> {
        let k = template.k;
        let mut stats = template.empty_like()?;
        // The Gram matrix of exact mode lives with the driver, not per worker.
        if let HessianState::Exact { gram, .. } = &mut stats.hessian {
            *gram = Vec::new();
        }
        let what = "a worker's per-class sums";
        let exact = template.options.hessian == HessianMode::Exact;
        Ok(Self {
            stats,
            shift: zeros(k, what)?,
            shifted: false,
            s1: zeros(k, what)?,
            s2: zeros(k, what)?,
            exps: zeros(if exact { k } else { 0 }, what)?,
            terms: Terms::default(),
            weights: [[0.0; 2]; GROUP],
        })
    }

    /// Processes `data` (rows of K logits) whose first row is global row `row0`.
    /// In exact mode `probs` receives each row's softmax (zero for skipped rows).
    /// The outer error is a refused allocation.
    pub fn process<T: Logit>(
        &mut self,
        data: &[T],
        labels: &Labels,
        row0: u64,
        probs: Option<&mut [f64]>,
    ) -> Result<std::result::Result<(), BadRow>> {
        if self.stats.options.hessian == HessianMode::Bound {
            let terms = T::terms(&mut self.terms);
            let need = GROUP * self.stats.k;
            reserve(terms, need, "a worker's softmax terms")?;
            terms.resize(need, T::Term::default());
        }
        Ok(dispatch(Process {
            partial: self,
            data,
            labels,
            row0,
            probs,
        }))
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
            if count > 0 && !self.shifted {
                let first = &data[kept[0].0 * k..(kept[0].0 + 1) * k];
                for (s, v) in self.shift.iter_mut().zip(first) {
                    *s = v.to_f64();
                }
                self.shifted = true;
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
        // -log softmax_y = (max - z_y) + ln(sum): the difference first, so that a
        // huge max does not swallow ln(sum) (two tied maxima at 1e20 lose ln 2
        // in max + ln(sum) - z_y).
        st.nll_sum += (max.to_f64() - zy) + sum.ln();
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
        let shift = &self.shift;
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
        if self.shifted {
            let shift = &self.shift;
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
