//! Hand-written AVX2+FMA versions of the f32 kernels (`kernel.rs` has the
//! portable versions and the meaning of each). Auto-vectorisation of the
//! portable code mixes 4- and 8-wide vectors and scalar argmax bookkeeping;
//! these keep every loop 8 floats (or 4 doubles) wide.
//!
//! Every function here is `unsafe`: call only when the CPU reports avx2 and fma.

use std::arch::x86_64::*;

use crate::exp::{exp8, exp_f32};

const LANES: usize = 8;

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hmax(v: __m256) -> f32 {
    let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    let m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    _mm_cvtss_f32(m)
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum_pd(v: __m256d) -> f64 {
    let s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)))
}

/// Finite check, maximum and first index of the maximum.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn scan(row: &[f32]) -> Option<(f32, usize)> {
    let n = row.len();
    let p = row.as_ptr();
    let body = n - n % LANES;
    let (mut m0, mut m1) = (
        _mm256_set1_ps(f32::NEG_INFINITY),
        _mm256_set1_ps(f32::NEG_INFINITY),
    );
    let (mut f0, mut f1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 2 * LANES <= body {
        let a = _mm256_loadu_ps(p.add(i));
        let b = _mm256_loadu_ps(p.add(i + LANES));
        // x - x is 0 for finite x and NaN for NaN or +-Inf.
        f0 = _mm256_add_ps(f0, _mm256_sub_ps(a, a));
        f1 = _mm256_add_ps(f1, _mm256_sub_ps(b, b));
        m0 = _mm256_max_ps(m0, a);
        m1 = _mm256_max_ps(m1, b);
        i += 2 * LANES;
    }
    if i < body {
        let a = _mm256_loadu_ps(p.add(i));
        f0 = _mm256_add_ps(f0, _mm256_sub_ps(a, a));
        m0 = _mm256_max_ps(m0, a);
    }
    let fin = _mm256_add_ps(f0, f1);
    let mut finite =
        _mm256_movemask_ps(_mm256_cmp_ps(fin, _mm256_setzero_ps(), _CMP_EQ_OQ)) == 0xff;
    let mut max = hmax(_mm256_max_ps(m0, m1));
    for &v in &row[body..] {
        finite &= v.is_finite();
        max = if v > max { v } else { max };
    }
    if !finite || n == 0 {
        return None;
    }
    let target = _mm256_set1_ps(max);
    let mut i = 0;
    while i < body {
        let hit = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p.add(i)), target, _CMP_EQ_OQ));
        if hit != 0 {
            return Some((max, i + hit.trailing_zeros() as usize));
        }
        i += LANES;
    }
    row[body..]
        .iter()
        .position(|&v| v == max)
        .map(|j| (max, body + j))
}

/// Sum over the row of exp(x - max) in f64, optionally storing each term.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sum_exp(row: &[f32], max: f32, out: Option<&mut [f64]>) -> f64 {
    match out {
        None => sum_exp_only(row, max),
        Some(o) => {
            assert!(o.len() >= row.len());
            sum_exp_each::<false>(row, max, o.as_mut_ptr().cast())
        }
    }
}

/// `sum_exp` storing each term as f32 in `out` (at least `row.len()` long).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sum_exp_f32(row: &[f32], max: f32, out: &mut [f32]) -> f64 {
    assert!(out.len() >= row.len());
    sum_exp_each::<true>(row, max, out.as_mut_ptr().cast())
}

/// The f64 sum of the terms, each stored at `out` as f32 (`F32`) or f64: the
/// sum is exactly that of the stored terms, which the bound's row weight
/// 1 - sum_j s_j relies on.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_exp_each<const F32: bool>(row: &[f32], max: f32, out: *mut u8) -> f64 {
    let n = row.len();
    let p = row.as_ptr();
    let body = n - n % LANES;
    let vmax = _mm256_set1_ps(max);
    let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let mut i = 0;
    while i < body {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vmax));
        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(e));
        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1));
        a0 = _mm256_add_pd(a0, lo);
        a1 = _mm256_add_pd(a1, hi);
        if F32 {
            _mm256_storeu_ps(out.cast::<f32>().add(i), e);
        } else {
            _mm256_storeu_pd(out.cast::<f64>().add(i), lo);
            _mm256_storeu_pd(out.cast::<f64>().add(i + 4), hi);
        }
        i += LANES;
    }
    let mut s = hsum_pd(_mm256_add_pd(a0, a1));
    for (j, &v) in row.iter().enumerate().skip(body) {
        let e = exp_f32(v - max);
        if F32 {
            *out.cast::<f32>().add(j) = e;
        } else {
            *out.cast::<f64>().add(j) = e as f64;
        }
        s += e as f64;
    }
    s
}

