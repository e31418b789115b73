//! Proposition 1 of the paper: the Hessian of the mean softmax cross-entropy
//! with respect to the classifier bias, H = mean_n(diag(s_n) - s_n s_n^T), is
//! positive semi-definite.
//!
//! Bound mode: every off-diagonal entry of H is <= 0, so Gershgorin's theorem
//! gives lambda_min(H) >= min_i mean_n[s_ni (1 - sum_j s_nj)]. Because softmax
//! rows sum to one, the bound is 0 in exact arithmetic (H 1 = 0: the all-ones
//! vector is an eigenvector with eigenvalue 0); what the pass computes is that
//! bound in floating point, certified against a rounding tolerance.
//!
//! Exact mode: the K x K mean Hessian is accumulated in float64 (a rank-b
//! update per block of rows, its diagonal summed separately without
//! cancellation) and decomposed on the ones vector and its complement
//! (`curvature::exact_spectrum`): lambda_min, lambda_2 and lambda_max.

use faer::linalg::matmul::triangular::{matmul, BlockStructure};
use faer::{Accum, MatMut, MatRef};

use crate::curvature::{exact_spectrum, Curvature};
use crate::memory::zeros;
use crate::pool::{parallelism, pool};
use crate::stats::HessianState;
use crate::Result;

/// The Hessian verdict reported by `finalize`.
#[derive(Clone, Debug, PartialEq)]
pub struct HessianCheck {
    pub mode: &'static str,
    /// Gershgorin lower bound on lambda_min (bound) or lambda_min itself, within
    /// rounding (exact).
    pub lambda_min: f64,
    /// Largest mean softmax probability of a class: the entries of H and
    /// their rounding errors are relative to it.
    pub scale: f64,
    pub tolerance: f64,
    pub psd: bool,
    /// lambda_2, lambda_max and their ratio on 1^perp (exact mode, K >= 2).
    pub curvature: Option<Curvature>,
}

/// Rounding tolerance: a softmax row sums to one only up to about K ulps, and
/// every entry of H carries that error times its class's mean probability.
fn tolerance(k: usize, scale: f64) -> f64 {
    4.0 * k as f64 * f64::EPSILON * scale.max(f64::MIN_POSITIVE)
}

/// Adds S^T S to the lower triangle of `gram` (K x K, column-major), where
/// `probs` holds `b` softmax rows of length `k`, row-major.
pub fn gram_update(gram: &mut [f64], k: usize, probs: &[f64], threads: usize) {
    let b = probs.len() / k;
    if b == 0 {
        return;
    }
    let s = MatRef::from_row_major_slice(probs, b, k);
    let dst = MatMut::from_column_major_slice_mut(gram, k, k);
    let par = parallelism(threads);
    matmul(
        dst,
        BlockStructure::TriangularLower,
        Accum::Add,
        s.transpose(),
        BlockStructure::Rectangular,
        s,
        BlockStructure::Rectangular,
        1.0,
        par,
    );
}

/// The verdict for an accumulated state over `rows` rows; `None` when the mode
/// is off or no row was seen. Exact mode's eigen-analysis runs on `threads`;
/// the error is a refused allocation of its K x K copy.
pub fn check(
    state: &HessianState,
    k: usize,
    rows: u64,
    threads: usize,
) -> Result<Option<HessianCheck>> {
    if rows == 0 {
        return Ok(None);
    }
    let n = rows as f64;
    Ok(match state {
        HessianState::None => None,
        HessianState::Bound { gershgorin, psum } => {
            let lambda_min = gershgorin.iter().fold(f64::INFINITY, |m, &g| m.min(g / n));
            let scale = psum.iter().fold(0.0f64, |m, &p| m.max(p / n));
            let tolerance = tolerance(k, scale);
            Some(HessianCheck {
                mode: "bound",
                lambda_min,
                scale,
                tolerance,
                psd: lambda_min >= -tolerance,
                curvature: None,
            })
        }
        HessianState::Exact { ssum, dsum, gram } => {
            let scale = ssum.iter().fold(0.0f64, |m, &p| m.max(p / n));
            let tolerance = tolerance(k, scale);
            if k < 2 {
                // H = s (1 - s) = 0 for one class: no subspace orthogonal to 1.
                return Ok(Some(HessianCheck {
                    mode: "exact",
                    lambda_min: dsum[0] / n,
                    scale,
                    tolerance,
                    psd: dsum[0] / n >= -tolerance,
                    curvature: None,
                }));
            }
            // H = (diag(dsum) - offdiag(gram)) / n, both triangles filled.
            let mut h = zeros(k * k, "the K x K matrix of hessian='exact'")?;
            for j in 0..k {
                h[j * k + j] = dsum[j] / n;
                for i in j + 1..k {
                    let v = -gram[j * k + i] / n;
                    h[j * k + i] = v;
                    h[i * k + j] = v;
                }
            }
            let spectrum = match pool(threads) {
                Ok(p) => p.install(|| exact_spectrum(&mut h, k, threads)),
                Err(_) => exact_spectrum(&mut h, k, 1),
            };
            Some(HessianCheck {
                mode: "exact",
                lambda_min: spectrum.lambda_min,
                scale,
                tolerance,
                psd: spectrum.lambda_min >= -tolerance,
                curvature: Some(spectrum.curvature),
            })
        }
    })
}
