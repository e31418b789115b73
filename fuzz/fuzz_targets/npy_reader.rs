//! `NpyFile::open` on the input written to a file; when it opens, every row is
//! read back in chunks of varying size and compared with the input bytes.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use lort_core::npy::{parse_header, NpyFile};

/// One scratch directory per fuzzing process; each input overwrites the file.
fn dir() -> &'static tempfile::TempDir {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
}

fuzz_target!(|data: &[u8]| {
    let path = dir().path().join("input.npy");
    std::fs::write(&path, data).expect("write input");
    let Ok(file) = NpyFile::open(&path) else {
        return;
    };
    let h = file.header().clone();
    assert_eq!(parse_header(data).ok().as_ref(), Some(&h));
    let row = file.row_bytes() as usize;
    let offset = h.data_offset as usize;
    assert_eq!(data.len(), offset + h.rows as usize * row);

    let mut buf = Vec::new();
    let (mut start, mut step) = (0u64, 1 + data.len() % 5);
    while start < h.rows {
        let n = step.min((h.rows - start) as usize);
        let got = file.read_rows(start, n, &mut buf).expect("read rows");
        let at = offset + start as usize * row;
        assert_eq!(got, &data[at..at + n * row]);
        start += n as u64;
        step = step * 3 % 7 + 1;
    }
    assert!(file.read_rows(h.rows, 1, &mut buf).is_err());
    assert_eq!(
        file.read_rows(h.rows, 0, &mut buf).expect("empty read"),
        b""
    );
});
