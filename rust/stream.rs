//! Rows as a pass reads them: in memory or in a `.npy` file (`Source`), read a
//! block at a time into reusable buffers and decoded into the types the
//! kernels take (`Block`: float16 widened to f32), and the one block
//! scheduler (`Source::for_blocks`): a pool of workers claims blocks in row
//! order, each into a state of its own.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::memory::reserve;
use crate::npy::{Dtype, NpyFile};
use crate::pool::{pool, Control};
use crate::{Error, Result};

/// Bytes of logits one worker reads and processes at a time (fits in L2).
pub(crate) const BLOCK_BYTES: usize = 512 * 1024;

/// Rows in memory, in one of the accepted dtypes.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl<'a> Rows<'a> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Rows::F16(s) => s.len(),
            Rows::F32(s) => s.len(),
            Rows::F64(s) => s.len(),
        }
    }

    fn itemsize(&self) -> usize {
        match self {
            Rows::F16(_) => 2,
            Rows::F32(_) => 4,
            Rows::F64(_) => 8,
        }
    }

    /// Values [a, b).
    fn range(self, a: usize, b: usize) -> Self {
        match self {
            Rows::F16(s) => Rows::F16(&s[a..b]),
            Rows::F32(s) => Rows::F32(&s[a..b]),
            Rows::F64(s) => Rows::F64(&s[a..b]),
        }
    }

    /// The first `n` values of `dtype` in `raw`, a buffer from `ReadBuf`.
    fn view(dtype: Dtype, raw: &'a [u8], n: usize) -> Self {
        match dtype {
            Dtype::F16 => Rows::F16(view(raw, n)),
            Dtype::F32 => Rows::F32(view(raw, n)),
            Dtype::F64 => Rows::F64(view(raw, n)),
        }
    }

    /// As the kernels take them: float16 widened into `wide`.
    fn widen<'b>(self, wide: &'b mut Vec<f32>) -> Block<'b>
    where
        'a: 'b,
    {
        match self {
            Rows::F32(s) => Block::F32(s),
            Rows::F64(s) => Block::F64(s),
            Rows::F16(s) => {
                wide.resize(s.len(), 0.0);
                s.convert_to_f32_slice(wide);
                Block::F32(wide)
            }
        }
    }
}

/// A float type that every bit pattern is a valid value of.
trait Plain: Copy {}
impl Plain for f16 {}
impl Plain for f32 {}
impl Plain for f64 {}

/// The first `n` elements of `T` in `raw` (little-endian, as `.npy` files
/// are checked to hold at open).
fn view<T: Plain>(raw: &[u8], n: usize) -> &[T] {
    assert!(
        raw.len() >= n * std::mem::size_of::<T>()
            && raw.as_ptr() as usize % std::mem::align_of::<T>() == 0
    );
    // SAFETY: the length and alignment are checked above, and every bit
    // pattern is a valid `T` (`Plain`).
    unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<T>(), n) }
}

/// A block of rows as the kernels take them: float16 arrives widened to f32.
#[derive(Clone, Copy)]
pub(crate) enum Block<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Block<'_> {
    /// Values in the block.
    pub(crate) fn len(&self) -> usize {
        match self {
            Block::F32(s) => s.len(),
            Block::F64(s) => s.len(),
        }
    }
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
    fn bytes(&mut self, len: usize) -> Result<&mut [u8]> {
        let words = len.div_ceil(8) + Self::ALIGN / 8;
        reserve(&mut self.words, words, "a read buffer")?;
        self.words.resize(words, 0);
        let addr = self.words.as_ptr() as usize;
        let skip = (Self::ALIGN - addr % Self::ALIGN) % Self::ALIGN;
        // SAFETY: `skip` < ALIGN bytes and the buffer holds len + ALIGN bytes;
        // any byte pattern is a valid u8.
        Ok(unsafe {
            std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>().add(skip), len)
        })
    }
}

/// One worker's reusable buffers: bytes read from a file, and float16 rows
/// widened to f32.
#[derive(Default)]
pub(crate) struct Buffers {
    raw: ReadBuf,
    wide: Vec<f32>,
}

