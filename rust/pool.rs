//! Worker threads: how many (`resolve_threads`), the pool that runs them
//! (`pool`), and the flags a pass shares with its caller (`Control`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::{Error, Result};

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

    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Adds `rows` to the progress counter, if the caller watches one.
    pub(crate) fn advance(&self, rows: u64) {
        if let Some(p) = self.progress {
            p.fetch_add(rows, Ordering::Relaxed);
        }
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

/// faer's parallelism for `threads` workers (run inside `pool(threads)`).
pub(crate) fn parallelism(threads: usize) -> faer::Par {
    match std::num::NonZeroUsize::new(threads) {
        Some(n) if n.get() > 1 => faer::Par::Rayon(n),
        _ => faer::Par::Seq,
    }
}
