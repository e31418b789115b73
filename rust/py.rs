//! The `lort._core` extension: arrays in, the GIL released for every pass,
//! Ctrl-C honoured, core errors raised as the classes of `lort.errors`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyKeyboardInterrupt, PyMemoryError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::curvature::{lanczos, Curvature, LanczosOptions, SoftmaxOperator};
use crate::memory::{out_of_memory, MAX_CLASSES};
use crate::npy::NpyFile;
use crate::options::{HessianMode, NanPolicy, Options};
use crate::report::Report;
use crate::{resolve_threads, Control, Error, Labels, LogitStats, Rows};

mod errors {
    pyo3::import_exception!(lort.errors, InputError);
    pyo3::import_exception!(lort.errors, LabelError);
    pyo3::import_exception!(lort.errors, NonFiniteError);
    pyo3::import_exception!(lort.errors, NpyFormatError);
    pyo3::import_exception!(lort.errors, TruncatedFileError);
    pyo3::import_exception!(lort.errors, FileReadError);
}

fn to_py(e: Error) -> PyErr {
    match e {
        Error::Input(m) => errors::InputError::new_err(m),
        Error::Label(m) => errors::LabelError::new_err(m),
        Error::NonFinite(m) => errors::NonFiniteError::new_err(m),
        Error::Format(m) => errors::NpyFormatError::new_err(m),
        Error::Truncated(m) => errors::TruncatedFileError::new_err(m),
        Error::Io(m) => errors::FileReadError::new_err(m),
        Error::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
    }
}

/// Rows below which a pass runs inline: no watcher thread, no polling delay.
const INLINE_VALUES: u64 = 1 << 20;
/// How often a long pass wakes to check for Ctrl-C and report progress.
const POLL: Duration = Duration::from_millis(50);

/// Runs `work` without the GIL. Long passes run on a scoped thread while this
/// thread wakes every `POLL` to check signals and call `progress(rows_done)`;
/// a KeyboardInterrupt (or an exception from `progress`) cancels the pass.
fn run_detached<T: Send>(
    py: Python<'_>,
    values: u64,
    threads: usize,
    progress: Option<&Bound<'_, PyAny>>,
    work: impl FnOnce(&Control) -> crate::Result<T> + Send,
) -> PyResult<T> {
    if values < INLINE_VALUES && progress.is_none() {
        return py.detach(|| work(&Control::new(threads))).map_err(to_py);
    }
    let cancel = AtomicBool::new(false);
    let done = AtomicU64::new(0);
    let callback = progress.map(|p| p.clone().unbind());
    let (out, interrupt) = py.detach(|| {
        std::thread::scope(|s| {
            let (tx, rx) = mpsc::channel();
            let (cancel, done) = (&cancel, &done);
            s.spawn(move || {
                let ctl = Control {
                    threads,
                    cancel: Some(cancel),
                    progress: Some(done),
                };
                let _ = tx.send(work(&ctl));
            });
            let mut reported = u64::MAX;
            let mut interrupt = None;
            loop {
                match rx.recv_timeout(POLL) {
                    Ok(out) => return (out, interrupt),
                    Err(mpsc::RecvTimeoutError::Disconnected) => {
                        return (
                            Err(Error::Input("internal error: a worker panicked".into())),
                            interrupt,
                        )
                    }
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                }
                if interrupt.is_some() {
                    continue;
                }
                let checked = Python::attach(|py| -> PyResult<()> {
                    py.check_signals()?;
                    let now = done.load(Ordering::Relaxed);
                    if let Some(cb) = &callback {
                        if now != reported {
                            cb.call1(py, (now,))?;
                            reported = now;
                        }
                    }
                    Ok(())
                });
                if let Err(e) = checked {
                    cancel.store(true, Ordering::Relaxed);
                    interrupt = Some(e);
                }
            }
        })
    });
    if let Some(e) = interrupt {
        return Err(e);
    }
    let out = out.map_err(to_py)?;
    if let Some(cb) = &callback {
        cb.call1(py, (done.load(Ordering::Relaxed),))?;
    }
    Ok(out)
}

