//! The curvature of the bias Hessian on 1^perp: the exact decomposition against
//! faer's full eigen-solver, and the Lanczos estimate against the exact values.

use lort_core::curvature::{lanczos, Curvature, LanczosOptions, SoftmaxOperator};
use lort_core::{Control, HessianMode, Labels, LogitStats, NanPolicy, Options, Rows};

/// Deterministic logits: a per-class bias, noise, and a margin on a label.
fn logits(n: usize, k: usize, seed: u64, spread: f64, margin: f64) -> Vec<f64> {
    let mut state = seed;
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    };
    let mut z = vec![0.0; n * k];
    for r in 0..n {
        let y = (r * 7919) % k;
        for j in 0..k {
            let bias = 1.0 - 2.0 * j as f64 / k as f64;
            z[r * k + j] = bias + spread * next() + if j == y { margin } else { 0.0 };
        }
    }
    z
}

fn exact(z: &[f64], k: usize) -> (Curvature, f64) {
    let n = z.len() / k;
    let labels = vec![0u32; n];
    let mut st = LogitStats::new(
        k,
        Options {
            hessian: HessianMode::Exact,
            nan_policy: NanPolicy::Raise,
        },
    )
    .unwrap();
    st.update(Rows::F64(z), &Labels::U32(&labels), &Control::new(2))
        .unwrap();
    let h = st.finalize(None).unwrap().hessian.unwrap();
    (h.curvature.unwrap(), h.lambda_min)
}

/// H in float64 straight from the definition, and its eigenvalues (faer).
fn brute(z: &[f64], k: usize) -> Vec<f64> {
    let n = z.len() / k;
    let mut h = faer::Mat::<f64>::zeros(k, k);
    for row in z.chunks_exact(k) {
        let m = row.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = row.iter().map(|v| (v - m).exp()).collect();
        let s: f64 = e.iter().sum();
        for i in 0..k {
            for j in 0..k {
                let (si, sj) = (e[i] / s, e[j] / s);
                h[(i, j)] += if i == j { si - si * sj } else { -si * sj } / n as f64;
            }
        }
    }
    h.self_adjoint_eigenvalues(faer::Side::Lower).unwrap()
}

#[test]
fn exact_matches_the_full_eigen_solver() {
    for (k, spread) in [(2, 1.0), (3, 0.5), (10, 2.0), (57, 1.0)] {
        let z = logits(400, k, k as u64, spread, 1.5);
        let (c, lambda_min) = exact(&z, k);
        let ev = brute(&z, k);
        // ev[0] is the ones direction (about 1e-17); ev[1] is lambda_2.
        assert!(
            ev[0].abs() < 1e-14 && lambda_min.abs() < 1e-14,
            "{ev:?} {lambda_min}"
        );
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        assert!(
            rel(c.lambda_2, ev[1]) < 1e-11,
            "K={k}: {} vs {}",
            c.lambda_2,
            ev[1]
        );
        assert!(rel(c.lambda_max, ev[k - 1]) < 1e-11, "K={k}");
        assert!((c.condition - c.lambda_max / c.lambda_2).abs() <= 1e-12 * c.condition);
        assert_eq!((c.method, c.converged), ("exact", true));
    }
}

#[test]
fn uniform_softmax_has_condition_one() {
    // s = 1/K everywhere: H = (I - 1 1^T / K) / K, every eigenvalue on 1^perp is 1/K.
    let k = 16;
    let z = vec![0.25; 50 * k];
    let (c, _) = exact(&z, k);
    let want = 1.0 / k as f64;
    assert!((c.lambda_2 - want).abs() < 1e-15 && (c.lambda_max - want).abs() < 1e-15);
    let ctl = Control::new(2);
    let mut op = SoftmaxOperator::memory(Rows::F64(&z), k, NanPolicy::Raise, &ctl).unwrap();
    let l = lanczos(&mut op, k, &LanczosOptions::default()).unwrap();
    assert!((l.lambda_2 - want).abs() < 1e-14 && (l.lambda_max - want).abs() < 1e-14);
    assert!(l.converged);
}

#[test]
fn lanczos_matches_exact() {
    for (k, n) in [(2, 300), (10, 2000), (300, 3000)] {
        let z = logits(n, k, 7 + k as u64, 1.0, 2.0);
        let (want, _) = exact(&z, k);
        let ctl = Control::new(2);
        let mut op = SoftmaxOperator::memory(Rows::F64(&z), k, NanPolicy::Raise, &ctl).unwrap();
        let got = lanczos(&mut op, k, &LanczosOptions::default()).unwrap();
        assert_eq!(op.rows, n as u64);
        let rel = |a: f64, b: f64| ((a - b) / b).abs();
        assert!(got.converged, "K={k}: {got:?}");
        assert!(
            rel(got.lambda_2, want.lambda_2) < 1e-6,
            "K={k}: {got:?} vs {want:?}"
        );
        assert!(
            rel(got.lambda_max, want.lambda_max) < 1e-6,
            "K={k}: {got:?} vs {want:?}"
        );
        // Ritz values are Rayleigh quotients: never outside [lambda_2, lambda_max].
        assert!(got.lambda_2 >= want.lambda_2 * (1.0 - 1e-12));
        assert!(got.lambda_max <= want.lambda_max * (1.0 + 1e-12));
    }
}

#[test]
fn lanczos_rejects_non_finite_rows_unless_omitted() {
    let k = 5;
    let mut z = logits(100, k, 3, 1.0, 1.0);
    z[37 * k + 2] = f64::NAN;
    let ctl = Control::new(2);
    let mut op = SoftmaxOperator::memory(Rows::F64(&z), k, NanPolicy::Raise, &ctl).unwrap();
    let err = lanczos(&mut op, k, &LanczosOptions::default()).unwrap_err();
    assert!(err.to_string().contains("row 37"), "{err}");
    let mut op = SoftmaxOperator::memory(Rows::F64(&z), k, NanPolicy::Omit, &ctl).unwrap();
    lanczos(&mut op, k, &LanczosOptions::default()).unwrap();
    assert_eq!(op.rows, 99);
}
