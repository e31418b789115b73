//! `NpyFile` against `.npy` files written byte for byte the way NumPy writes
//! them (and, when NumPy is installed, against files NumPy itself wrote).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use lort_core::npy::{parse_header, Dtype, Header, NpyFile};
use lort_core::Error;

/// A header as `np.save` writes it for a C-ordered array.
fn header(major: u8, descr: &str, shape: &str) -> Vec<u8> {
    wrap(
        major,
        &format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}"),
    )
}

/// NumPy's `_wrap_header`: magic, version, length, the dict, then spaces and a
/// newline so that the data starts at a multiple of 64 bytes.
fn wrap(major: u8, dict: &str) -> Vec<u8> {
    let start = if major == 1 { 10 } else { 12 };
    let hlen = dict.len() + 1;
    let pad = (64 - (start + hlen) % 64) % 64;
    let mut out = b"\x93NUMPY".to_vec();
    out.extend([major, 0]);
    if major == 1 {
        out.extend(u16::try_from(hlen + pad).unwrap().to_le_bytes());
    } else {
        out.extend(u32::try_from(hlen + pad).unwrap().to_le_bytes());
    }
    out.extend(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    assert_eq!(out.len() % 64, 0);
    out
}

/// A float32 array whose element (r, c) is `r * 1000 + c`.
fn f32_array(rows: usize, cols: usize) -> Vec<u8> {
    (0..rows * cols)
        .flat_map(|i| ((i / cols * 1000 + i % cols) as f32).to_le_bytes())
        .collect()
}

fn write(dir: &Path, name: &str, parts: &[&[u8]]) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, parts.concat()).unwrap();
    path
}

fn open(path: &Path) -> NpyFile {
    NpyFile::open(path).unwrap_or_else(|e| panic!("{e}"))
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn reads_rows_in_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_array(10, 3);
    let path = write(dir.path(), "a.npy", &[&header(1, "<f4", "(10, 3)"), &data]);
    let file = open(&path);
    assert_eq!(
        file.header(),
        &Header {
            dtype: Dtype::F32,
            rows: 10,
            cols: 3,
            data_offset: 128
        }
    );
    assert_eq!(file.path(), path);
    assert_eq!(file.row_bytes(), 12);

    let mut buf = Vec::new();
    let mut all = Vec::new();
    let mut start = 0;
    for n in [1, 4, 0, 2, 3] {
        all.extend_from_slice(file.read_rows(start, n, &mut buf).unwrap());
        assert_eq!(buf.len(), n * 12);
        start += n as u64;
    }
    assert_eq!(all, data);
    assert_eq!(
        floats(file.read_rows(7, 2, &mut buf).unwrap()),
        [7000.0, 7001.0, 7002.0, 8000.0, 8001.0, 8002.0]
    );
    assert_eq!(file.read_rows(10, 0, &mut buf).unwrap(), b"");

    let mut out = [0u8; 24];
    file.read_rows_into(1, 2, &mut out).unwrap();
    assert_eq!(out[..], data[12..36]);
    assert!(matches!(
        file.read_rows_into(1, 2, &mut [0u8; 23]),
        Err(Error::Input(_))
    ));
}

#[test]
fn out_of_range_reads_are_input_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "a.npy",
        &[&header(1, "<f4", "(4, 2)"), &f32_array(4, 2)],
    );
    let file = open(&path);
    let mut buf = Vec::new();
    for (start, n) in [(3, 2), (5, 0), (0, 5), (u64::MAX, 1), (1, usize::MAX)] {
        match file.read_rows(start, n, &mut buf) {
            Err(Error::Input(m)) => assert!(m.contains("has 4 rows"), "{m}"),
            other => panic!("({start}, {n}): {other:?}"),
        }
    }
}

#[test]
fn every_dtype_and_version() {
    let dir = tempfile::tempdir().unwrap();
    for (descr, dtype) in [
        ("<f2", Dtype::F16),
        ("<f4", Dtype::F32),
        ("<f8", Dtype::F64),
    ] {
        for major in 1..=3 {
            let data: Vec<u8> = (0..2 * 5 * dtype.itemsize()).map(|i| i as u8).collect();
            let head = header(major, descr, "(2, 5)");
            let path = write(dir.path(), &format!("{descr}{major}.npy"), &[&head, &data]);
            let file = open(&path);
            assert_eq!(file.header().dtype, dtype);
            assert_eq!(file.header().data_offset, head.len() as u64);
            let mut buf = Vec::new();
            assert_eq!(file.read_rows(0, 2, &mut buf).unwrap(), data);
            assert_eq!(
                file.read_rows(1, 1, &mut buf).unwrap(),
                &data[5 * dtype.itemsize()..]
            );
        }
    }
}