/// A 2-D logits array borrowed read-only in one of the accepted dtypes.
enum LogitArray<'py> {
    F16(PyReadonlyArray2<'py, half::f16>),
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

impl<'py> LogitArray<'py> {
    fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray2<f32>>() {
            return Ok(Self::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<f64>>() {
            return Ok(Self::F64(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<half::f16>>() {
            return Ok(Self::F16(a));
        }
        Err(errors::InputError::new_err(format!(
            "logits must be a 2-D numpy array of float16, float32 or float64, got {}",
            describe(obj)
        )))
    }

    fn shape(&self) -> (usize, usize) {
        let s = match self {
            Self::F16(a) => a.as_array().dim(),
            Self::F32(a) => a.as_array().dim(),
            Self::F64(a) => a.as_array().dim(),
        };
        (s.0, s.1)
    }

    fn rows(&self) -> PyResult<Rows<'_>> {
        let c_order = match self {
            Self::F16(a) => a.is_c_contiguous(),
            Self::F32(a) => a.is_c_contiguous(),
            Self::F64(a) => a.is_c_contiguous(),
        };
        let contiguous = || {
            errors::InputError::new_err(
                "logits must be C-contiguous; pass np.ascontiguousarray(logits)",
            )
        };
        if !c_order {
            return Err(contiguous());
        }
        Ok(match self {
            Self::F16(a) => Rows::F16(a.as_slice().map_err(|_| contiguous())?),
            Self::F32(a) => Rows::F32(a.as_slice().map_err(|_| contiguous())?),
            Self::F64(a) => Rows::F64(a.as_slice().map_err(|_| contiguous())?),
        })
    }
}

fn describe(obj: &Bound<'_, PyAny>) -> String {
    let dtype = obj
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_default();
    let ndim = obj
        .getattr("ndim")
        .map(|d| d.to_string())
        .unwrap_or_default();
    if dtype.is_empty() {
        obj.get_type()
            .name()
            .map(|n| n.to_string())
            .unwrap_or_else(|_| "an unknown object".into())
    } else {
        format!("a {ndim}-D array of {dtype}")
    }
}

macro_rules! label_array {
    ($($v:ident: $t:ty),*) => {
        /// A 1-D integer labels array borrowed read-only.
        enum LabelArray<'py> { $($v(PyReadonlyArray1<'py, $t>)),* }

        impl<'py> LabelArray<'py> {
            fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
                $(if let Ok(a) = obj.extract::<PyReadonlyArray1<$t>>() {
                    return Ok(Self::$v(a));
                })*
                Err(errors::LabelError::new_err(format!(
                    "labels must be a 1-D numpy array of integers, got {}", describe(obj)
                )))
            }

            fn labels(&self) -> PyResult<Labels<'_>> {
                let contiguous = |_| errors::LabelError::new_err(
                    "labels must be contiguous; pass np.ascontiguousarray(labels)");
                Ok(match self { $(Self::$v(a) => Labels::$v(a.as_slice().map_err(contiguous)?)),* })
            }
        }
    };
}

label_array!(I8: i8, I16: i16, I32: i32, I64: i64, U8: u8, U16: u16, U32: u32, U64: u64);

/// `num_classes` as a class count. A negative or huge int is the core's one-line
/// error, not PyO3's OverflowError; the bound itself is `LogitStats::new`'s.
fn class_count(obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    match obj.extract::<u64>() {
        Ok(k) => Ok(usize::try_from(k).unwrap_or(usize::MAX)),
        Err(_) => {
            let int = obj.call_method0("__index__").map_err(|_| {
                errors::InputError::new_err(format!(
                    "num_classes must be an integer, got {}",
                    describe(obj)
                ))
            })?;
            Err(errors::InputError::new_err(format!(
                "num_classes is {int}; it must be between 1 and {MAX_CLASSES}"
            )))
        }
    }
}

/// Streaming per-class statistics of logits (see `lort/_core.pyi`).
#[pyclass(module = "lort._core", name = "LogitStats")]
pub struct PyLogitStats {
    inner: LogitStats,
    threads: Option<usize>,
}

impl PyLogitStats {
    fn with_classes(
        num_classes: usize,
        hessian: &str,
        nan_policy: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        let options = Options {
            hessian: HessianMode::parse(hessian).map_err(to_py)?,
            nan_policy: NanPolicy::parse(nan_policy).map_err(to_py)?,
        };
        resolve_threads(threads).map_err(to_py)?;
        Ok(Self {
            inner: LogitStats::new(num_classes, options).map_err(to_py)?,
            threads,
        })
    }

