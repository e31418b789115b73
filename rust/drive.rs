//! Runs a pass over rows held in memory or in a `.npy` file: splits the rows
//! into blocks, lets a dedicated pool of workers claim blocks in order, and
//! merges the workers' partials. The caller's accumulator changes only when
//! the whole pass succeeded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::hessian::gram_update;
use crate::labels::Labels;
use crate::npy::{Dtype, NpyFile};
use crate::stats::{HessianMode, HessianState, LogitStats, Partial};
use crate::{Error, Result};

/// Bytes of logits one worker reads and processes at a time (fits in L2).
const BLOCK_BYTES: usize = 512 * 1024;
/// Bytes of softmax rows gathered per Gram-matrix update in exact mode.
pub(crate) const EXACT_BLOCK_BYTES: usize = 16 * 1024 * 1024;

/// Rows in memory, in one of the accepted dtypes.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Rows<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Rows::F16(s) => s.len(),
            Rows::F32(s) => s.len(),
            Rows::F64(s) => s.len(),
        }
    }
}

/// How a pass runs: worker count, and flags shared with the caller for Ctrl-C
/// and progress reporting.
pub struct Control<'a> {
    pub threads: usize,
    pub cancel: Option<&'a AtomicBool>,
    pub progress: Option<&'a AtomicU64>,
}

impl Control<'_> {
    pub fn new(threads: usize) -> Self {
        Self {
            threads,
            cancel: None,
            progress: None,
        }
    }
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }
}

/// Threads to use: the argument, else LORT_NUM_THREADS, else every core.
pub fn resolve_threads(requested: Option<usize>) -> Result<usize> {
    if let Some(n) = requested {
        return if n == 0 {
            Err(Error::Input("threads must be at least 1".into()))
        } else {
            Ok(n)
        };
    }
    if let Ok(v) = std::env::var("LORT_NUM_THREADS") {
        return match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(Error::Input(format!(
                "LORT_NUM_THREADS={v:?} is not a positive integer"
            ))),
        };
    }
    Ok(std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// One rayon pool per thread count, built on first use and kept.
pub(crate) fn pool(threads: usize) -> Result<Arc<rayon::ThreadPool>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<rayon::ThreadPool>>>> = OnceLock::new();
    let mut pools = POOLS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&threads) {
        return Ok(p.clone());
    }
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("lort-{i}"))
        .build()
        .map_err(|e| Error::Input(format!("cannot start {threads} threads: {e}")))?;
    let p = Arc::new(p);
    pools.insert(threads, p.clone());
    Ok(p)
}

/// Where a block of rows comes from.
pub(crate) enum Source<'a> {
    Memory(Rows<'a>),
    File(&'a NpyFile),
}

/// A reusable read buffer whose start is aligned to a cache line. The kernel
/// copies a pread into a destination 16 bytes off a cache line (where glibc
/// puts large allocations) at a fifth of the aligned rate on this machine's
/// CPUs (4 vs 21 GB/s measured with two threads).
#[derive(Default)]
struct ReadBuf {
    words: Vec<u64>,
}

impl ReadBuf {
    const ALIGN: usize = 64;

    /// A `len`-byte slice starting on a cache line; contents are unspecified.
    fn bytes(&mut self, len: usize) -> &mut [u8] {
        self.words.resize(len.div_ceil(8) + Self::ALIGN / 8, 0);
        let addr = self.words.as_ptr() as usize;
        let skip = (Self::ALIGN - addr % Self::ALIGN) % Self::ALIGN;
        // SAFETY: `skip` < ALIGN bytes and the buffer holds len + ALIGN bytes;
        // any byte pattern is a valid u8.
        unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>().add(skip), len)
        }
    }
}

/// One worker's accumulator and reusable buffers: bytes read from a file and
/// a float16 -> f32 widening buffer.
struct Worker {
    partial: Partial,
    raw: ReadBuf,
    wide: Vec<f32>,
}

impl Worker {
    fn new(template: &LogitStats) -> Self {
        Self {
            partial: Partial::new(template),
            raw: ReadBuf::default(),
            wide: Vec::new(),
        }
    }
}