#[test]
fn a_long_version_2_header() {
    // NumPy only writes 2.0 when the header outgrows 1.0's u16 length; any
    // 2.0 file with a well-formed header is fine, however it is padded.
    let dir = tempfile::tempdir().unwrap();
    let dict = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }";
    let text = format!("{dict}{}\n", " ".repeat(64 * 100 - 12 - dict.len() - 1));
    let mut head = b"\x93NUMPY\x02\x00".to_vec();
    head.extend(u32::try_from(text.len()).unwrap().to_le_bytes());
    head.extend(text.as_bytes());
    let data = [1.5f64.to_le_bytes(), (-2.0f64).to_le_bytes()].concat();
    let path = write(dir.path(), "v2.npy", &[&head, &data]);
    let file = open(&path);
    assert_eq!(file.header().data_offset, 6400);
    assert_eq!(file.read_rows(0, 1, &mut Vec::new()).unwrap(), data);
}

#[test]
fn empty_arrays_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "e.npy", &[&header(1, "<f4", "(0, 7)")]);
    let file = open(&path);
    assert_eq!((file.header().rows, file.header().cols), (0, 7));
    assert_eq!(file.read_rows(0, 0, &mut Vec::new()).unwrap(), b"");
    assert!(file.read_rows(0, 1, &mut Vec::new()).is_err());
}

