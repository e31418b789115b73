//! The curvature of the mean bias Hessian H = mean_n(diag(s_n) - s_n s_n^T) on
//! the subspace orthogonal to the all-ones vector.
//!
//! H 1 = 0 for every softmax, so lambda_min(H) = 0 carries no information.
//! What does is lambda_2, the smallest eigenvalue on 1^perp (how flat the
//! flattest direction of the bias problem is), lambda_max, and their ratio.
//! H is the Laplacian of the complete graph on the classes with edge weights
//! W_ij = mean_n s_ni s_nj, so lambda_2 is that graph's algebraic
//! connectivity.
//!
//! Two ways to get them:
//! - `exact_spectrum`: from the K x K matrix of hessian='exact'. A Householder
//!   reflection R maps the ones direction to e_0; the trailing (K-1) x (K-1)
//!   block of R H R is H on 1^perp, tridiagonalised in place (faer) and its
//!   extreme eigenvalues found by Sturm-sequence bisection.
//! - `lanczos`: block Lanczos with full reorthogonalisation on 1^perp, needing
//!   only products H V, computed from the logits one pass per block
//!   (`SoftmaxOperator`), with no K x K matrix. Each product uses the Laplacian
//!   form (H v)_i = s_i (sum_j s_j v_i - s . v) with the row's own sum of s, so
//!   rounding in s perturbs the graph weights, not H 1 = 0: a relative error
//!   u in every s_i moves every eigenvalue by at most about 2u relatively.

use faer::dyn_stack::{MemBuffer, MemStack};
use faer::linalg::evd::tridiag::{tridiag_in_place, tridiag_in_place_scratch};
use faer::reborrow::ReborrowMut;
use faer::{Mat, MatMut, Side};

use crate::kernel::{dispatch, Logit, Simd};
use crate::memory::{check_classes, collect, reserve, zeros};
use crate::npy::NpyFile;
use crate::options::NanPolicy;
use crate::pool::{parallelism, Control};
use crate::stream::{Block, Rows, Source, BLOCK_BYTES};
use crate::{Error, Result};

/// lambda_2, lambda_max and lambda_max / lambda_2 of H on 1^perp.
#[derive(Clone, Debug, PartialEq)]
pub struct Curvature {
    /// "exact" or "lanczos".
    pub method: &'static str,
    pub lambda_2: f64,
    pub lambda_max: f64,
    /// lambda_max / lambda_2 (infinite when lambda_2 <= 0).
    pub condition: f64,
    /// Lanczos: passes over the logits (one product H V each); exact: 0.
    pub passes: u32,
    /// Lanczos: both Ritz values met the residual tolerance (or the Krylov
    /// space filled 1^perp); exact: true.
    pub converged: bool,
}

impl Curvature {
    fn new(method: &'static str, lambda_2: f64, lambda_max: f64) -> Self {
        Self {
            method,
            lambda_2,
            lambda_max,
            condition: if lambda_2 > 0.0 {
                lambda_max / lambda_2
            } else {
                f64::INFINITY
            },
            passes: 0,
            converged: true,
        }
    }
}

/// What `exact_spectrum` finds in a K x K matrix H.
#[derive(Clone, Debug)]
pub struct Spectrum {
    pub curvature: Curvature,
    /// The smallest eigenvalue of H itself, within rounding (see `exact_spectrum`).
    pub lambda_min: f64,
}

