//! A versioned little-endian byte format for `LogitStats`, used for pickling
//! (shards and DDP ranks ship their accumulators as bytes).

use crate::options::{HessianMode, NanPolicy, Options};
use crate::stats::{EceBin, HessianState, LogitStats, Moments, ECE_BINS};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"LORTSTAT";
/// 2 added the exact mode's diagonal sums; version 1 states of the other
/// modes are laid out the same way and still read.
const VERSION: u32 = 2;

struct Writer(Vec<u8>);

impl Writer {
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn u64s(&mut self, v: &[u64]) {
        v.iter().for_each(|&x| self.u64(x));
    }
    fn f64s(&mut self, v: &[f64]) {
        v.iter().for_each(|&x| self.f64(x));
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
    fn u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        (0..n).map(|_| self.u64()).collect()
    }
    fn f64s(&mut self, n: usize) -> Result<Vec<f64>> {
        (0..n).map(|_| self.f64()).collect()
    }
    fn moments(&mut self, k: usize) -> Result<Moments> {
        Ok(Moments {
            n: self.u64s(k)?,
            mean: self.f64s(k)?,
            m2: self.f64s(k)?,
        })
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
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer(MAGIC.to_vec());
        w.0.extend_from_slice(&VERSION.to_le_bytes());
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
        w.0
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
        s.pos = r.moments(k)?;
        s.neg = r.moments(k)?;
        s.correct = r.u64s(k)?;
        s.predicted = r.u64s(k)?;
        s.nll_sum = r.f64()?;
        for b in s.ece.iter_mut().take(ECE_BINS) {
            *b = EceBin {
                count: r.u64()?,
                confidence: r.f64()?,
                correct: r.u64()?,
            };
        }
        s.hessian = match hessian {
            HessianMode::None => HessianState::None,
            HessianMode::Bound => HessianState::Bound {
                gershgorin: r.f64s(k)?,
                psum: r.f64s(k)?,
            },
            HessianMode::Exact => HessianState::Exact {
                ssum: r.f64s(k)?,
                gram: r.f64s(k * k)?,
                dsum: r.f64s(k)?,
            },
        };
        if !r.0.is_empty() {
            return Err(Error::Input("LogitStats state has trailing bytes".into()));
        }
        Ok(s)
    }
}
