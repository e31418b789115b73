//! Class labels of any integer dtype, borrowed without a copy (a copy would
//! cost bytes per row that the memory budget does not have).

use crate::{Error, Result};

#[derive(Clone, Copy, Debug)]
pub enum Labels<'a> {
    I8(&'a [i8]),
    I16(&'a [i16]),
    I32(&'a [i32]),
    I64(&'a [i64]),
    U8(&'a [u8]),
    U16(&'a [u16]),
    U32(&'a [u32]),
    U64(&'a [u64]),
}

macro_rules! each {
    ($self:expr, $s:ident => $body:expr) => {
        match $self {
            Labels::I8($s) => $body,
            Labels::I16($s) => $body,
            Labels::I32($s) => $body,
            Labels::I64($s) => $body,
            Labels::U8($s) => $body,
            Labels::U16($s) => $body,
            Labels::U32($s) => $body,
            Labels::U64($s) => $body,
        }
    };
}

impl Labels<'_> {
    pub fn len(&self) -> usize {
        each!(self, s => s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The label of row `i` as a class index; call only after `validate`.
    #[inline]
    pub fn class(&self, i: usize) -> usize {
        each!(self, s => s[i] as usize)
    }

    /// Checks the length against the logits and every label against `[0, k)`,
    /// naming the first offending row.
    pub fn validate(&self, rows: u64, k: usize, what: &str) -> Result<()> {
        if self.len() as u64 != rows {
            return Err(Error::Label(format!(
                "{what} has {rows} rows but {} labels were given; pass one label per row",
                self.len()
            )));
        }
        let bad = each!(self, s => s
            .iter()
            .position(|&v| !(0..k as i128).contains(&(v as i128)))
            .map(|i| (i, s[i] as i128)));
        match bad {
            None => Ok(()),
            Some((i, v)) => Err(Error::Label(format!(
                "label {v} at row {i} is outside [0, {k}); labels must be class indices 0..{}",
                k - 1
            ))),
        }
    }
}