#[test]
fn truncated_data_counts_whole_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = f32_array(10, 3);
    let path = write(
        dir.path(),
        "t.npy",
        &[&header(1, "<f4", "(10, 3)"), &data[..12 * 6 + 5]],
    );
    match NpyFile::open(&path) {
        Err(Error::Truncated(m)) => {
            assert!(m.starts_with(&path.display().to_string()), "{m}");
            assert!(m.contains("expected 248 bytes"), "{m}");
            assert!(m.contains("found 205"), "{m}");
            assert!(m.contains("6 of 10 rows"), "{m}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn truncated_headers() {
    let dir = tempfile::tempdir().unwrap();
    let head = header(1, "<f4", "(1, 1)");
    for cut in [0, 3, 6, 9, 10, 50, 127] {
        let path = write(dir.path(), "h.npy", &[&head[..cut]]);
        match NpyFile::open(&path) {
            // An empty file is not a .npy file at all.
            Err(Error::Format(m)) if cut == 0 => assert!(m.contains("empty"), "{m}"),
            Err(Error::Truncated(m)) => assert!(m.contains(&cut.to_string()), "{cut}: {m}"),
            other => panic!("{cut}: {other:?}"),
        }
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "x.npy",
        &[&header(1, "<f4", "(2, 2)"), &f32_array(2, 2), b"junk"],
    );
    match NpyFile::open(&path) {
        Err(Error::Format(m)) => {
            assert!(m.contains("4 trailing bytes after the array data"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_headers_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "big.npy",
            header(1, ">f4", "(2, 2)"),
            "dtype '>f4' is big-endian",
        ),
        (
            "int.npy",
            header(1, "<i4", "(2, 2)"),
            "dtype '<i4' (signed integer)",
        ),
        ("1d.npy", header(1, "<f4", "(4,)"), "shape (4,) is 1-D"),
        ("k0.npy", header(1, "<f4", "(4, 0)"), "no classes"),
        (
            "zip.npy",
            b"PK\x03\x04".to_vec(),
            "not a .npy file (bad magic)",
        ),
    ];
    for (name, head, want) in cases {
        let path = write(dir.path(), name, &[&head, &[0; 32]]);
        match NpyFile::open(&path) {
            Err(Error::Format(m)) => {
                assert!(m.starts_with(&format!("{}: ", path.display())), "{m}");
                assert!(m.contains(want), "{m}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let fortran = wrap(
        1,
        "{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }",
    );
    let path = write(dir.path(), "f.npy", &[&fortran, &[0; 16]]);
    assert!(
        matches!(NpyFile::open(&path), Err(Error::Format(m)) if m.contains("fortran_order is True"))
    );
}

#[test]
fn missing_files_and_directories_are_io_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.npy");
    match NpyFile::open(&missing) {
        Err(Error::Io(m)) => assert!(m.contains("nope.npy"), "{m}"),
        other => panic!("{other:?}"),
    }
    match NpyFile::open(dir.path()) {
        Err(Error::Io(m)) => assert!(m.contains(&dir.path().display().to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_file_that_shrinks_after_open_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "s.npy",
        &[&header(1, "<f4", "(10, 3)"), &f32_array(10, 3)],
    );
    let file = open(&path);
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(128 + 12 * 4 + 7)
        .unwrap();
    let mut buf = Vec::new();
    assert!(file.read_rows(0, 4, &mut buf).is_ok());
    match file.read_rows(2, 5, &mut buf) {
        Err(Error::Truncated(m)) => assert!(m.contains("inside row 4 of 10"), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn threads_share_one_file() {
    let dir = tempfile::tempdir().unwrap();
    let (rows, cols) = (1000, 7);
    let data = f32_array(rows, cols);
    let path = write(
        dir.path(),
        "m.npy",
        &[&header(1, "<f4", &format!("({rows}, {cols})")), &data],
    );
    let file = open(&path);
    let chunks: Vec<Vec<u8>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8u64)
            .map(|t| {
                let file = &file;
                s.spawn(move || {
                    let mut buf = Vec::new();
                    let mut mine = Vec::new();
                    for start in (t * 125..(t + 1) * 125).step_by(25) {
                        mine.extend_from_slice(file.read_rows(start, 25, &mut buf).unwrap());
                    }
                    mine
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(chunks.concat(), data);
}

#[test]
fn header_bytes_from_parse_header_match_open() {
    let head = header(3, "<f8", "(3, 2)");
    let parsed = parse_header(&head).unwrap();
    assert_eq!(parsed.dtype.name(), "float64");
    assert_eq!(parsed.data_offset, head.len() as u64);
}

/// Files written by NumPy itself, when it is installed (skipped otherwise).
#[test]
fn files_written_by_numpy() {
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import sys, numpy as np
d = sys.argv[1]
a = (np.arange(12, dtype=np.float64).reshape(4, 3) * 1.5)
for t in ("f2", "f4", "f8"):
    np.save(f"{d}/{t}.npy", a.astype("<" + t))
np.save(f"{d}/big.npy", a.astype(">f4"))
np.save(f"{d}/fortran.npy", np.asfortranarray(a))
np.save(f"{d}/1d.npy", a.ravel())
np.lib.format.write_array(open(f"{d}/v2.npy", "wb"), a, version=(2, 0))
"#;
    let ran = Command::new("python3")
        .args(["-c", script])
        .arg(dir.path())
        .output();
    match ran {
        Ok(out) if out.status.success() => {}
        _ => {
            eprintln!("numpy is not available; skipping files_written_by_numpy");
            return;
        }
    }
    let expect: Vec<f64> = (0..12).map(|i| i as f64 * 1.5).collect();
    for (name, dtype) in [
        ("f2", Dtype::F16),
        ("f4", Dtype::F32),
        ("f8", Dtype::F64),
        ("v2", Dtype::F64),
    ] {
        let file = open(&dir.path().join(format!("{name}.npy")));
        assert_eq!(
            (file.header().dtype, file.header().rows, file.header().cols),
            (dtype, 4, 3)
        );
        let mut buf = Vec::new();
        let bytes = file.read_rows(0, 4, &mut buf).unwrap();
        let got: Vec<f64> = match dtype {
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f64())
                .collect(),
            Dtype::F32 => floats(bytes).into_iter().map(f64::from).collect(),
            Dtype::F64 => bytes
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap()))
                .collect(),
        };
        assert_eq!(got, expect, "{name}");
    }
    for (name, want) in [
        ("big", "big-endian"),
        ("fortran", "fortran_order is True"),
        ("1d", "is 1-D"),
    ] {
        match NpyFile::open(&dir.path().join(format!("{name}.npy"))) {
            Err(Error::Format(m)) => assert!(m.contains(want), "{m}"),
            other => panic!("{name}: {other:?}"),
        }
    }
}
