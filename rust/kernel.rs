//! The per-row arithmetic of one pass: finiteness, first-maximum argmax, the
//! softmax normaliser, and the shifted negative sums, blocked over a few rows so
//! each per-class accumulator is loaded and stored once per group of rows.
//!
//! The portable versions are written over fixed-width lane arrays so that LLVM
//! vectorises them; `dispatch` compiles a pass over rows twice, once with
//! AVX2+FMA enabled (picked at run time, `AVX = true`, where f32 rows use the
//! intrinsics of `avx2.rs`) and once for the baseline target.

use crate::exp::exp_f32;

/// Lanes per vector-shaped loop (8 x f32 = one AVX register).
const LANES: usize = 8;

/// Whether this CPU runs the AVX2+FMA build of the kernels.
#[inline]
pub fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A loop over rows written once over `AVX` (see `Logit`): `dispatch` runs it.
pub trait Simd {
    type Output;
    /// The loop; `AVX` may be true only where the CPU has avx2 and fma.
    /// Mark it `#[inline(always)]` so that it is compiled into `run_avx2`.
    fn run<const AVX: bool>(self) -> Self::Output;
}

/// The one AVX2 dispatch point: runs `work` compiled with AVX2+FMA enabled
/// when the CPU has them, else compiled for the baseline target.
#[inline]
pub fn dispatch<S: Simd>(work: S) -> S::Output {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports the features `run_avx2` is compiled for.
        return unsafe { run_avx2(work) };
    }
    work.run::<false>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<S: Simd>(work: S) -> S::Output {
    work.run::<true>()
}

/// A logit element type the kernel runs on directly. float16 input is widened to
/// f32 block by block before it gets here.
pub trait Logit: Copy + Send + Sync + PartialOrd + 'static {
    const NEG_INFINITY: Self;
    const ZERO: Self;
    fn to_f64(self) -> f64;
    /// `self - self`: 0 for finite values, NaN for NaN and +-Inf.
    fn zero_if_finite(self) -> Self;
    fn add(self, other: Self) -> Self;
    fn is_zero(self) -> bool;
    /// Sum of exp(x - max) over the row, in f64. When `out` is given it also
    /// receives each exp(x_j - max).
    fn sum_exp_portable(row: &[Self], max: Self, out: Option<&mut [f64]>) -> f64;

    /// A softmax term exp(x - max) in the precision it is computed in.
    type Term: Copy + Default + Into<f64> + Send + Sync + 'static;
    /// This type's buffer in `bufs`.
    fn terms(bufs: &mut Terms) -> &mut Vec<Self::Term>;
    /// `sum_exp` storing each term as a `Term` (half the bytes of f64 for f32
    /// input, the same values).
    fn sum_exp_terms<const AVX: bool>(row: &[Self], max: Self, out: &mut [Self::Term]) -> f64;
    /// `bound_span`, with the AVX2 version when `AVX`.
    #[inline(always)]
    fn bound<const AVX: bool, const R: usize>(
        terms: &[&[Self::Term]; R],
        weights: &[[f64; 2]; R],
        psum: &mut [f64],
        gershgorin: &mut [f64],
    ) {
        bound_span(terms, weights, psum, gershgorin)
    }

    /// `scan`, with the AVX2 version when `AVX` (the caller checked the CPU).
    #[inline(always)]
    fn scan<const AVX: bool>(row: &[Self]) -> Option<(Self, usize)> {
        scan(row)
    }

    /// `sum_exp_portable`, with the AVX2 version when `AVX`.
    #[inline(always)]
    fn sum_exp<const AVX: bool>(row: &[Self], max: Self, out: Option<&mut [f64]>) -> f64 {
        Self::sum_exp_portable(row, max, out)
    }

    /// `negatives_span`, with the AVX2 version when `AVX`.
    #[inline(always)]
    fn negatives<const AVX: bool, const R: usize>(
        rows: &[&[Self]; R],
        shift: &[f64],
        s1: &mut [f64],
        s2: &mut [f64],
        a: usize,
        b: usize,
    ) {
        negatives_span(rows, shift, s1, s2, a, b)
    }
}