    fn threads(&self) -> PyResult<usize> {
        resolve_threads(self.threads).map_err(to_py)
    }

    fn update_file(
        &mut self,
        py: Python<'_>,
        path: PathBuf,
        labels: &Bound<'_, PyAny>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let labels = LabelArray::extract(labels)?;
        let labels = labels.labels()?;
        let threads = self.threads()?;
        let file = NpyFile::open(&path).map_err(to_py)?;
        let h = file.header();
        let values = h.rows * h.cols;
        let inner = &self.inner;
        let delta = run_detached(py, values, threads, progress, |ctl| {
            inner.pass_npy(&file, &labels, ctl)
        })?;
        self.inner.merge(&delta).map_err(to_py)
    }
}

#[pymethods]
impl PyLogitStats {
    #[new]
    #[pyo3(signature = (num_classes, *, hessian = "bound", nan_policy = "raise", threads = None))]
    fn new(
        num_classes: &Bound<'_, PyAny>,
        hessian: &str,
        nan_policy: &str,
        threads: Option<usize>,
    ) -> PyResult<Self> {
        Self::with_classes(class_count(num_classes)?, hessian, nan_policy, threads)
    }

    #[getter]
    fn num_classes(&self) -> usize {
        self.inner.k
    }

    #[getter]
    fn rows(&self) -> u64 {
        self.inner.rows
    }

    #[getter]
    fn omitted_rows(&self) -> u64 {
        self.inner.omitted
    }

    #[getter]
    fn hessian(&self) -> &'static str {
        self.inner.options.hessian.name()
    }

    #[getter]
    fn nan_policy(&self) -> &'static str {
        self.inner.options.nan_policy.name()
    }

    #[pyo3(signature = (logits, labels, *, progress = None))]
    fn update(
        &mut self,
        py: Python<'_>,
        logits: &Bound<'_, PyAny>,
        labels: &Bound<'_, PyAny>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let logits = LogitArray::extract(logits)?;
        let (n, k) = logits.shape();
        if k != self.inner.k {
            return Err(errors::InputError::new_err(format!(
                "logits have {k} columns but the statistics are over {} classes",
                self.inner.k
            )));
        }
        let rows = logits.rows()?;
        let labels = LabelArray::extract(labels)?;
        let labels = labels.labels()?;
        let threads = self.threads()?;
        let inner = &self.inner;
        let delta = run_detached(py, (n * k) as u64, threads, progress, |ctl| {
            inner.pass_rows(rows, &labels, ctl)
        })?;
        self.inner.merge(&delta).map_err(to_py)
    }

    #[pyo3(signature = (path, labels, *, progress = None))]
    fn update_npy(
        &mut self,
        py: Python<'_>,
        path: PathBuf,
        labels: &Bound<'_, PyAny>,
        progress: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.update_file(py, path, labels, progress)
    }

    /// Folds `other` in; merging an accumulator with itself doubles it (from a
    /// copy, the only case that needs one).
    fn merge(slf: &Bound<'_, Self>, other: &Bound<'_, Self>) -> PyResult<()> {
        if slf.is(other) {
            let theirs = slf.borrow().inner.try_clone().map_err(to_py)?;
            return slf.borrow_mut().inner.merge(&theirs).map_err(to_py);
        }
        let theirs = other.borrow();
        slf.borrow_mut().inner.merge(&theirs.inner).map_err(to_py)
    }

    fn copy(&self) -> PyResult<Self> {
        Ok(Self {
            inner: self.inner.try_clone().map_err(to_py)?,
            threads: self.threads,
        })
    }

    #[pyo3(signature = (train_counts = None))]
    fn finalize<'py>(
        &self,
        py: Python<'py>,
        train_counts: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let counts = match train_counts {
            None => None,
            Some(obj) => {
                let counts = obj.extract::<Vec<i64>>().map_err(|_| {
                    errors::InputError::new_err(format!(
                        "train_counts must be integer image counts, one per class, got {}",
                        describe(obj)
                    ))
                })?;
                if let Some(v) = counts.iter().find(|&&v| v < 0) {
                    return Err(errors::InputError::new_err(format!(
                        "train_counts must be non-negative image counts, found {v}"
                    )));
                }
                Some(counts.into_iter().map(|v| v as u64).collect::<Vec<u64>>())
            }
        };
        // hessian='exact' decomposes a K x K matrix here: on the accumulator's
        // threads, without the GIL.
        let threads = self.threads()?;
        let inner = &self.inner;
        let report = py
            .detach(|| inner.finalize_with_threads(counts.as_deref(), threads))
            .map_err(to_py)?;
        report_dict(py, &report, counts)
    }

    /// The state written straight into a Python `bytes` object; one Python
    /// refuses to allocate is an `InputError` like the core's own.
    fn __getstate__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let len = self.inner.byte_len();
        PyBytes::new_with(py, len, |buf| {
            self.inner.write_bytes(buf);
            Ok(())
        })
        .map_err(|e| {
            if e.is_instance_of::<PyMemoryError>(py) {
                to_py(out_of_memory::<u8>(len, "the pickled LogitStats state"))
            } else {
                e
            }
        })
    }

    fn __setstate__(&mut self, state: &[u8]) -> PyResult<()> {
        self.inner = LogitStats::from_bytes(state).map_err(to_py)?;
        Ok(())
    }

    fn __getnewargs__(&self) -> (usize,) {
        (self.inner.k,)
    }

    fn __repr__(&self) -> String {
        format!(
            "LogitStats(num_classes={}, rows={}, hessian='{}', nan_policy='{}')",
            self.inner.k,
            self.inner.rows,
            self.inner.options.hessian.name(),
            self.inner.options.nan_policy.name()
        )
    }
}

