//! What the core may allocate: the largest number of classes it keeps state
//! for (`MAX_CLASSES`), and allocation that reports failure as an error
//! instead of aborting the process (`zeros`, `reserve`, `copy`, `collect`).

use std::alloc::{alloc_zeroed, Layout};

use crate::{Error, Result};

/// The most classes (columns of the logits) the core keeps per-class state
/// for. Checked before anything is sized from K: a `.npy` header or a
/// constructor argument beyond it is refused, so a 128-byte file cannot ask
/// for terabytes. A pass keeps about 80 bytes per class, plus about 170 per
/// worker, and `finalize` about 110 more: some 6 GB at this K.
pub const MAX_CLASSES: usize = 1 << 24;

/// Checks `k` against [`MAX_CLASSES`] (and K >= 1) for `what` ("num_classes",
/// a file's shape).
pub fn check_classes(k: u64, what: &str) -> Result<usize> {
    match usize::try_from(k) {
        Ok(k @ 1..=MAX_CLASSES) => Ok(k),
        _ if k == 0 => Err(Error::Input(format!("{what} must be at least 1"))),
        _ => Err(Error::Input(format!(
            "{what} is {k}; lort handles at most {MAX_CLASSES} classes"
        ))),
    }
}

/// A number type whose all-zero bytes are the value 0.
pub trait Zeroable: Copy {}
impl Zeroable for u8 {}
impl Zeroable for u64 {}
impl Zeroable for f32 {}
impl Zeroable for f64 {}

/// `n` zeros, or an error naming `what` when the allocator refuses (where
/// `vec![0; n]` would abort the process). Like `vec!`, it takes zeroed memory
/// from the system, so large untouched buffers cost no physical pages.
pub fn zeros<T: Zeroable>(n: usize, what: &str) -> Result<Vec<T>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let layout = Layout::array::<T>(n).map_err(|_| out_of_memory::<T>(n, what))?;
    // SAFETY: the layout's size is not zero (n > 0 and no `Zeroable` is zero-sized).
    let ptr = unsafe { alloc_zeroed(layout) };
    if ptr.is_null() {
        return Err(out_of_memory::<T>(n, what));
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of n `T`s
    // (capacity n), and all-zero bytes are a valid `T` (`Zeroable`).
    Ok(unsafe { Vec::from_raw_parts(ptr.cast::<T>(), n, n) })
}

/// Makes room for `len` elements in `v` in all, or an error naming `what`.
pub fn reserve<T>(v: &mut Vec<T>, len: usize, what: &str) -> Result<()> {
    v.try_reserve_exact(len.saturating_sub(v.len()))
        .map_err(|_| out_of_memory::<T>(len, what))
}

/// A copy of `items`, or an error naming `what` (where `to_vec` and `clone`
/// would abort the process).
pub fn copy<T: Copy>(items: &[T], what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    reserve(&mut v, items.len(), what)?;
    v.extend_from_slice(items);
    Ok(v)
}

/// The items of `iter` in a vector allocated once for its length, or an error
/// naming `what` (where `collect` would abort the process).
pub fn collect<T>(iter: impl ExactSizeIterator<Item = T>, what: &str) -> Result<Vec<T>> {
    let mut v = Vec::new();
    reserve(&mut v, iter.len(), what)?;
    v.extend(iter);
    Ok(v)
}

/// The error for `n` values of `T` that the system would not allocate.
pub fn out_of_memory<T>(n: usize, what: &str) -> Error {
    let bytes = (n as u128) * std::mem::size_of::<T>() as u128;
    Error::Input(format!(
        "out of memory: cannot allocate {:.2} GB for {what}",
        bytes as f64 / 1e9
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_are_bounded() {
        assert_eq!(check_classes(1, "K").unwrap(), 1);
        assert_eq!(check_classes(MAX_CLASSES as u64, "K").unwrap(), MAX_CLASSES);
        for k in [0, MAX_CLASSES as u64 + 1, 1 << 40, u64::MAX] {
            assert!(matches!(check_classes(k, "K"), Err(Error::Input(_))), "{k}");
        }
        let m = check_classes(1 << 40, "num_classes")
            .unwrap_err()
            .to_string();
        assert!(m.contains("1099511627776") && m.contains("16777216"), "{m}");
    }

    #[test]
    fn a_refused_allocation_is_an_error() {
        let m = zeros::<f64>(usize::MAX / 8, "the test").unwrap_err();
        assert!(m.to_string().starts_with("out of memory"), "{m}");
        // Larger than any address space: the allocator refuses, nothing aborts.
        assert!(zeros::<u8>(1 << 62, "the test").is_err());
        assert_eq!(zeros::<u64>(3, "x").unwrap(), vec![0; 3]);
        let mut v = vec![1u8];
        assert!(reserve(&mut v, usize::MAX - 8, "x").is_err());
        reserve(&mut v, 10, "x").unwrap();
        assert!(v.capacity() >= 10);
        assert_eq!(copy(&[1.5, 2.0], "x").unwrap(), vec![1.5, 2.0]);
        assert_eq!(
            collect((0..4usize).map(|j| j * j), "x").unwrap(),
            vec![0, 1, 4, 9]
        );
        // An iterator claiming more items than memory holds is refused before it is read.
        let huge = std::iter::repeat_n(0u64, usize::MAX / 8);
        assert!(collect(huge, "the test").is_err());
    }
}