/// What `Source::for_blocks` returns: the workers' states, and the first row
/// a block reported bad (the blocks after it were not needed).
pub(crate) struct Blocks<S> {
    pub states: Vec<S>,
    pub first_bad: Option<u64>,
}

impl Source<'_> {
    /// Rows in the source (`k` values each).
    pub(crate) fn rows(&self, k: usize) -> u64 {
        match self {
            Source::Memory(r) => (r.len() / k) as u64,
            Source::File(f) => f.header().rows,
        }
    }

    /// Rows of `k` values in about `target_bytes` of this source's dtype.
    pub(crate) fn rows_per_block(&self, k: usize, target_bytes: usize) -> u64 {
        let itemsize = match self {
            Source::Memory(r) => r.itemsize(),
            Source::File(f) => f.header().dtype.itemsize(),
        };
        (target_bytes / (k * itemsize)).max(1) as u64
    }

    /// Calls `f` on rows [start, start + n) as a `Block`, read from the file
    /// if need be; an error is the file's.
    pub(crate) fn read<R>(
        &self,
        start: u64,
        n: usize,
        k: usize,
        bufs: &mut Buffers,
        f: impl FnOnce(Block) -> R,
    ) -> Result<R> {
        let Buffers { raw, wide } = bufs;
        let rows = match self {
            Source::Memory(rows) => rows.range(start as usize * k, (start as usize + n) * k),
            Source::File(file) => {
                let dtype = file.header().dtype;
                let raw = raw.bytes(n * k * dtype.itemsize())?;
                file.read_rows_into(start, n, raw)?;
                Rows::view(dtype, raw, n * k)
            }
        };
        Ok(f(rows.widen(wide)))
    }

    /// Runs `f(state, block, first_row)` over the source's blocks of `block`
    /// rows, in parallel on `ctl.threads` workers that claim blocks in row
    /// order, each with a state made by `make` (an error from it stops the
    /// pass as one from `f` does). `f` returns the first bad row
    /// of its block, if any: that worker stops, and blocks starting after the
    /// earliest bad row are skipped. An error from `f` or from reading stops
    /// the pass and is returned; so is a cancellation by `ctl`.
    pub(crate) fn for_blocks<S: Send>(
        &self,
        k: usize,
        block: u64,
        ctl: &Control,
        make: impl Fn() -> Result<S> + Sync,
        f: impl Fn(&mut S, Block, u64) -> Result<Option<u64>> + Sync,
    ) -> Result<Blocks<S>> {
        let n = self.rows(k);
        let blocks = n.div_ceil(block);
        let next = AtomicU64::new(0);
        let first_bad = AtomicU64::new(u64::MAX);
        let failure: Mutex<Option<Error>> = Mutex::new(None);
        let stop = AtomicBool::new(false);
        let states: Mutex<Vec<S>> = Mutex::new(Vec::new());
        let workers = ctl.threads.min(blocks.max(1) as usize);
        pool(ctl.threads)?.scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|_| {
                    let mut state = match make() {
                        Ok(state) => state,
                        Err(e) => {
                            failure.lock().unwrap().get_or_insert(e);
                            stop.store(true, Ordering::Relaxed);
                            return;
                        }
                    };
                    let mut bufs = Buffers::default();
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
                        let out = self
                            .read(start, len, k, &mut bufs, |rows| f(&mut state, rows, start))
                            .and_then(|r| r);
                        match out {
                            Ok(None) => {}
                            Ok(Some(bad)) => {
                                first_bad.fetch_min(bad, Ordering::Relaxed);
                                break;
                            }
                            Err(e) => {
                                failure.lock().unwrap().get_or_insert(e);
                                stop.store(true, Ordering::Relaxed);
                                break;
                            }
                        }
                    }
                    states.lock().unwrap().push(state);
                });
            }
        });
        if let Some(e) = failure.into_inner().unwrap() {
            return Err(e);
        }
        let states = states.into_inner().unwrap();
        let bad = first_bad.load(Ordering::Relaxed);
        if bad != u64::MAX {
            return Ok(Blocks {
                states,
                first_bad: Some(bad),
            });
        }
        if ctl.cancelled() {
            return Err(Error::Interrupted);
        }
        Ok(Blocks {
            states,
            first_bad: None,
        })
    }
}