/// Streams one `.npy` file of logits (N x K, float16/32/64, C order) and
/// returns the accumulator; K comes from the file.
#[pyfunction]
#[pyo3(signature = (path, labels, *, hessian = "bound", nan_policy = "raise", threads = None, progress = None))]
fn analyze_npy(
    py: Python<'_>,
    path: PathBuf,
    labels: &Bound<'_, PyAny>,
    hessian: &str,
    nan_policy: &str,
    threads: Option<usize>,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<PyLogitStats> {
    let cols = NpyFile::open(&path).map_err(to_py)?.header().cols as usize;
    let mut stats = PyLogitStats::with_classes(cols, hessian, nan_policy, threads)?;
    stats.update_file(py, path, labels, progress)?;
    Ok(stats)
}

/// The `.npy` header of a file as (dtype name, rows, cols), without reading data.
#[pyfunction]
fn npy_header(path: PathBuf) -> PyResult<(&'static str, u64, u64)> {
    let f = NpyFile::open(&path).map_err(to_py)?;
    let h = f.header();
    Ok((h.dtype.name(), h.rows, h.cols))
}

fn opt(v: Option<f64>) -> Option<f64> {
    v.filter(|x| x.is_finite())
}

fn report_dict<'py>(
    py: Python<'py>,
    r: &Report,
    counts: Option<Vec<u64>>,
) -> PyResult<Bound<'py, PyDict>> {
    let c = &r.per_class;
    let pc = PyDict::new(py);
    for (name, v) in [
        ("pos_count", &c.pos_count),
        ("neg_count", &c.neg_count),
        ("predicted_count", &c.predicted_count),
    ] {
        pc.set_item(name, PyArray1::from_slice(py, v))?;
    }
    if let Some(tc) = counts {
        pc.set_item("train_count", PyArray1::from_vec(py, tc))?;
    }
    for (name, v) in [
        ("pos_mean", &c.pos_mean),
        ("neg_mean", &c.neg_mean),
        ("pos_std", &c.pos_std),
        ("neg_std", &c.neg_std),
        ("std", &c.std),
        ("magnitude", &c.magnitude),
        ("rstd", &c.rstd),
        ("rstd_neg", &c.rstd_neg),
        ("rstd_all", &c.rstd_all),
        ("accuracy", &c.accuracy),
    ] {
        pc.set_item(name, PyArray1::from_slice(py, v))?;
    }

    let o = &r.overall;
    let overall = PyDict::new(py);
    overall.set_item("rows", o.rows)?;
    overall.set_item("omitted_rows", o.omitted)?;
    overall.set_item("accuracy", opt(Some(o.accuracy)))?;
    overall.set_item("balanced_accuracy", opt(Some(o.balanced_accuracy)))?;
    overall.set_item("nll", opt(Some(o.nll)))?;
    overall.set_item("ece", opt(Some(o.ece)))?;

    let out = PyDict::new(py);
    out.set_item("num_classes", r.num_classes)?;
    out.set_item("per_class", pc)?;
    out.set_item("overall", overall)?;
    match &r.groups {
        None => out.set_item("groups", py.None())?,
        Some(groups) => {
            let g = PyDict::new(py);
            for grp in groups {
                let d = PyDict::new(py);
                d.set_item("classes", grp.classes)?;
                d.set_item("accuracy", opt(grp.accuracy))?;
                d.set_item("mean_magnitude", opt(grp.mean_magnitude))?;
                d.set_item("mean_rstd", opt(grp.mean_rstd))?;
                // A group without classes is null, never NaN.
                if grp.classes == 0 {
                    g.set_item(grp.name, py.None())?;
                } else {
                    g.set_item(grp.name, d)?;
                }
            }
            out.set_item("groups", g)?;
        }
    }
    match &r.hessian {
        None => out.set_item("hessian", py.None())?,
        Some(h) => {
            let d = PyDict::new(py);
            d.set_item("mode", h.mode)?;
            d.set_item("lambda_min", h.lambda_min)?;
            d.set_item("scale", h.scale)?;
            d.set_item("tolerance", h.tolerance)?;
            d.set_item("psd", h.psd)?;
            match &h.curvature {
                None => d.set_item("curvature", py.None())?,
                Some(c) => d.set_item("curvature", curvature_dict(py, c, r.overall.rows)?)?,
            }
            out.set_item("hessian", d)?;
        }
    }
    let bins = PyDict::new(py);
    bins.set_item(
        "count",
        PyArray1::from_iter(py, r.ece_bins.iter().map(|b| b.count)),
    )?;
    bins.set_item(
        "confidence",
        PyArray1::from_iter(py, r.ece_bins.iter().map(|b| b.confidence)),
    )?;
    bins.set_item(
        "correct",
        PyArray1::from_iter(py, r.ece_bins.iter().map(|b| b.correct)),
    )?;
    out.set_item("ece_bins", bins)?;
    Ok(out)
}