impl Source<'_> {
    /// Feeds rows [start, start + n) to `partial`.
    fn process(
        &self,
        w: &mut Worker,
        start: u64,
        n: usize,
        labels: &Labels,
        probs: Option<&mut [f64]>,
    ) -> Result<std::result::Result<(), u64>> {
        let Worker { partial, raw, wide } = w;
        let k = partial.k();
        let (a, b) = (start as usize * k, (start as usize + n) * k);
        let out = match self {
            Source::Memory(Rows::F32(s)) => partial.process(&s[a..b], labels, start, probs),
            Source::Memory(Rows::F64(s)) => partial.process(&s[a..b], labels, start, probs),
            Source::Memory(Rows::F16(s)) => {
                wide.resize(b - a, 0.0);
                s[a..b].convert_to_f32_slice(wide);
                partial.process(&*wide, labels, start, probs)
            }
            Source::File(file) => {
                let dtype = file.header().dtype;
                let raw = raw.bytes(n * k * dtype.itemsize());
                file.read_rows_into(start, n, raw)?;
                let words = raw.as_ptr();
                // SAFETY: the buffer is 64-aligned, holds n*k little-endian
                // elements of `dtype` (checked at open), and every bit pattern
                // is a valid float.
                match dtype {
                    Dtype::F32 => {
                        let s = unsafe { std::slice::from_raw_parts(words.cast::<f32>(), n * k) };
                        partial.process(s, labels, start, probs)
                    }
                    Dtype::F64 => {
                        let s = unsafe { std::slice::from_raw_parts(words.cast::<f64>(), n * k) };
                        partial.process(s, labels, start, probs)
                    }
                    Dtype::F16 => {
                        let s = unsafe { std::slice::from_raw_parts(words.cast::<f16>(), n * k) };
                        wide.resize(n * k, 0.0);
                        s.convert_to_f32_slice(wide);
                        partial.process(&*wide, labels, start, probs)
                    }
                }
            }
        };
        Ok(out.map_err(|bad| bad.0))
    }
}

impl LogitStats {
    /// Adds in-memory rows (`rows.len() / K` of them) with their labels.
    pub fn update(&mut self, rows: Rows, labels: &Labels, ctl: &Control) -> Result<()> {
        let delta = self.pass_rows(rows, labels, ctl)?;
        self.merge(&delta)
    }

    /// Streams a `.npy` file of shape (N, K) through the accumulator.
    pub fn update_npy(&mut self, file: &NpyFile, labels: &Labels, ctl: &Control) -> Result<()> {
        let delta = self.pass_npy(file, labels, ctl)?;
        self.merge(&delta)
    }

    /// The statistics of in-memory rows alone, with this accumulator's options;
    /// `update` merges them in.
    pub fn pass_rows(&self, rows: Rows, labels: &Labels, ctl: &Control) -> Result<LogitStats> {
        if rows.len() % self.k != 0 {
            return Err(Error::Input(format!(
                "logits hold {} values, not a whole number of rows of {} classes",
                rows.len(),
                self.k
            )));
        }
        let n = (rows.len() / self.k) as u64;
        self.run(Source::Memory(rows), n, labels, ctl, "logits")
    }

    /// The statistics of a `.npy` file's rows alone (see `pass_rows`).
    pub fn pass_npy(&self, file: &NpyFile, labels: &Labels, ctl: &Control) -> Result<LogitStats> {
        let h = file.header();
        if h.cols as usize != self.k {
            return Err(Error::Input(format!(
                "{} has {} columns but the statistics are over {} classes",
                file.path().display(),
                h.cols,
                self.k
            )));
        }
        let what = file.path().display().to_string();
        self.run(Source::File(file), h.rows, labels, ctl, &what)
    }

    fn run(
        &self,
        source: Source,
        n: u64,
        labels: &Labels,
        ctl: &Control,
        what: &str,
    ) -> Result<LogitStats> {
        labels.validate(n, self.k, what)?;
        let delta = if self.options.hessian == HessianMode::Exact {
            self.pass_exact(&source, n, labels, ctl)?
        } else {
            self.pass(&source, n, labels, ctl)?
        };
        match delta {
            Pass::Done(d) => Ok(*d),
            Pass::BadRow(r) => Err(Error::NonFinite(format!(
                "row {r} of {what} holds NaN or Inf; fix the logits, or pass nan_policy='omit' \
                 to skip and count such rows"
            ))),
        }
    }

    fn rows_per_block(&self, source: &Source, target_bytes: usize) -> usize {
        let itemsize = match source {
            Source::Memory(Rows::F16(_)) => 2,
            Source::Memory(Rows::F32(_)) => 4,
            Source::Memory(Rows::F64(_)) => 8,
            Source::File(f) => f.header().dtype.itemsize(),
        };
        (target_bytes / (self.k * itemsize)).max(1)
    }