impl Logit for f32 {
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    const ZERO: Self = 0.0;
    type Term = f32;
    #[inline(always)]
    fn terms(bufs: &mut Terms) -> &mut Vec<f32> {
        &mut bufs.f32
    }
    #[inline(always)]
    fn sum_exp_terms<const AVX: bool>(row: &[f32], max: f32, out: &mut [f32]) -> f64 {
        #[cfg(target_arch = "x86_64")]
        if AVX {
            // SAFETY: AVX is true only where the CPU has avx2 and fma.
            return unsafe { crate::avx2::sum_exp_f32(row, max, out) };
        }
        let mut acc = [0f64; LANES];
        for (i, (&v, o)) in row.iter().zip(out.iter_mut()).enumerate() {
            *o = exp_f32(v - max);
            acc[i % LANES] += *o as f64;
        }
        acc.iter().sum()
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn bound<const AVX: bool, const R: usize>(
        terms: &[&[f32]; R],
        weights: &[[f64; 2]; R],
        psum: &mut [f64],
        gershgorin: &mut [f64],
    ) {
        if AVX {
            // SAFETY: as above.
            unsafe { crate::avx2::bound_span(terms, weights, psum, gershgorin) }
        } else {
            bound_span(terms, weights, psum, gershgorin)
        }
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    #[allow(clippy::eq_op)] // x - x is the point: 0 when finite, NaN otherwise
    fn zero_if_finite(self) -> Self {
        self - self
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn is_zero(self) -> bool {
        self == 0.0
    }
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn scan<const AVX: bool>(row: &[f32]) -> Option<(f32, usize)> {
        if AVX {
            // SAFETY: AVX is true only where the CPU has avx2 and fma.
            unsafe { crate::avx2::scan(row) }
        } else {
            scan(row)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn sum_exp<const AVX: bool>(row: &[f32], max: f32, out: Option<&mut [f64]>) -> f64 {
        if AVX {
            // SAFETY: as above.
            unsafe { crate::avx2::sum_exp(row, max, out) }
        } else {
            Self::sum_exp_portable(row, max, out)
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    fn negatives<const AVX: bool, const R: usize>(
        rows: &[&[f32]; R],
        shift: &[f64],
        s1: &mut [f64],
        s2: &mut [f64],
        a: usize,
        b: usize,
    ) {
        if AVX {
            // SAFETY: as above.
            unsafe { crate::avx2::negatives_span(rows, shift, s1, s2, a, b) }
        } else {
            negatives_span(rows, shift, s1, s2, a, b)
        }
    }

    #[inline(always)]
    fn sum_exp_portable(row: &[f32], max: f32, out: Option<&mut [f64]>) -> f64 {
        let mut acc = [0f64; LANES];
        let chunks = row.chunks_exact(LANES);
        let tail = chunks.remainder();
        match out {
            None => {
                for c in chunks {
                    for l in 0..LANES {
                        acc[l] += exp_f32(c[l] - max) as f64;
                    }
                }
                for &v in tail {
                    acc[0] += exp_f32(v - max) as f64;
                }
            }
            Some(out) => {
                let (head, out_tail) = out.split_at_mut(row.len() - tail.len());
                for (c, o) in chunks.zip(head.chunks_exact_mut(LANES)) {
                    for l in 0..LANES {
                        let e = exp_f32(c[l] - max) as f64;
                        o[l] = e;
                        acc[l] += e;
                    }
                }
                for (&v, o) in tail.iter().zip(out_tail) {
                    *o = exp_f32(v - max) as f64;
                    acc[0] += *o;
                }
            }
        }
        acc.iter().sum()
    }
}

impl Logit for f64 {
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    const ZERO: Self = 0.0;
    type Term = f64;
    #[inline(always)]
    fn terms(bufs: &mut Terms) -> &mut Vec<f64> {
        &mut bufs.f64
    }
    #[inline(always)]
    fn sum_exp_terms<const AVX: bool>(row: &[f64], max: f64, out: &mut [f64]) -> f64 {
        Self::sum_exp_portable(row, max, Some(out))
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    #[allow(clippy::eq_op)] // x - x is the point: 0 when finite, NaN otherwise
    fn zero_if_finite(self) -> Self {
        self - self
    }
    #[inline(always)]
    fn add(self, other: Self) -> Self {
        self + other
    }
    #[inline(always)]
    fn is_zero(self) -> bool {
        self == 0.0
    }
    #[inline(always)]
    fn sum_exp_portable(row: &[f64], max: f64, out: Option<&mut [f64]>) -> f64 {
        // float64 input keeps full precision: libm's exp, not the f32 polynomial.
        match out {
            None => row.iter().map(|&v| (v - max).exp()).sum(),
            Some(out) => row
                .iter()
                .zip(out.iter_mut())
                .map(|(&v, o)| {
                    *o = (v - max).exp();
                    *o
                })
                .sum(),
        }
    }
}

/// Finite check, maximum and first index of the maximum (numpy's argmax rule).
/// Returns `None` when the row holds a NaN or an infinity.
#[inline(always)]
pub fn scan<T: Logit>(row: &[T]) -> Option<(T, usize)> {
    let mut best = [T::NEG_INFINITY; LANES];
    let mut at = [0u32; LANES];
    let mut fin = [T::ZERO; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (ci, c) in chunks.enumerate() {
        for l in 0..LANES {
            let v = c[l];
            fin[l] = fin[l].add(v.zero_if_finite());
            let gt = v > best[l];
            best[l] = if gt { v } else { best[l] };
            at[l] = if gt { ci as u32 } else { at[l] };
        }
    }
    let mut max = T::NEG_INFINITY;
    let mut arg = usize::MAX;
    for l in 0..LANES {
        let idx = at[l] as usize * LANES + l;
        if best[l] > max || (best[l] == max && best[l] > T::NEG_INFINITY && idx < arg) {
            max = best[l];
            arg = idx;
        }
    }
    let base = row.len() - tail.len();
    let mut finite = fin.iter().all(|f| f.is_zero());
    for (i, &v) in tail.iter().enumerate() {
        finite &= v.zero_if_finite().is_zero();
        if v > max {
            max = v;
            arg = base + i;
        }
    }
    (finite && arg != usize::MAX).then_some((max, arg))
}

/// Reusable buffers of softmax terms, one per input precision.
#[derive(Default)]
pub struct Terms {
    f32: Vec<f32>,
    f64: Vec<f64>,
}

/// Adds R rows' Gershgorin terms to every class: row r's softmax entries are
/// its terms times `weights[r][0]` (1 / sum) and go to `psum`; times
/// `weights[r][1]` (also times 1 - sum of the row's entries) to `gershgorin`.
#[inline(always)]
pub fn bound_span<E: Copy + Into<f64>, const R: usize>(
    terms: &[&[E]; R],
    weights: &[[f64; 2]; R],
    psum: &mut [f64],
    gershgorin: &mut [f64],
) {
    for (j, (p, g)) in psum.iter_mut().zip(gershgorin.iter_mut()).enumerate() {
        let (mut tp, mut tg) = (*p, *g);
        for (t, w) in terms.iter().zip(weights) {
            let e: f64 = t[j].into();
            tp += e * w[0];
            tg += e * w[1];
        }
        *p = tp;
        *g = tg;
    }
}

/// Adds rows' values to the shifted negative sums of columns `[a, b)`, where no
/// row of the group has its label.
#[inline(always)]
pub fn negatives_span<T: Logit, const R: usize>(
    rows: &[&[T]; R],
    shift: &[f64],
    s1: &mut [f64],
    s2: &mut [f64],
    a: usize,
    b: usize,
) {
    let n = b - a;
    let shift = &shift[a..b];
    let s1 = &mut s1[a..b];
    let s2 = &mut s2[a..b];
    let rows: [&[T]; R] = std::array::from_fn(|r| &rows[r][a..b]);
    for j in 0..n {
        let c = shift[j];
        let mut t1 = s1[j];
        let mut t2 = s2[j];
        for row in &rows {
            let d = row[j].to_f64() - c;
            t1 += d;
            t2 += d * d;
        }
        s1[j] = t1;
        s2[j] = t2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_takes_the_first_maximum_like_numpy() {
        for k in [1, 3, 8, 9, 17, 40] {
            let row = vec![2.5f32; k];
            assert_eq!(scan(&row), Some((2.5, 0)));
            assert_eq!(f32::scan::<true>(&row), Some((2.5, 0)));
            let mut row: Vec<f32> = (0..k).map(|j| (j % 5) as f32).collect();
            let max = row.iter().cloned().fold(f32::MIN, f32::max);
            let first = row.iter().position(|&v| v == max).unwrap();
            assert_eq!(scan(&row), Some((max, first)));
            assert_eq!(f32::scan::<true>(&row), Some((max, first)));
            row[k - 1] = 10.0;
            assert_eq!(scan(&row), Some((10.0, k - 1)));
            assert_eq!(f32::scan::<true>(&row), Some((10.0, k - 1)));
        }
    }

    #[test]
    fn scan_rejects_nan_and_infinities_anywhere() {
        for k in [1, 7, 8, 23] {
            for at in [0, k / 2, k - 1] {
                for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
                    let mut row = vec![0.5f64; k];
                    row[at] = bad;
                    assert_eq!(scan(&row), None, "k={k} at={at} bad={bad}");
                }
            }
        }
        assert_eq!(scan(&[-3.0f32, -1.0]), Some((-1.0, 1)));
    }

    #[test]
    fn bound_terms_match_the_portable_sums() {
        let k = 37;
        let rows: Vec<Vec<f32>> = (0..8)
            .map(|r| (0..k).map(|j| ((r * k + j) as f32 * 0.7).sin()).collect())
            .collect();
        let terms: [&[f32]; 8] = std::array::from_fn(|r| &rows[r][..]);
        let weights: [[f64; 2]; 8] = std::array::from_fn(|r| [0.5 + r as f64, 1e-16 * r as f64]);
        let (mut p, mut g) = (vec![1.0; k], vec![0.0; k]);
        bound_span(&terms, &weights, &mut p, &mut g);
        let (mut p1, mut g1) = (vec![1.0; k], vec![0.0; k]);
        for (t, w) in terms.iter().zip(&weights) {
            f32::bound::<false, 1>(&[t], &[*w], &mut p1, &mut g1);
        }
        let close = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-12 * y.abs())
        };
        assert!(close(&p, &p1) && close(&g, &g1));
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            let (mut p2, mut g2) = (vec![1.0; k], vec![0.0; k]);
            f32::bound::<true, 8>(&terms, &weights, &mut p2, &mut g2);
            assert!(close(&p, &p2) && close(&g, &g2));
            let mut out = vec![0f32; k];
            let s = f32::sum_exp_terms::<true>(&rows[0], 1.0, &mut out);
            assert_eq!(s, out.iter().map(|&e| e as f64).sum::<f64>());
        }
    }

    #[test]
    fn sum_exp_matches_f64_and_fills_exps() {
        for n in [3, 8, 37, 45, 1000] {
            let row: Vec<f32> = (0..n).map(|j| (j as f32 * 0.37).sin() * 4.0).collect();
            let max = row.iter().cloned().fold(f32::MIN, f32::max);
            let mut exps = vec![0.0; row.len()];
            let s = f32::sum_exp_portable(&row, max, Some(&mut exps));
            let want: f64 = row.iter().map(|&v| (v as f64 - max as f64).exp()).sum();
            assert!(((s - want) / want).abs() < 3e-7);
            assert!((exps.iter().sum::<f64>() - s).abs() < 1e-12 * s);
            assert_eq!(f32::sum_exp_portable(&row, max, None), s);
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                let mut fast = vec![0.0; row.len()];
                let f = f32::sum_exp::<true>(&row, max, Some(&mut fast));
                // FMA rounds differently from mul + add: both are within f32 accuracy.
                assert!(((f - want) / want).abs() < 3e-7, "{n}: {f} vs {want}");
                assert!(fast
                    .iter()
                    .zip(&exps)
                    .all(|(a, b)| (a - b).abs() <= 5e-7 * b));
                let f = f32::sum_exp::<true>(&row, max, None);
                assert!(((f - want) / want).abs() < 3e-7, "{n}: {f} vs {want}");
            }
        }
    }
}