fn curvature_dict<'py>(py: Python<'py>, c: &Curvature, rows: u64) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("method", c.method)?;
    d.set_item("lambda_2", c.lambda_2)?;
    d.set_item("lambda_max", c.lambda_max)?;
    d.set_item("condition", c.condition)?;
    d.set_item("passes", c.passes)?;
    d.set_item("converged", c.converged)?;
    d.set_item("rows", rows)?;
    Ok(d)
}

fn lanczos_options(tol: f64, max_basis: usize, block: usize) -> PyResult<LanczosOptions> {
    if !(tol > 0.0 && tol < 1.0) || max_basis == 0 || block == 0 {
        return Err(errors::InputError::new_err(format!(
            "Lanczos needs 0 < tol < 1, max_basis >= 1 and block >= 1 \
             (got tol={tol}, max_basis={max_basis}, block={block})"
        )));
    }
    Ok(LanczosOptions {
        block,
        max_basis,
        tol,
    })
}

/// lambda_2, lambda_max and their ratio for the bias Hessian of in-memory
/// logits (N x K): the exact values (the K x K matrix) or the Lanczos estimate.
#[pyfunction]
#[pyo3(signature = (logits, *, method = "lanczos", nan_policy = "raise", threads = None,
                    tol = 1e-5, max_basis = 400, block = 2))]
#[allow(clippy::too_many_arguments)]
fn curvature<'py>(
    py: Python<'py>,
    logits: &Bound<'py, PyAny>,
    method: &str,
    nan_policy: &str,
    threads: Option<usize>,
    tol: f64,
    max_basis: usize,
    block: usize,
) -> PyResult<Bound<'py, PyDict>> {
    let nan = NanPolicy::parse(nan_policy).map_err(to_py)?;
    let threads = resolve_threads(threads).map_err(to_py)?;
    let opts = lanczos_options(tol, max_basis, block)?;
    let logits = LogitArray::extract(logits)?;
    let (n, k) = logits.shape();
    let rows = logits.rows()?;
    let values = (n * k) as u64;
    let (c, used) = match method {
        "lanczos" => run_detached(py, values, threads, None, |ctl| {
            let mut op = SoftmaxOperator::memory(rows, k, nan, ctl)?;
            let c = lanczos(&mut op, k, &opts)?;
            Ok((c, op.rows))
        })?,
        "exact" => {
            if k < 2 {
                return Err(errors::InputError::new_err(format!(
                    "the curvature needs at least 2 classes (got {k})"
                )));
            }
            let mut stats = LogitStats::new(
                k,
                Options {
                    hessian: HessianMode::Exact,
                    nan_policy: nan,
                },
            )
            .map_err(to_py)?;
            let labels = vec![0u8; n];
            let labels = Labels::U8(&labels);
            let delta = run_detached(py, values, threads, None, |ctl| {
                stats.pass_rows(rows, &labels, ctl)
            })?;
            stats.merge(&delta).map_err(to_py)?;
            drop(delta);
            let report = py
                .detach(|| stats.finalize_with_threads(None, threads))
                .map_err(to_py)?;
            let c = report.hessian.and_then(|h| h.curvature).ok_or_else(|| {
                errors::InputError::new_err("the curvature needs at least one row of finite logits")
            })?;
            (c, report.overall.rows)
        }
        _ => {
            return Err(errors::InputError::new_err(format!(
                "method={method:?} is not a curvature method; use 'exact' or 'lanczos'"
            )))
        }
    };
    curvature_dict(py, &c, used)
}