    /// The streaming pass: workers claim blocks in row order.
    fn pass(&self, source: &Source, n: u64, labels: &Labels, ctl: &Control) -> Result<Pass> {
        let block = self.rows_per_block(source, BLOCK_BYTES) as u64;
        let blocks = n.div_ceil(block);
        let next = AtomicU64::new(0);
        let first_bad = AtomicU64::new(u64::MAX);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let results: Mutex<Vec<LogitStats>> = Mutex::new(Vec::new());
        let workers = ctl.threads.min(blocks.max(1) as usize);
        pool(ctl.threads)?.scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|_| {
                    let mut worker = Worker::new(self);
                    loop {
                        if stop.load(Ordering::Relaxed) || ctl.cancelled() {
                            break;
                        }
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        let start = b * block;
                        // Blocks after a bad row are not needed to name the first one.
                        if b >= blocks || start > first_bad.load(Ordering::Relaxed) {
                            break;
                        }
                        let len = block.min(n - start) as usize;
                        match source.process(&mut worker, start, len, labels, None) {
                            Ok(Ok(())) => {}
                            Ok(Err(bad)) => {
                                first_bad.fetch_min(bad, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => {
                                failure.lock().unwrap().get_or_insert(e);
                                stop.store(true, Ordering::Relaxed);
                                break;
                            }
                        }
                        if let Some(p) = ctl.progress {
                            p.fetch_add(len as u64, Ordering::Relaxed);
                        }
                    }
                    results.lock().unwrap().push(worker.partial.finish());
                });
            }
        });
        self.collect(results.into_inner().unwrap(), failure, &first_bad, ctl)
    }

    /// Exact mode: blocks of rows are processed in parallel, then their softmax
    /// rows update the shared Gram matrix (itself a parallel product).
    fn pass_exact(&self, source: &Source, n: u64, labels: &Labels, ctl: &Control) -> Result<Pass> {
        let k = self.k;
        let pool = pool(ctl.threads)?;
        let block = self.rows_per_block(source, EXACT_BLOCK_BYTES / 2) as u64;
        let mut gram = vec![0.0; k * k];
        let workers = ctl.threads;
        let mut partials: Vec<Worker> = (0..workers).map(|_| Worker::new(self)).collect();
        let mut probs = vec![0.0; block as usize * k];
        let mut start = 0;
        let first_bad = AtomicU64::new(u64::MAX);
        while start < n {
            if ctl.cancelled() {
                return Err(Error::Interrupted);
            }
            let len = block.min(n - start) as usize;
            let probs = &mut probs[..len * k];
            probs.fill(0.0);
            let per = len.div_ceil(workers);
            let outcome: Vec<Result<std::result::Result<(), u64>>> = pool.install(|| {
                use rayon::prelude::*;
                partials
                    .par_iter_mut()
                    .zip(probs.par_chunks_mut(per * k))
                    .enumerate()
                    .map(|(i, (worker, out))| {
                        let s = start + (i * per) as u64;
                        source.process(worker, s, out.len() / k, labels, Some(out))
                    })
                    .collect()
            });
            for o in outcome {
                if let Err(bad) = o? {
                    first_bad.fetch_min(bad, Ordering::Relaxed);
                }
            }
            if first_bad.load(Ordering::Relaxed) != u64::MAX {
                break;
            }
            pool.install(|| gram_update(&mut gram, k, probs, ctl.threads));
            if let Some(p) = ctl.progress {
                p.fetch_add(len as u64, Ordering::Relaxed);
            }
            start += len as u64;
        }
        let mut results: Vec<LogitStats> =
            partials.into_iter().map(|w| w.partial.finish()).collect();
        if let Some(HessianState::Exact { gram: g, .. }) =
            results.first_mut().map(|r| &mut r.hessian)
        {
            *g = gram;
        }
        self.collect(results, Mutex::new(None), &first_bad, ctl)
    }

    fn collect(
        &self,
        results: Vec<LogitStats>,
        failure: Mutex<Option<Error>>,
        first_bad: &AtomicU64,
        ctl: &Control,
    ) -> Result<Pass> {
        if let Some(e) = failure.into_inner().unwrap() {
            return Err(e);
        }
        let bad = first_bad.load(Ordering::Relaxed);
        if bad != u64::MAX {
            return Ok(Pass::BadRow(bad));
        }
        if ctl.cancelled() {
            return Err(Error::Interrupted);
        }
        // Merging into the first partial, not into a fresh accumulator, keeps one
        // K x K matrix fewer alive in exact mode; the result is the same.
        let mut results = results.into_iter();
        let mut total = results.next().unwrap_or_else(|| self.empty_like());
        for r in results {
            total.merge(&r)?;
        }
        Ok(Pass::Done(Box::new(total)))
    }
}

