//! The accumulator against a direct float64 computation, plus merge, pickling
//! state, and bad input, without Python.

use lort_core::stats::{HessianMode, LogitStats, NanPolicy, Options};
use lort_core::{Control, Error, Labels, Rows};

/// A small deterministic generator (no dev-dependency needed).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn data(n: usize, k: usize, offset: f64, spread: f64, seed: u64) -> (Vec<f64>, Vec<i64>) {
    let mut g = Lcg(seed);
    let labels: Vec<i64> = (0..n).map(|_| (g.next() * k as f64) as i64).collect();
    let mut z = Vec::with_capacity(n * k);
    for &y in &labels {
        for j in 0..k {
            let margin = if j as i64 == y { 2.0 * spread } else { 0.0 };
            z.push(offset + spread * (g.next() - 0.5) * 4.0 + margin);
        }
    }
    (z, labels)
}

fn run(z: &[f64], y: &[i64], k: usize, options: Options, threads: usize) -> LogitStats {
    let mut s = LogitStats::new(k, options).unwrap();
    s.update(Rows::F64(z), &Labels::I64(y), &Control::new(threads))
        .unwrap();
    s
}

/// Mean and population std of a column over the rows selected by `keep`.
fn column(z: &[f64], k: usize, j: usize, keep: impl Fn(usize) -> bool) -> (f64, f64) {
    let vals: Vec<f64> = (0..z.len() / k)
        .filter(|&i| keep(i))
        .map(|i| z[i * k + j])
        .collect();
    let n = vals.len() as f64;
    let mean = vals.iter().sum::<f64>() / n;
    let var = vals.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Relative closeness, with a floor for values near zero (means of centred data).
fn close(a: f64, b: f64, rtol: f64) -> bool {
    (a - b).abs() <= rtol * (a.abs().max(b.abs()) + 1e-2)
}

#[test]
fn moments_match_a_direct_float64_computation() {
    for &(offset, spread) in &[(0.0, 1.0), (1e3, 1e-2), (-50.0, 3.0)] {
        let (k, n) = (7, 3001);
        let (z, y) = data(n, k, offset, spread, 42);
        let r = run(&z, &y, k, Options::default(), 2)
            .finalize(None)
            .unwrap();
        for j in 0..k {
            let (pm, ps) = column(&z, k, j, |i| y[i] as usize == j);
            let (nm, ns) = column(&z, k, j, |i| y[i] as usize != j);
            let c = &r.per_class;
            assert!(close(c.pos_mean[j], pm, 1e-12), "pos mean {j}");
            assert!(close(c.neg_mean[j], nm, 1e-12), "neg mean {j}");
            assert!(
                close(c.pos_std[j], ps, 1e-9),
                "pos std {j}: {} vs {ps}",
                c.pos_std[j]
            );
            assert!(
                close(c.neg_std[j], ns, 1e-9),
                "neg std {j}: {} vs {ns}",
                c.neg_std[j]
            );
            assert!(close(c.magnitude[j], pm - nm, 1e-9), "L {j}");
            assert!(close(c.rstd[j], ps / (pm - nm), 1e-9), "r {j}");
        }
    }
}

#[test]
fn merged_shards_equal_one_pass() {
    let (k, n) = (5, 1000);
    let (z, y) = data(n, k, 0.0, 1.0, 7);
    let whole = run(&z, &y, k, Options::default(), 1);
    let mut a = run(&z[..400 * k], &y[..400], k, Options::default(), 2);
    let b = run(&z[400 * k..], &y[400..], k, Options::default(), 1);
    a.merge(&b).unwrap();
    let (rw, ra) = (whole.finalize(None).unwrap(), a.finalize(None).unwrap());
    assert_eq!(whole.rows, a.rows);
    assert_eq!(whole.correct, a.correct);
    assert_eq!(whole.predicted, a.predicted);
    for j in 0..k {
        assert!(close(
            rw.per_class.pos_std[j],
            ra.per_class.pos_std[j],
            1e-12
        ));
        assert!(close(
            rw.per_class.neg_mean[j],
            ra.per_class.neg_mean[j],
            1e-12
        ));
    }
    assert!(close(rw.overall.nll, ra.overall.nll, 1e-12));
}

#[test]
fn state_bytes_round_trip_exactly() {
    for mode in [HessianMode::None, HessianMode::Bound, HessianMode::Exact] {
        let (z, y) = data(300, 4, 0.0, 1.0, 3);
        let s = run(
            &z,
            &y,
            4,
            Options {
                hessian: mode,
                nan_policy: NanPolicy::Raise,
            },
            2,
        );
        let back = LogitStats::from_bytes(&s.to_bytes().unwrap()).unwrap();
        assert_eq!(s, back);
        let mut bytes = s.to_bytes().unwrap();
        bytes.pop();
        assert!(LogitStats::from_bytes(&bytes).is_err());
    }
}

#[test]
fn exact_and_bound_hessian_agree_that_it_is_psd() {
    let (z, y) = data(2000, 6, 0.0, 2.0, 11);
    for mode in [HessianMode::Bound, HessianMode::Exact] {
        let s = run(
            &z,
            &y,
            6,
            Options {
                hessian: mode,
                nan_policy: NanPolicy::Raise,
            },
            2,
        );
        let h = s.finalize(None).unwrap().hessian.unwrap();
        assert!(h.psd, "{mode:?}: {h:?}");
        assert!(h.lambda_min.abs() < 1e-12, "{mode:?}: {h:?}");
        assert!(h.scale > 0.0);
    }
}

#[test]
fn the_first_nan_row_is_named_and_nothing_is_kept() {
    let (k, n) = (16, 40_000);
    let (mut z, y) = data(n, k, 0.0, 1.0, 5);
    for &bad in &[39_000usize, 20_001, 30_000] {
        z[bad * k + 3] = f64::NAN;
    }
    let mut s = LogitStats::new(k, Options::default()).unwrap();
    let err = s
        .update(Rows::F64(&z), &Labels::I64(&y), &Control::new(2))
        .unwrap_err();
    match err {
        Error::NonFinite(m) => assert!(m.contains("row 20001 "), "{m}"),
        e => panic!("{e:?}"),
    }
    assert_eq!(s, LogitStats::new(k, Options::default()).unwrap());

    let omit = Options {
        nan_policy: NanPolicy::Omit,
        ..Options::default()
    };
    let mut s = LogitStats::new(k, omit).unwrap();
    s.update(Rows::F64(&z), &Labels::I64(&y), &Control::new(2))
        .unwrap();
    assert_eq!((s.rows, s.omitted), (n as u64 - 3, 3));
}

#[test]
fn bad_labels_are_errors_naming_the_row() {
    let z = vec![0.0f32; 12];
    let mut s = LogitStats::new(3, Options::default()).unwrap();
    let ctl = Control::new(1);
    match s.update(Rows::F32(&z), &Labels::I32(&[0, 1, 3, 2]), &ctl) {
        Err(Error::Label(m)) => assert!(m.contains("row 2"), "{m}"),
        r => panic!("{r:?}"),
    }
    assert!(matches!(
        s.update(Rows::F32(&z), &Labels::I8(&[0, -1, 1, 2]), &ctl),
        Err(Error::Label(_))
    ));
    assert!(matches!(
        s.update(Rows::F32(&z), &Labels::U8(&[0, 1]), &ctl),
        Err(Error::Label(_))
    ));
    assert!(matches!(
        s.update(Rows::F32(&z[..11]), &Labels::U8(&[0]), &ctl),
        Err(Error::Input(_))
    ));
    assert_eq!(s.rows, 0);
}

#[test]
fn f32_input_agrees_with_f64_input() {
    let (k, n) = (9, 2000);
    let (z, y) = data(n, k, 0.0, 1.0, 9);
    let z32: Vec<f32> = z.iter().map(|&v| v as f32).collect();
    let z64: Vec<f64> = z32.iter().map(|&v| v as f64).collect();
    let a = run(&z64, &y, k, Options::default(), 2)
        .finalize(None)
        .unwrap();
    let mut s = LogitStats::new(k, Options::default()).unwrap();
    s.update(Rows::F32(&z32), &Labels::I64(&y), &Control::new(2))
        .unwrap();
    let b = s.finalize(None).unwrap();
    for j in 0..k {
        assert!(close(a.per_class.pos_std[j], b.per_class.pos_std[j], 1e-12));
        assert!(close(a.per_class.neg_std[j], b.per_class.neg_std[j], 1e-12));
    }
    assert_eq!(a.per_class.accuracy, b.per_class.accuracy);
    assert!(close(a.overall.nll, b.overall.nll, 1e-6));
}

#[test]
fn nll_keeps_the_log_of_tied_maxima_next_to_huge_logits() {
    let ln = |c: f64| c.ln();
    for (z, y, k, want) in [
        (vec![1e20, 1e20], 0, 2, ln(2.0)),
        (vec![-1e300, 1e300, 1e300, 1e300], 3, 4, ln(3.0)),
        (
            vec![1e15 + 1.0, 1e15, 1e15 + 1.0],
            1,
            3,
            1.0 + ln(2.0 + (-1f64).exp()),
        ),
    ] {
        let s = run(&z, &[y], k, Options::default(), 1);
        let nll = s.finalize(None).unwrap().overall.nll;
        assert!((nll - want).abs() <= 4e-15 * want, "{z:?}: {nll} != {want}");
    }
    let rows = [1e38f32, 1e38, -1e38, 1e38];
    let mut s = LogitStats::new(4, Options::default()).unwrap();
    s.update(Rows::F32(&rows), &Labels::I64(&[1]), &Control::new(1))
        .unwrap();
    let nll = s.finalize(None).unwrap().overall.nll;
    assert!((nll - ln(3.0)).abs() <= 1e-7, "{nll}");
}