/// The Lanczos estimate of the curvature over `.npy` files of logits (row
/// shards of one set), one streaming pass per product; no K x K matrix.
#[pyfunction]
#[pyo3(signature = (paths, *, nan_policy = "raise", threads = None, tol = 1e-5,
                    max_basis = 400, block = 2, progress = None))]
#[allow(clippy::too_many_arguments)]
fn curvature_npy<'py>(
    py: Python<'py>,
    paths: Vec<PathBuf>,
    nan_policy: &str,
    threads: Option<usize>,
    tol: f64,
    max_basis: usize,
    block: usize,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let nan = NanPolicy::parse(nan_policy).map_err(to_py)?;
    let threads = resolve_threads(threads).map_err(to_py)?;
    let opts = lanczos_options(tol, max_basis, block)?;
    if paths.is_empty() {
        return Err(errors::InputError::new_err("no logits files given"));
    }
    let files = paths
        .iter()
        .map(|p| NpyFile::open(p))
        .collect::<crate::Result<Vec<_>>>()
        .map_err(to_py)?;
    let k = files[0].header().cols as usize;
    let values = files
        .iter()
        .map(|f| f.header().rows * f.header().cols)
        .sum();
    let (c, used) = run_detached(py, values, threads, progress, |ctl| {
        let mut op = SoftmaxOperator::files(&files, nan, ctl)?;
        let c = lanczos(&mut op, k, &opts)?;
        Ok((c, op.rows))
    })?;
    curvature_dict(py, &c, used)
}

/// Bytes hessian='exact' needs beyond the plain pass, for K classes.
#[pyfunction]
fn exact_memory_bytes(num_classes: usize) -> u64 {
    crate::options::exact_memory_bytes(num_classes)
}

/// Bytes the Lanczos estimate needs beyond the pass, for K classes.
#[pyfunction]
#[pyo3(signature = (num_classes, *, threads = None, max_basis = 400, block = 2))]
fn lanczos_memory_bytes(
    num_classes: usize,
    threads: Option<usize>,
    max_basis: usize,
    block: usize,
) -> PyResult<u64> {
    let threads = resolve_threads(threads).map_err(to_py)?;
    let opts = lanczos_options(1e-5, max_basis, block)?;
    Ok(opts.memory_bytes(num_classes, threads))
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLogitStats>()?;
    m.add_function(wrap_pyfunction!(analyze_npy, m)?)?;
    m.add_function(wrap_pyfunction!(npy_header, m)?)?;
    m.add_function(wrap_pyfunction!(curvature, m)?)?;
    m.add_function(wrap_pyfunction!(curvature_npy, m)?)?;
    m.add_function(wrap_pyfunction!(exact_memory_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(lanczos_memory_bytes, m)?)?;
    m.add("ECE_BINS", crate::stats::ECE_BINS)?;
    m.add("EXACT_MAX_CLASSES", crate::options::EXACT_MAX_CLASSES)?;
    m.add("MAX_CLASSES", MAX_CLASSES)?;
    m.add("GROUP_NAMES", crate::report::GROUP_NAMES)?;
    m.add("MANY_ABOVE", crate::report::MANY_ABOVE)?;
    m.add("FEW_BELOW", crate::report::FEW_BELOW)?;
    Ok(())
}