/// Eigen-analysis of the symmetric K x K matrix `h` (column-major, both
/// triangles filled; overwritten), K >= 2.
///
/// With R the Householder reflection that swaps the ones direction q = 1/sqrt(K)
/// and -e_0, R H R = [[a, c^T], [c, B]]: B is H on 1^perp, a = q^T H q and c
/// the coupling, both zero in exact arithmetic. Its lambda_min is
/// min(a, lambda_min(B)) - |c|, which Weyl's theorem places within |c| below
/// the smallest eigenvalue of H.
pub fn exact_spectrum(h: &mut [f64], k: usize, threads: usize) -> Spectrum {
    assert!(k >= 2 && h.len() == k * k);
    // v = e_0 + q, u = v / |v|: R = I - 2 u u^T maps q to -e_0.
    let q = 1.0 / (k as f64).sqrt();
    let mut u = vec![q; k];
    u[0] += 1.0;
    let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
    u.iter_mut().for_each(|x| *x /= norm);
    // R H R = H - u p^T - p u^T with w = H u, p = 2 w - 2 (u . w) u.
    let mut w = vec![0.0; k];
    for (j, col) in h.chunks_exact(k).enumerate() {
        let uj = u[j];
        w.iter_mut().zip(col).for_each(|(wi, hij)| *wi += hij * uj);
    }
    let uw: f64 = u.iter().zip(&w).map(|(a, b)| a * b).sum();
    let p: Vec<f64> = w
        .iter()
        .zip(&u)
        .map(|(wi, ui)| 2.0 * wi - 2.0 * uw * ui)
        .collect();
    for (j, col) in h.chunks_exact_mut(k).enumerate() {
        let (uj, pj) = (u[j], p[j]);
        for (i, x) in col.iter_mut().enumerate() {
            *x -= u[i] * pj + p[i] * uj;
        }
    }
    let a = h[0];
    let coupling = h[1..k].iter().map(|x| x * x).sum::<f64>().sqrt();

    let n = k - 1;
    let par = parallelism(threads);
    let mut b = MatMut::from_column_major_slice_mut(h, k, k).submatrix_mut(1, 1, n, n);
    let mut householder = Mat::<f64>::zeros(1, n.saturating_sub(1));
    let mut mem = MemBuffer::new(tridiag_in_place_scratch::<f64>(n, par, Default::default()));
    tridiag_in_place(
        b.rb_mut(),
        householder.as_mut(),
        par,
        MemStack::new(&mut mem),
        Default::default(),
    );
    let diag: Vec<f64> = (0..n).map(|i| b[(i, i)]).collect();
    let off: Vec<f64> = (1..n).map(|i| b[(i, i - 1)]).collect();
    let lambda_2 = tridiagonal_eigenvalue(&diag, &off, 0);
    let lambda_max = tridiagonal_eigenvalue(&diag, &off, n - 1);
    Spectrum {
        curvature: Curvature::new("exact", lambda_2, lambda_max),
        lambda_min: a.min(lambda_2) - coupling,
    }
}

/// Eigenvalues of the symmetric tridiagonal matrix (diag, off) below `x`
/// (Sturm sequence of the LDL^T pivots).
fn count_below(diag: &[f64], off: &[f64], x: f64, pivmin: f64) -> usize {
    let mut count = 0;
    let mut d = 1.0;
    for (i, &di) in diag.iter().enumerate() {
        let e2 = if i == 0 { 0.0 } else { off[i - 1] * off[i - 1] };
        d = di - x - e2 / d;
        if d.abs() < pivmin {
            d = -pivmin;
        }
        count += (d < 0.0) as usize;
    }
    count
}

