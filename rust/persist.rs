//! A versioned little-endian byte format for `LogitStats`, used for pickling
//! (shards and DDP ranks ship their accumulators as bytes).

use crate::memory::zeros;
use crate::options::{HessianMode, NanPolicy, Options};
use crate::stats::{EceBin, HessianState, LogitStats, Moments, ECE_BINS};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"LORTSTAT";
/// 2 added the exact mode's diagonal sums; version 1 states of the other
/// modes are laid out the same way and still read.
const VERSION: u32 = 2;

/// Where `LogitStats::emit` puts the state: a `Count` of its bytes first, then
/// a `Fill` of a buffer allocated (fallibly) to that length, so the state is
/// laid out in one place and nothing grows while it is written.
trait Sink {
    fn bytes(&mut self, b: &[u8]);
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64s(&mut self, v: &[u64]) {
        v.iter().for_each(|&x| self.u64(x));
    }
    fn f64s(&mut self, v: &[f64]) {
        v.iter().for_each(|&x| self.f64(x));
    }
}

struct Count(usize);

impl Sink for Count {
    fn bytes(&mut self, b: &[u8]) {
        self.0 += b.len();
    }
    fn u64s(&mut self, v: &[u64]) {
        self.0 += 8 * v.len();
    }
    fn f64s(&mut self, v: &[f64]) {
        self.0 += 8 * v.len();
    }
}

struct Fill<'a>(&'a mut [u8]);

impl Sink for Fill<'_> {
    fn bytes(&mut self, b: &[u8]) {
        let (head, rest) = std::mem::take(&mut self.0).split_at_mut(b.len());
        head.copy_from_slice(b);
        self.0 = rest;
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            return Err(Error::Input("LogitStats state is truncated".into()));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// Reads `out.len()` values into `out` (allocated by `LogitStats::new`):
    /// a truncated state is refused before anything is read.
    fn u64s(&mut self, out: &mut [u64]) -> Result<()> {
        let bytes = self.take(8 * out.len())?;
        for (x, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *x = u64::from_le_bytes(b.try_into().unwrap());
        }
        Ok(())
    }
    fn f64s(&mut self, out: &mut [f64]) -> Result<()> {
        let bytes = self.take(8 * out.len())?;
        for (x, b) in out.iter_mut().zip(bytes.chunks_exact(8)) {
            *x = f64::from_le_bytes(b.try_into().unwrap());
        }
        Ok(())
    }
    fn moments(&mut self, m: &mut Moments) -> Result<()> {
        self.u64s(&mut m.n)?;
        self.f64s(&mut m.mean)?;
        self.f64s(&mut m.m2)
    }
}

fn mode_code(m: HessianMode) -> u64 {
    match m {
        HessianMode::None => 0,
        HessianMode::Bound => 1,
        HessianMode::Exact => 2,
    }
}

impl LogitStats {
    /// The state as bytes, in a buffer allocated fallibly (an error, not an
    /// abort, when the system refuses it).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = zeros(self.byte_len(), "the pickled LogitStats state")?;
        self.write_bytes(&mut out);
        Ok(out)
    }

    /// The length of [`LogitStats::to_bytes`]'s output.
    pub fn byte_len(&self) -> usize {
        let mut count = Count(0);
        self.emit(&mut count);
        count.0
    }

    /// Writes the state into `out`, which holds exactly `byte_len()` bytes.
    pub fn write_bytes(&self, out: &mut [u8]) {
        assert_eq!(out.len(), self.byte_len(), "a buffer of byte_len() bytes");
        self.emit(&mut Fill(out));
    }

    fn emit(&self, w: &mut impl Sink) {
        w.bytes(MAGIC);
        w.bytes(&VERSION.to_le_bytes());
        w.u64(self.k as u64);
        w.u64(mode_code(self.options.hessian));
        w.u64((self.options.nan_policy == NanPolicy::Omit) as u64);
        w.u64(self.rows);
        w.u64(self.omitted);
        for m in [&self.pos, &self.neg] {
            w.u64s(&m.n);
            w.f64s(&m.mean);
            w.f64s(&m.m2);
        }
        w.u64s(&self.correct);
        w.u64s(&self.predicted);
        w.f64(self.nll_sum);
        for b in &self.ece {
            w.u64(b.count);
            w.f64(b.confidence);
            w.u64(b.correct);
        }
        match &self.hessian {
            HessianState::None => {}
            HessianState::Bound {
                gershgorin: a,
                psum: b,
            }
            | HessianState::Exact {
                ssum: a, gram: b, ..
            } => {
                w.f64s(a);
                w.f64s(b);
            }
        }
        if let HessianState::Exact { dsum, .. } = &self.hessian {
            w.f64s(dsum);
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let mut r = Reader(bytes);
        if r.take(8)? != MAGIC {
            return Err(Error::Input("not a LogitStats state (bad magic)".into()));
        }
        let version = u32::from_le_bytes(r.take(4)?.try_into().unwrap());
        if version != VERSION && version != 1 {
            return Err(Error::Input(format!(
                "LogitStats state version {version} is not supported by this lort (expects {VERSION})"
            )));
        }
        let k = r.u64()? as usize;
        // Each class needs far more than 8 bytes of state: reject a corrupt K
        // before allocating for it.
        if k == 0 || k > r.0.len() / 8 {
            return Err(Error::Input(format!(
                "LogitStats state is corrupt (K = {k})"
            )));
        }
        let hessian = match r.u64()? {
            0 => HessianMode::None,
            1 => HessianMode::Bound,
            2 if version == 1 => {
                return Err(Error::Input(
                    "this hessian='exact' LogitStats state was written by an older lort \
                     (version 1, without the diagonal sums); recompute it"
                        .into(),
                ))
            }
            2 => HessianMode::Exact,
            c => {
                return Err(Error::Input(format!(
                    "LogitStats state has unknown hessian mode {c}"
                )))
            }
        };
        if hessian == HessianMode::Exact && k.saturating_mul(k) > r.0.len() / 8 {
            return Err(Error::Input(format!(
                "LogitStats state is corrupt (K = {k} needs a K x K matrix)"
            )));
        }
        let nan_policy = if r.u64()? == 1 {
            NanPolicy::Omit
        } else {
            NanPolicy::Raise
        };
        let mut s = LogitStats::new(
            k,
            Options {
                hessian,
                nan_policy,
            },
        )?;
        s.rows = r.u64()?;
        s.omitted = r.u64()?;
        r.moments(&mut s.pos)?;
        r.moments(&mut s.neg)?;
        r.u64s(&mut s.correct)?;
        r.u64s(&mut s.predicted)?;
        s.nll_sum = r.f64()?;
        for b in s.ece.iter_mut().take(ECE_BINS) {
            *b = EceBin {
                count: r.u64()?,
                confidence: r.f64()?,
                correct: r.u64()?,
            };
        }
        match &mut s.hessian {
            HessianState::None => {}
            HessianState::Bound { gershgorin, psum } => {
                r.f64s(gershgorin)?;
                r.f64s(psum)?;
            }
            HessianState::Exact { ssum, gram, dsum } => {
                r.f64s(ssum)?;
                r.f64s(gram)?;
                r.f64s(dsum)?;
            }
        }
        if !r.0.is_empty() {
            return Err(Error::Input("LogitStats state has trailing bytes".into()));
        }
        Ok(s)
    }
}
