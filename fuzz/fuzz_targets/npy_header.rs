//! `parse_header` must return (never panic) on any bytes, and what it accepts
//! must be self-consistent, with no more classes than any reader keeps state
//! for.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lort_core::memory::MAX_CLASSES;
use lort_core::npy::parse_header;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = parse_header(data) {
        assert!(h.cols >= 1 && h.cols <= MAX_CLASSES as u64);
        assert!(h.data_offset <= data.len() as u64);
        let size = h.rows.checked_mul(h.cols * h.dtype.itemsize() as u64);
        assert!(size.and_then(|s| s.checked_add(h.data_offset)).is_some());
    }
});