/// The `index`-th smallest eigenvalue of a symmetric tridiagonal matrix, by
/// bisection to full precision (absolute error about eps times its norm).
fn tridiagonal_eigenvalue(diag: &[f64], off: &[f64], index: usize) -> f64 {
    let n = diag.len();
    let radius = |i: usize| {
        (if i > 0 { off[i - 1].abs() } else { 0.0 }) + off.get(i).map_or(0.0, |e| e.abs())
    };
    let mut lo = (0..n)
        .map(|i| diag[i] - radius(i))
        .fold(f64::INFINITY, f64::min);
    let mut hi = (0..n)
        .map(|i| diag[i] + radius(i))
        .fold(f64::NEG_INFINITY, f64::max);
    let scale = lo.abs().max(hi.abs());
    let pivmin = f64::MIN_POSITIVE * off.iter().fold(1.0f64, |m, e| m.max(e * e));
    lo -= 2.0 * f64::EPSILON * scale + pivmin;
    hi += 2.0 * f64::EPSILON * scale + pivmin;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if count_below(diag, off, mid, pivmin) > index {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    0.5 * (lo + hi)
}

/// A symmetric operator on R^K, applied to a block of vectors at a time.
pub trait Operator {
    /// `y = A x` for `x` holding `x.len() / K` column-major vectors.
    fn apply(&mut self, x: &[f64], y: &mut [f64]) -> Result<()>;
}

/// Settings of the block Lanczos estimate.
#[derive(Clone, Copy, Debug)]
pub struct LanczosOptions {
    /// Vectors per product (one pass over the logits each).
    pub block: usize,
    /// Largest Krylov basis kept (its memory is 2 x 8 x K bytes per vector).
    pub max_basis: usize,
    /// Stop when the error estimate of both extreme Ritz values (see `lanczos`)
    /// is at most tol times the value.
    pub tol: f64,
}

impl Default for LanczosOptions {
    fn default() -> Self {
        Self {
            block: 2,
            max_basis: 400,
            tol: 1e-5,
        }
    }
}

impl LanczosOptions {
    /// Memory beyond the pass itself: the basis V and H V, `block` vectors per
    /// worker, and the Rayleigh quotient's eigen-decomposition.
    pub fn memory_bytes(&self, k: usize, threads: usize) -> u64 {
        let (k, m) = (k as u64, self.max_basis.min(k.saturating_sub(1)) as u64);
        let workers = (threads as u64).saturating_add(2);
        let vectors = m
            .saturating_mul(2)
            .saturating_add(workers.saturating_mul(self.block as u64))
            .saturating_mul(k);
        vectors
            .saturating_add(m.saturating_mul(m).saturating_mul(3))
            .saturating_mul(8)
    }
}

/// Deterministic pseudo-random numbers in (-1, 1) (splitmix64).
fn noise(seed: u64) -> impl FnMut() -> f64 {
    let mut state = seed;
    move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] * y[l];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Orthonormalises the columns of `x` (K each) against the ones vector, the
/// columns of `basis` and each other (Gram-Schmidt, twice); drops columns that
/// are (numerically) in the span already. Returns the columns kept. `v` is a
/// scratch vector of K.
fn orthonormalize(x: &mut Vec<f64>, basis: &[f64], k: usize, v: &mut [f64]) -> usize {
    let mut kept = 0;
    let cols = x.len() / k;
    for c in 0..cols {
        v.copy_from_slice(&x[c * k..(c + 1) * k]);
        let start = dot(v, v).sqrt();
        for _ in 0..2 {
            let mean = v.iter().sum::<f64>() / k as f64;
            v.iter_mut().for_each(|x| *x -= mean);
            for b in basis.chunks_exact(k).chain(x[..kept * k].chunks_exact(k)) {
                let d = dot(v, b);
                v.iter_mut().zip(b).for_each(|(x, y)| *x -= d * y);
            }
        }
        let norm = dot(v, v).sqrt();
        if norm.is_nan() || norm <= 1e-10 * start {
            continue;
        }
        v.iter_mut().for_each(|x| *x /= norm);
        x[kept * k..(kept + 1) * k].copy_from_slice(v);
        kept += 1;
    }
    x.truncate(kept * k);
    kept
}

/// Block Lanczos with full reorthogonalisation on 1^perp: the basis V grows by
/// the orthonormalised products of the last block; the extreme Ritz values of
/// V^T H V estimate lambda_2 from above and lambda_max from below (they are
/// Rayleigh quotients on 1^perp). Converged means both errors, estimated as
/// min(|r|, |r|^2 / gap) from the residual r = H y - theta y and the gap to
/// the neighbouring Ritz value, are within `tol` relative. K >= 2.
pub fn lanczos(op: &mut dyn Operator, k: usize, opts: &LanczosOptions) -> Result<Curvature> {
    assert!(k >= 2);
    let dim = k - 1;
    let max_basis = opts.max_basis.clamp(1, dim);
    // The whole basis and its products up front: a size the system refuses is
    // an error before the first pass.
    let (mut v, mut hv) = (Vec::new(), Vec::new());
    let basis = k.saturating_mul(max_basis);
    reserve(&mut v, basis, "the Lanczos basis")?;
    reserve(&mut hv, basis, "the Lanczos basis")?;
    let mut rand = noise(0x6C6F_7274);
    let mut x = collect(
        (0..k * opts.block.clamp(1, max_basis)).map(|_| rand()),
        "a Lanczos block",
    )?;
    let mut scratch: Vec<f64> = zeros(k, "a Lanczos vector")?;
    let mut t = Mat::<f64>::zeros(0, 0);
    let mut passes = 0;
    let mut ritz = (f64::NAN, f64::NAN, false);
    loop {
        let room = max_basis - v.len() / k;
        x.truncate(room.min(x.len() / k) * k);
        if orthonormalize(&mut x, &v, k, &mut scratch) == 0 {
            // The Krylov space is invariant: its Ritz values are exact.
            ritz.2 = true;
            break;
        }
        let mut y = zeros(x.len(), "a Lanczos block")?;
        op.apply(&x, &mut y)?;
        passes += 1;
        let p0 = v.len() / k;
        v.extend_from_slice(&x);
        hv.extend_from_slice(&y);
        let p = v.len() / k;
        // Grow T = V^T H V by the new columns, symmetrised.
        let mut grown = Mat::<f64>::zeros(p, p);
        grown
            .as_mut()
            .submatrix_mut(0, 0, p0, p0)
            .copy_from(t.as_ref());
        for j in p0..p {
            for i in 0..p {
                let tij = dot(&v[i * k..(i + 1) * k], &hv[j * k..(j + 1) * k]);
                let val = if i >= p0 && i < j {
                    0.5 * (grown[(i, j)] + tij)
                } else {
                    tij
                };
                grown[(i, j)] = val;
                grown[(j, i)] = val;
            }
        }
        t = grown;
        let eig = t
            .as_ref()
            .self_adjoint_eigen(Side::Lower)
            .map_err(|e| Error::Input(format!("Lanczos: eigen-solver failed ({e:?})")))?;
        let (vals, vecs) = (eig.S().column_vector(), eig.U());
        let mut residual = |c: usize, theta: f64| {
            let r = &mut scratch;
            r.fill(0.0);
            for i in 0..p {
                let yi = vecs[(i, c)];
                let (vi, hvi) = (&v[i * k..(i + 1) * k], &hv[i * k..(i + 1) * k]);
                r.iter_mut()
                    .zip(vi.iter().zip(hvi))
                    .for_each(|(r, (a, b))| *r += yi * (b - theta * a));
            }
            dot(r, r).sqrt()
        };
        let (lo, hi) = (vals[0], vals[p - 1]);
        // Error of a Ritz value with residual r and gap g to the next Ritz value:
        // at most |r|, and about |r|^2 / g once the vector has separated from its
        // neighbours (Kato-Temple, with the Ritz gap standing in for the true one).
        let mut error = |c: usize, theta: f64, next: f64| {
            let r = residual(c, theta);
            let gap = (next - theta).abs();
            if gap > 0.0 {
                r.min(r * r / gap)
            } else {
                r
            }
        };
        let converged = p == dim
            || (p > 1
                && error(0, lo, vals[1]) <= opts.tol * lo.abs()
                && error(p - 1, hi, vals[p - 2]) <= opts.tol * hi);
        ritz = (lo, hi, converged);
        if converged || p >= max_basis {
            break;
        }
        x = y;
    }
    let mut c = Curvature::new("lanczos", ritz.0, ritz.1);
    c.passes = passes;
    c.converged = ritz.2;
    Ok(c)
}

/// H V for logits held in memory or in `.npy` files: each product is one
/// parallel pass that recomputes the softmax of every row.
pub struct SoftmaxOperator<'a> {
    sources: Vec<Source<'a>>,
    k: usize,
    omit: bool,
    ctl: &'a Control<'a>,
    /// Rows used by the last product (finite rows).
    pub rows: u64,
}

