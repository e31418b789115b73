//! exp(x) for x <= 0 in single precision: the portable branch-free polynomial
//! (`exp_f32`, vectorised by LLVM) and the AVX2+FMA version of eight lanes
//! (`exp8`). Both feed the softmax sums of `kernel.rs` and `avx2.rs`.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// exp(x) for x <= 0 in single precision, branch-free so it vectorises.
/// Range reduction x = k ln2 + r, |r| <= ln2/2, then a degree-7 Taylor
/// polynomial (truncation error < 6e-9 relative, below f32 rounding).
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding 1.5 * 2^23 rounds to the nearest integer and leaves it in the low
    // mantissa bits, which then become the exponent of 2^k.
    const MAGIC: f32 = 12_582_912.0;
    let x = if x < -87.0 { -87.0 } else { x };
    let y = x * LOG2E + MAGIC;
    let k = y - MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    let two_k = f32::from_bits(y.to_bits().wrapping_sub(0x4B40_0000).wrapping_add(127) << 23);
    p * two_k
}

#[cfg(target_arch = "x86_64")]
/// exp(x) of 8 floats x <= 0, to about 1.5e-7 relative (the portable
/// `exp_f32` is a degree-7 polynomial; this is cheaper by a third).
/// Reduction x = (8m + j) ln2/8 + r with |r| <= ln2/16, then
/// exp(x) = 2^m * 2^(j/8) * p(r): 2^(j/8) from an 8-entry table held in one
/// register (`permutevar8x32` picks it by the low three bits of 8m + j), p a
/// degree-3 minimax polynomial with p(0) = 1 (2.7e-8 relative on the interval;
/// the table entries are rounded to 3.2e-8), so exp(0) is exactly 1.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_max_ps(x, _mm256_set1_ps(-87.0));
    // Adding 1.5 * 2^23 rounds to the nearest integer n = 8m + j and leaves it
    // in the low mantissa bits of y.
    let magic = _mm256_set1_ps(12_582_912.0);
    let y = _mm256_fmadd_ps(x, _mm256_set1_ps(8.0 * std::f32::consts::LOG2_E), magic);
    let n = _mm256_sub_ps(y, magic);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_145_75 / 8.0), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428_606_8e-6 / 8.0), r);
    let p = _mm256_fmadd_ps(
        r,
        _mm256_set1_ps(0.166_642_01),
        _mm256_set1_ps(0.500_067_35),
    );
    let p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    let p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0));
    // 2^(j/8), j = 0..7, as f32 bits.
    let table = _mm256_setr_epi32(
        0x3f80_0000,
        0x3f8b_95c2,
        0x3f98_37f0,
        0x3fa5_fed7,
        0x3fb5_04f3,
        0x3fc5_672a,
        0x3fd7_44fd,
        0x3fea_c0c7,
    );
    let yi = _mm256_castps_si256(y);
    let frac = _mm256_permutevar8x32_epi32(table, yi);
    // m << 23 is n << 20 with its low 23 bits cleared (the magic's own bits
    // shift out); adding it to 2^(j/8)'s exponent scales by 2^m (m >= -126
    // for x >= -87, so the result stays normal).
    let m = _mm256_and_si256(
        _mm256_slli_epi32(yi, 20),
        _mm256_set1_epi32(0xff80_0000u32 as i32),
    );
    _mm256_mul_ps(p, _mm256_castsi256_ps(_mm256_add_epi32(frac, m)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_f32_is_accurate_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let got = exp_f32(x) as f64;
            let want = (x as f64).exp();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 3e-7, "worst relative error {worst}");
        assert_eq!(exp_f32(0.0), 1.0);
    }

    #[test]
    fn exp_f32_underflows_to_tiny_not_garbage() {
        for x in [-88.0f32, -100.0, -1e30, f32::MIN] {
            let e = exp_f32(x);
            assert!((0.0..1e-37).contains(&e), "exp({x}) = {e}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn exp8_is_within_the_documented_error() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
            return;
        }
        let mut worst = 0f64;
        let mut out = [0f32; 8];
        for i in (0..800_000).step_by(8) {
            let x: [f32; 8] = std::array::from_fn(|l| -87.0 * (i + l) as f32 / 800_000.0);
            // SAFETY: the CPU has avx2 and fma (checked above).
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_loadu_ps(x.as_ptr()))) };
            for (&x, &e) in x.iter().zip(&out) {
                let want = (x as f64).exp();
                worst = worst.max(((e as f64 - want) / want).abs());
            }
        }
        assert!(worst < 2e-7, "worst relative error {worst}");
        let mut under = [0f32; 8];
        let x = [0.0, -88.0, -100.0, -1e30, f32::MIN, -1e-30, -0.5, -87.0];
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(under.as_mut_ptr(), exp8(_mm256_loadu_ps(x.as_ptr()))) };
        assert_eq!(under[0], 1.0);
        assert!(
            under[1..5].iter().all(|e| (0.0..1e-37).contains(e)),
            "{under:?}"
        );
    }
}