/// The sum of `sum_exp` when the terms are not wanted.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn sum_exp_only(row: &[f32], max: f32) -> f64 {
    let n = row.len();
    let p = row.as_ptr();
    let body = n - n % LANES;
    let vmax = _mm256_set1_ps(max);
    let (mut a0, mut a1) = (_mm256_setzero_pd(), _mm256_setzero_pd());
    let e = |at: usize| exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(at)), vmax));
    // Four vectors of terms are added in f32 (two roundings, at most 1.2e-7
    // relative, below the error of exp8) before widening: a quarter of the
    // conversions and f64 additions, and four independent exp chains.
    let mut i = 0;
    while i + 4 * LANES <= body {
        let s01 = _mm256_add_ps(e(i), e(i + LANES));
        let s23 = _mm256_add_ps(e(i + 2 * LANES), e(i + 3 * LANES));
        let t = _mm256_add_ps(s01, s23);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)));
        i += 4 * LANES;
    }
    while i < body {
        let t = e(i);
        a0 = _mm256_add_pd(a0, _mm256_cvtps_pd(_mm256_castps256_ps128(t)));
        a1 = _mm256_add_pd(a1, _mm256_cvtps_pd(_mm256_extractf128_ps(t, 1)));
        i += LANES;
    }
    let mut s = hsum_pd(_mm256_add_pd(a0, a1));
    for &v in &row[body..] {
        s += exp_f32(v - max) as f64;
    }
    s
}

/// `kernel::bound_span` for f32 terms.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn bound_span<const R: usize>(
    terms: &[&[f32]; R],
    weights: &[[f64; 2]; R],
    psum: &mut [f64],
    gershgorin: &mut [f64],
) {
    let n = psum.len();
    assert!(gershgorin.len() == n && terms.iter().all(|t| t.len() >= n));
    let (pp, pg) = (psum.as_mut_ptr(), gershgorin.as_mut_ptr());
    let ptrs: [*const f32; R] = std::array::from_fn(|r| terms[r].as_ptr());
    let w: [[__m256d; 2]; R] = std::array::from_fn(|r| weights[r].map(|v| _mm256_set1_pd(v)));
    let mut j = 0;
    while j + 4 <= n {
        let mut tp = _mm256_loadu_pd(pp.add(j));
        let mut tg = _mm256_loadu_pd(pg.add(j));
        for (p, [wp, wg]) in ptrs.iter().zip(w) {
            let e = _mm256_cvtps_pd(_mm_loadu_ps(p.add(j)));
            tp = _mm256_fmadd_pd(e, wp, tp);
            tg = _mm256_fmadd_pd(e, wg, tg);
        }
        _mm256_storeu_pd(pp.add(j), tp);
        _mm256_storeu_pd(pg.add(j), tg);
        j += 4;
    }
    for j in j..n {
        for (t, w) in terms.iter().zip(weights) {
            let e = t[j] as f64;
            psum[j] += e * w[0];
            gershgorin[j] += e * w[1];
        }
    }
}

/// Adds R rows to the shifted negative sums of columns [a, b).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn negatives_span<const R: usize>(
    rows: &[&[f32]; R],
    shift: &[f64],
    s1: &mut [f64],
    s2: &mut [f64],
    a: usize,
    b: usize,
) {
    assert!(
        b <= shift.len() && b <= s1.len() && b <= s2.len() && rows.iter().all(|r| b <= r.len())
    );
    let (sh, p1, p2) = (shift.as_ptr(), s1.as_mut_ptr(), s2.as_mut_ptr());
    let ptrs: [*const f32; R] = std::array::from_fn(|r| rows[r].as_ptr());
    let mut j = a;
    while j + 4 <= b {
        let c = _mm256_loadu_pd(sh.add(j));
        let mut t1 = _mm256_loadu_pd(p1.add(j));
        let mut t2 = _mm256_loadu_pd(p2.add(j));
        for p in ptrs {
            let d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(p.add(j))), c);
            t1 = _mm256_add_pd(t1, d);
            t2 = _mm256_fmadd_pd(d, d, t2);
        }
        _mm256_storeu_pd(p1.add(j), t1);
        _mm256_storeu_pd(p2.add(j), t2);
        j += 4;
    }
    while j < b {
        for row in rows {
            let d = row[j] as f64 - shift[j];
            s1[j] += d;
            s2[j] += d * d;
        }
        j += 1;
    }
}
