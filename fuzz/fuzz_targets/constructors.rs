//! What Python hands the core as plain values must come back as a value or an
//! error, never a panic or an abort: `LogitStats::new` with any K and options
//! (refused above `MAX_CLASSES`, and above `EXACT_MAX_CLASSES` in exact mode,
//! before anything is allocated), `LogitStats::from_bytes` on any bytes (a
//! pickled state, written back and copied), and the memory estimates for any
//! sizes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lort_core::curvature::LanczosOptions;
use lort_core::memory::MAX_CLASSES;
use lort_core::options::{exact_memory_bytes, EXACT_MAX_CLASSES};
use lort_core::{HessianMode, LogitStats, NanPolicy, Options};

/// Accepted K above this are not built (correct, but too slow to fuzz).
const BUILD_AT_MOST: u64 = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((head, state)) = data.split_first_chunk::<10>() else {
        return;
    };
    let k = u64::from_le_bytes(head[..8].try_into().unwrap());
    let hessian = [HessianMode::None, HessianMode::Bound, HessianMode::Exact][head[8] as usize % 3];
    let nan_policy = if head[9] % 2 == 1 {
        NanPolicy::Omit
    } else {
        NanPolicy::Raise
    };
    let options = Options {
        hessian,
        nan_policy,
    };
    let accepted = (1..=MAX_CLASSES as u64).contains(&k)
        && (hessian != HessianMode::Exact || k <= EXACT_MAX_CLASSES as u64);
    if !accepted || k <= BUILD_AT_MOST {
        let built = LogitStats::new(k as usize, options);
        assert_eq!(built.is_ok(), accepted, "K = {k}");
        if let Ok(s) = built {
            round_trips(&s);
        }
    }
    exact_memory_bytes(k as usize);
    let lanczos = LanczosOptions {
        block: usize::from(head[8]) << head[9].min(56),
        max_basis: k as usize,
        tol: 1e-5,
    };
    lanczos.memory_bytes(k as usize, usize::from(head[9]) << head[8].min(56));
    if let Ok(s) = LogitStats::from_bytes(state) {
        round_trips(&s);
    }
});

/// A state reads back to the same bytes, and a copy of it is equal to it.
fn round_trips(s: &LogitStats) {
    let bytes = s.to_bytes().expect("a small state is written");
    assert_eq!(bytes.len(), s.byte_len());
    let back = LogitStats::from_bytes(&bytes).expect("a written state reads back");
    assert_eq!(back.to_bytes().unwrap(), bytes);
    assert_eq!(&s.try_clone().expect("a small state is copied"), s);
}