enum Pass {
    Done(Box<LogitStats>),
    BadRow(u64),
}

/// A block of rows as the kernels take them: float16 arrives widened to f32.
pub(crate) enum Block<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Source<'_> {
    /// Rows in the source (`k` values each).
    pub(crate) fn rows(&self, k: usize) -> u64 {
        match self {
            Source::Memory(r) => (r.len() / k) as u64,
            Source::File(f) => f.header().rows,
        }
    }

    /// Runs `f(state, block, first_row)` over every block of rows, in parallel
    /// on `ctl.threads` workers that each own a state made by `make`; returns
    /// the states. A block that `f` rejects stops the pass with its error.
    pub(crate) fn for_blocks<S: Send>(
        &self,
        k: usize,
        ctl: &Control,
        make: impl Fn() -> S + Sync,
        f: impl Fn(&mut S, Block, u64) -> Result<()> + Sync,
    ) -> Result<Vec<S>> {
        let n = self.rows(k);
        let itemsize = match self {
            Source::Memory(Rows::F16(_)) => 2,
            Source::Memory(Rows::F32(_)) => 4,
            Source::Memory(Rows::F64(_)) => 8,
            Source::File(file) => file.header().dtype.itemsize(),
        };
        let block = (BLOCK_BYTES / (k * itemsize)).max(1) as u64;
        let blocks = n.div_ceil(block);
        let next = AtomicU64::new(0);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let states: Mutex<Vec<S>> = Mutex::new(Vec::new());
        let workers = ctl.threads.min(blocks.max(1) as usize);
        pool(ctl.threads)?.scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|_| {
                    let mut state = make();
                    let (mut raw, mut wide) = (ReadBuf::default(), Vec::<f32>::new());
                    loop {
                        if stop.load(Ordering::Relaxed) || ctl.cancelled() {
                            break;
                        }
                        let b = next.fetch_add(1, Ordering::Relaxed);
                        if b >= blocks {
                            break;
                        }
                        let start = b * block;
                        let len = block.min(n - start) as usize;
                        let out = self.block(start, len, k, &mut raw, &mut wide, |rows| {
                            f(&mut state, rows, start)
                        });
                        if let Err(e) = out {
                            failure.lock().unwrap().get_or_insert(e);
                            stop.store(true, Ordering::Relaxed);
                            break;
                        }
                    }
                    states.lock().unwrap().push(state);
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap() {
            return Err(e);
        }
        if ctl.cancelled() {
            return Err(Error::Interrupted);
        }
        Ok(states.into_inner().unwrap())
    }

    /// Rows [start, start + n) as a `Block`, read from the file if need be.
    fn block<R>(
        &self,
        start: u64,
        n: usize,
        k: usize,
        raw: &mut ReadBuf,
        wide: &mut Vec<f32>,
        f: impl FnOnce(Block) -> Result<R>,
    ) -> Result<R> {
        let (a, b) = (start as usize * k, (start as usize + n) * k);
        let mut widen = |s: &[f16]| {
            wide.resize(s.len(), 0.0);
            s.convert_to_f32_slice(wide);
        };
        match self {
            Source::Memory(Rows::F32(s)) => f(Block::F32(&s[a..b])),
            Source::Memory(Rows::F64(s)) => f(Block::F64(&s[a..b])),
            Source::Memory(Rows::F16(s)) => {
                widen(&s[a..b]);
                f(Block::F32(wide))
            }
            Source::File(file) => {
                let dtype = file.header().dtype;
                let raw = raw.bytes(n * k * dtype.itemsize());
                file.read_rows_into(start, n, raw)?;
                let words = raw.as_ptr();
                // SAFETY: as in `Source::process`.
                match dtype {
                    Dtype::F32 => f(Block::F32(unsafe {
                        std::slice::from_raw_parts(words.cast::<f32>(), n * k)
                    })),
                    Dtype::F64 => f(Block::F64(unsafe {
                        std::slice::from_raw_parts(words.cast::<f64>(), n * k)
                    })),
                    Dtype::F16 => {
                        widen(unsafe { std::slice::from_raw_parts(words.cast::<f16>(), n * k) });
                        f(Block::F32(wide))
                    }
                }
            }
        }
    }
}
