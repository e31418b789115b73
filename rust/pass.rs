//! The passes of `LogitStats`: rows in memory or in a `.npy` file go through
//! per-worker `Partial`s (the block scheduler of `stream.rs`) whose results
//! are merged. The caller's accumulator changes only when the whole pass
//! succeeded.

use crate::hessian::gram_update;
use crate::labels::Labels;
use crate::memory::zeros;
use crate::npy::NpyFile;
use crate::options::{HessianMode, EXACT_BLOCK_BYTES};
use crate::partial::{BadRow, Partial};
use crate::pool::{pool, Control};
use crate::stats::{HessianState, LogitStats};
use crate::stream::{Block, Buffers, Rows, Source, BLOCK_BYTES};
use crate::{Error, Result};

/// Feeds a block whose first row is global row `row0` to `partial` (the
/// outer error is a refused allocation).
fn process(
    partial: &mut Partial,
    block: Block,
    labels: &Labels,
    row0: u64,
    probs: Option<&mut [f64]>,
) -> Result<std::result::Result<(), BadRow>> {
    match block {
        Block::F32(s) => partial.process(s, labels, row0, probs),
        Block::F64(s) => partial.process(s, labels, row0, probs),
    }
}

enum Pass {
    Done(Box<LogitStats>),
    BadRow(u64),
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
            self.pass(&source, labels, ctl)?
        };
        match delta {
            Pass::Done(d) => Ok(*d),
            Pass::BadRow(r) => Err(Error::NonFinite(format!(
                "row {r} of {what} holds NaN or Inf; fix the logits, or pass nan_policy='omit' \
                 to skip and count such rows"
            ))),
        }
    }

    /// The streaming pass: workers claim blocks in row order.
    fn pass(&self, source: &Source, labels: &Labels, ctl: &Control) -> Result<Pass> {
        let k = self.k;
        let block = source.rows_per_block(k, BLOCK_BYTES);
        let out = source.for_blocks(
            k,
            block,
            ctl,
            || Partial::new(self),
            |partial, rows, start| {
                let len = rows.len() / k;
                match process(partial, rows, labels, start, None)? {
                    Ok(()) => {
                        ctl.advance(len as u64);
                        Ok(None)
                    }
                    Err(BadRow(r)) => Ok(Some(r)),
                }
            },
        )?;
        if let Some(r) = out.first_bad {
            return Ok(Pass::BadRow(r));
        }
        let results = out.states.into_iter().map(Partial::finish).collect();
        self.merge_all(results)
    }

    /// Exact mode: blocks of rows are processed in parallel, then their softmax
    /// rows update the shared Gram matrix (itself a parallel product).
    fn pass_exact(&self, source: &Source, n: u64, labels: &Labels, ctl: &Control) -> Result<Pass> {
        let k = self.k;
        let pool = pool(ctl.threads)?;
        let block = source.rows_per_block(k, EXACT_BLOCK_BYTES / 2);
        let mut gram = zeros(k * k, "the K x K matrix of hessian='exact'")?;
        let workers = ctl.threads;
        let mut partials: Vec<(Partial, Buffers)> = (0..workers)
            .map(|_| Ok((Partial::new(self)?, Buffers::default())))
            .collect::<Result<_>>()?;
        let mut probs = zeros(block as usize * k, "a block of softmax rows")?;
        let mut start = 0;
        let mut first_bad = u64::MAX;
        while start < n {
            if ctl.cancelled() {
                return Err(Error::Interrupted);
            }
            let len = block.min(n - start) as usize;
            let probs = &mut probs[..len * k];
            probs.fill(0.0);
            let per = len.div_ceil(workers);
            let outcome: Vec<Result<std::result::Result<(), BadRow>>> = pool.install(|| {
                use rayon::prelude::*;
                partials
                    .par_iter_mut()
                    .zip(probs.par_chunks_mut(per * k))
                    .enumerate()
                    .map(|(i, ((partial, bufs), out))| {
                        let s = start + (i * per) as u64;
                        source
                            .read(s, out.len() / k, k, bufs, |rows| {
                                process(partial, rows, labels, s, Some(out))
                            })
                            .and_then(|r| r)
                    })
                    .collect()
            });
            for o in outcome {
                if let Err(BadRow(bad)) = o? {
                    first_bad = first_bad.min(bad);
                }
            }
            if first_bad != u64::MAX {
                break;
            }
            pool.install(|| gram_update(&mut gram, k, probs, ctl.threads));
            ctl.advance(len as u64);
            start += len as u64;
        }
        if first_bad != u64::MAX {
            return Ok(Pass::BadRow(first_bad));
        }
        if ctl.cancelled() {
            return Err(Error::Interrupted);
        }
        let mut results: Vec<LogitStats> = partials.into_iter().map(|(p, _)| p.finish()).collect();
        if let Some(HessianState::Exact { gram: g, .. }) =
            results.first_mut().map(|r| &mut r.hessian)
        {
            *g = gram;
        }
        self.merge_all(results)
    }

    /// The workers' results merged.
    fn merge_all(&self, results: Vec<LogitStats>) -> Result<Pass> {
        // Merging into the first partial, not into a fresh accumulator, keeps one
        // K x K matrix fewer alive in exact mode; the result is the same.
        let mut results = results.into_iter();
        let mut total = match results.next() {
            Some(first) => first,
            None => self.empty_like()?,
        };
        for r in results {
            total.merge(&r)?;
        }
        Ok(Pass::Done(Box::new(total)))
    }
}