impl<'a> SoftmaxOperator<'a> {
    pub fn memory(rows: Rows<'a>, k: usize, nan: NanPolicy, ctl: &'a Control<'a>) -> Result<Self> {
        Self::new(vec![Source::Memory(rows)], k, nan, ctl)
    }

    pub fn files(files: &'a [NpyFile], nan: NanPolicy, ctl: &'a Control<'a>) -> Result<Self> {
        let k = files.first().map_or(0, |f| f.header().cols as usize);
        if let Some(f) = files.iter().find(|f| f.header().cols as usize != k) {
            return Err(Error::Input(format!(
                "{} has {} columns but the first file has {k}",
                f.path().display(),
                f.header().cols
            )));
        }
        Self::new(files.iter().map(Source::File).collect(), k, nan, ctl)
    }

    fn new(
        sources: Vec<Source<'a>>,
        k: usize,
        nan: NanPolicy,
        ctl: &'a Control<'a>,
    ) -> Result<Self> {
        if k < 2 {
            return Err(Error::Input(format!(
                "the curvature needs at least 2 classes (got {k})"
            )));
        }
        check_classes(k as u64, "the number of classes")?;
        if let Some(Source::Memory(r)) = sources.first() {
            if r.len() % k != 0 {
                return Err(Error::Input(format!(
                    "logits hold {} values, not a whole number of rows of {k} classes",
                    r.len()
                )));
            }
        }
        Ok(Self {
            sources,
            k,
            omit: nan == NanPolicy::Omit,
            ctl,
            rows: 0,
        })
    }

    pub fn k(&self) -> usize {
        self.k
    }
}

/// One worker's sums of a product: sum over rows of the Laplacian terms.
struct Acc {
    y: Vec<f64>,
    exps: Vec<f64>,
    dots: Vec<f64>,
    rows: u64,
}

impl Operator for SoftmaxOperator<'_> {
    fn apply(&mut self, x: &[f64], y: &mut [f64]) -> Result<()> {
        let k = self.k;
        let b = x.len() / k;
        let what = "a Lanczos product";
        let mut total: Vec<f64> = zeros(k * b, what)?;
        let mut rows = 0;
        let mut offset = 0;
        for source in &self.sources {
            let make = || {
                Ok(Acc {
                    y: zeros(k * b, what)?,
                    exps: zeros(k, what)?,
                    dots: zeros(b, what)?,
                    rows: 0,
                })
            };
            let block = source.rows_per_block(k, BLOCK_BYTES);
            let accs = source.for_blocks(k, block, self.ctl, make, |acc, block, start| {
                let bad = match block {
                    Block::F32(s) => acc.add(s, k, x, self.omit),
                    Block::F64(s) => acc.add(s, k, x, self.omit),
                };
                match bad {
                    None => Ok(None),
                    Some(r) => Err(Error::NonFinite(format!(
                        "row {} of the logits holds NaN or Inf; fix the logits, or pass \
                         nan_policy='omit' to skip such rows",
                        offset + start + r as u64
                    ))),
                }
            })?;
            for acc in accs.states {
                total.iter_mut().zip(&acc.y).for_each(|(t, a)| *t += a);
                rows += acc.rows;
            }
            offset += source.rows(k);
        }
        if rows == 0 {
            return Err(Error::Input(
                "the curvature needs at least one row of finite logits".into(),
            ));
        }
        self.rows = rows;
        let inv = 1.0 / rows as f64;
        y.iter_mut().zip(&total).for_each(|(y, t)| *y = t * inv);
        Ok(())
    }
}

impl Acc {
    /// Adds the rows of `data`; returns the index of a non-finite row when
    /// such rows are not to be skipped.
    fn add<T: Logit>(&mut self, data: &[T], k: usize, x: &[f64], omit: bool) -> Option<usize> {
        dispatch(Add {
            acc: self,
            data,
            k,
            x,
            omit,
        })
    }

    #[inline(always)]
    fn add_impl<T: Logit, const AVX: bool>(
        &mut self,
        data: &[T],
        k: usize,
        x: &[f64],
        omit: bool,
    ) -> Option<usize> {
        for (r, row) in data.chunks_exact(k).enumerate() {
            let Some((max, _)) = T::scan::<AVX>(row) else {
                if omit {
                    continue;
                }
                return Some(r);
            };
            let sum = T::sum_exp::<AVX>(row, max, Some(&mut self.exps));
            let e = &self.exps[..];
            // (H v)_i += e_i (sum v_i - e . v) / sum^2: the Laplacian of the
            // weights e_i e_j / sum^2, whatever the rounding of e.
            for (d, xj) in self.dots.iter_mut().zip(x.chunks_exact(k)) {
                *d = dot(e, xj);
            }
            let c = 1.0 / (sum * sum);
            for ((yj, xj), &d) in self
                .y
                .chunks_exact_mut(k)
                .zip(x.chunks_exact(k))
                .zip(&self.dots)
            {
                for ((yi, &xi), &ei) in yj.iter_mut().zip(xj).zip(e) {
                    *yi += c * ei * (sum * xi - d);
                }
            }
            self.rows += 1;
        }
        None
    }
}

/// The arguments of `Acc::add`, for `kernel::dispatch`.
struct Add<'a, T> {
    acc: &'a mut Acc,
    data: &'a [T],
    k: usize,
    x: &'a [f64],
    omit: bool,
}

impl<T: Logit> Simd for Add<'_, T> {
    type Output = Option<usize>;
    #[inline(always)]
    fn run<const AVX: bool>(self) -> Option<usize> {
        self.acc
            .add_impl::<T, AVX>(self.data, self.k, self.x, self.omit)
    }
}
