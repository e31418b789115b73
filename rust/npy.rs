//! A strict, streaming reader for NumPy `.npy` files holding 2-D float logits.
//!
//! Only the header is read up front; rows are fetched on demand with positioned
//! reads, so one open file can serve several threads. The file is never read
//! whole and never memory-mapped: a file truncated under a mapping kills the
//! process with SIGBUS, whereas a short read is an error we can report.
//!
//! Accepted: format versions 1.0, 2.0 and 3.0; dtype `'<f2'`, `'<f4'` or
//! `'<f8'`; `fortran_order: False`; a 2-D shape `(rows, classes)` with at least
//! one class. Everything else is rejected with a message saying what was found
//! and what is accepted. The header dict is parsed here (it is a tiny Python
//! literal) and every input, however malformed, yields an error, never a panic:
//! see `fuzz/`.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::memory::MAX_CLASSES;
use crate::{Error, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// Accepted headers are under 128 bytes; the cap only stops a corrupt length
/// field (up to 4 GiB in version 2.0/3.0) from making us allocate and read it.
const MAX_HEADER_LEN: u64 = 65_536;

/// Bounds the recursion of the literal parser on inputs like `[[[[...`.
const MAX_DEPTH: usize = 32;

const ACCEPTED: &str = "lort reads little-endian float16, float32 or float64 ('<f2', '<f4', '<f8')";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F16,
    F32,
    F64,
}

impl Dtype {
    /// Bytes per element.
    pub fn itemsize(self) -> usize {
        match self {
            Dtype::F16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 => 8,
        }
    }

    /// The NumPy name: `"float16"`, `"float32"` or `"float64"`.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F16 => "float16",
            Dtype::F32 => "float32",
            Dtype::F64 => "float64",
        }
    }

    /// Maps a `descr` string to a dtype, explaining any rejection.
    fn from_descr(descr: &str) -> Result<Dtype> {
        let (order, code) = match descr.as_bytes().first() {
            Some(b'<' | b'>' | b'=' | b'|') => descr.split_at(1),
            _ => ("", descr),
        };
        let shown = show(descr);
        let msg = match (order, code) {
            ("<", "f2") => return Ok(Dtype::F16),
            ("<", "f4") => return Ok(Dtype::F32),
            ("<", "f8") => return Ok(Dtype::F64),
            (">", "f2" | "f4" | "f8") => format!(
                "dtype '{shown}' is big-endian; {ACCEPTED} (convert with arr.astype('<{code}'))"
            ),
            (_, "f2" | "f4" | "f8") => format!(
                "dtype '{shown}' does not say it is little-endian; {ACCEPTED} \
                 (convert with arr.astype('<{code}'))"
            ),
            _ => {
                let kind = match code.as_bytes().first() {
                    Some(b'f') => "a float of unsupported size",
                    Some(b'i') => "signed integer",
                    Some(b'u') => "unsigned integer",
                    Some(b'b') => "boolean",
                    Some(b'c') => "complex",
                    _ => "not a float",
                };
                format!(
                    "dtype '{shown}' ({kind}) is not supported; {ACCEPTED} \
                     (convert with arr.astype('<f4'))"
                )
            }
        };
        Err(Error::Format(msg))
    }
}

/// What a `.npy` header says about the array that follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub rows: u64,
    pub cols: u64,
    /// Byte offset of the first element: the size of the whole header.
    pub data_offset: u64,
}

/// Parses the header from the first bytes of a file (magic, version 1.0/2.0/3.0,
/// header length, the dict literal). `bytes` may be longer than the header.
///
/// Guarantees for an `Ok` header: `1 <= cols <= MAX_CLASSES`, and
/// `data_offset + rows * cols * itemsize` does not overflow `u64`.
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let (version, data_offset) = preamble(bytes)?;
    // `data_offset` is at most 12 + MAX_HEADER_LEN, so the cast is lossless.
    let raw = bytes
        .get(version.text_start()..data_offset as usize)
        .ok_or_else(|| {
            Error::Truncated(format!(
                "the .npy header is {data_offset} bytes but only {} are present",
                bytes.len()
            ))
        })?;
    if version.major < 3 && !raw.is_ascii() {
        return Err(Error::Format(format!(
            "the header of a version {}.0 .npy file is not ASCII",
            version.major
        )));
    }
    // ASCII is UTF-8, so this can only fail for version 3.0.
    let text = std::str::from_utf8(raw).map_err(|_| {
        Error::Format("the header of a version 3.0 .npy file is not valid UTF-8".into())
    })?;

    let mut descr = None;
    let mut fortran = None;
    let mut shape = None;
    for (key, value) in Parser::new(text).header_dict()? {
        let (name, slot) = match key.kind {
            Kind::Str(k @ "descr") => (k, &mut descr),
            Kind::Str(k @ "fortran_order") => (k, &mut fortran),
            Kind::Str(k @ "shape") => (k, &mut shape),
            _ => {
                return Err(Error::Format(format!(
                    "unexpected key {} in the .npy header; it must have exactly \
                     'descr', 'fortran_order' and 'shape'",
                    show(key.raw)
                )))
            }
        };
        if slot.replace(value).is_some() {
            return Err(Error::Format(format!(
                "key '{name}' appears twice in the .npy header"
            )));
        }
    }
    let missing = |key: &str| Error::Format(format!("the .npy header has no '{key}' key"));
    let descr = descr.ok_or_else(|| missing("descr"))?;
    let fortran = fortran.ok_or_else(|| missing("fortran_order"))?;
    let shape = shape.ok_or_else(|| missing("shape"))?;

    let dtype = match descr.kind {
        Kind::Str(s) => Dtype::from_descr(s)?,
        Kind::List => {
            return Err(Error::Format(format!(
                "dtype {} is a structured dtype; {ACCEPTED}",
                show(descr.raw)
            )))
        }
        _ => {
            return Err(Error::Format(format!(
                "'descr' must be a dtype string, found {}; {ACCEPTED}",
                show(descr.raw)
            )))
        }
    };

    match fortran.kind {
        Kind::Bool(false) => {}
        Kind::Bool(true) => {
            return Err(Error::Format(
                "fortran_order is True; save a C-ordered array (np.ascontiguousarray)".into(),
            ))
        }
        _ => {
            return Err(Error::Format(format!(
                "fortran_order must be True or False, found {}",
                show(fortran.raw)
            )))
        }
    }

    let shown = show(shape.raw);
    let dims = match &shape.kind {
        Kind::Tuple(dims) => dims,
        _ => {
            return Err(Error::Format(format!(
                "shape must be a tuple, found {shown}"
            )))
        }
    };
    let [rows, cols] = dims.as_slice() else {
        return Err(Error::Format(format!(
            "shape {shown} is {}-D; logits must be 2-D (rows x classes)",
            dims.len()
        )));
    };
    let dim = |v: &Value| match v.kind {
        Kind::Int(digits) => digits.parse::<u64>().map_err(|_| {
            Error::Format(format!(
                "shape {shown} has dimension {} which does not fit in 64 bits",
                show(digits)
            ))
        }),
        Kind::NegInt => Err(Error::Format(format!(
            "shape {shown} has a negative dimension"
        ))),
        _ => Err(Error::Format(format!("shape {shown} must hold integers"))),
    };
    let (rows, cols) = (dim(rows)?, dim(cols)?);
    if cols == 0 {
        return Err(Error::Format(format!(
            "shape {shown} has no classes (0 columns); logits need at least one column"
        )));
    }
    // Whatever the rows, the per-class state of a reader is sized from `cols`.
    if cols > MAX_CLASSES as u64 {
        return Err(Error::Format(format!(
            "shape {shown} has {cols} classes (columns); lort reads at most {MAX_CLASSES}"
        )));
    }
    // Checked separately so that a huge `cols` is caught even when rows == 0.
    let row_bytes = cols.checked_mul(dtype.itemsize() as u64);
    let end = row_bytes
        .and_then(|r| rows.checked_mul(r))
        .and_then(|d| d.checked_add(data_offset));
    if end.is_none() {
        return Err(Error::Format(format!(
            "shape {shown} of {} is too large: its size overflows 64 bits",
            dtype.name()
        )));
    }
    Ok(Header {
        dtype,
        rows,
        cols,
        data_offset,
    })
}

#[derive(Clone, Copy)]
struct Version {
    major: u8,
}

impl Version {
    /// Where the header text starts: after magic, version and the length field,
    /// which is a u16 in version 1.0 and a u32 in 2.0/3.0.
    fn text_start(self) -> usize {
        if self.major == 1 {
            10
        } else {
            12
        }
    }
}

/// Validates magic, version and the header length field, returning the
/// version and the total header size (the data offset). Looks at no more than
/// the first 12 bytes, so `open` can learn how much more to read.
fn preamble(bytes: &[u8]) -> Result<(Version, u64)> {
    if bytes.is_empty() {
        return Err(Error::Format("empty file; not a .npy file".into()));
    }
    let n = bytes.len().min(MAGIC.len());
    if bytes[..n] != MAGIC[..n] {
        return Err(Error::Format("not a .npy file (bad magic)".into()));
    }
    let short = |needed: usize| {
        Error::Truncated(format!(
            "the .npy preamble is {needed} bytes but only {} are present",
            bytes.len()
        ))
    };
    let (major, minor) = match bytes.get(6..8) {
        Some(&[major, minor]) => (major, minor),
        _ => return Err(short(8)),
    };
    let version = match (major, minor) {
        (1..=3, 0) => Version { major },
        _ => {
            return Err(Error::Format(format!(
                "unsupported .npy format version {major}.{minor}; lort reads 1.0, 2.0 and 3.0"
            )))
        }
    };
    let start = version.text_start();
    let len_field = bytes.get(8..start).ok_or_else(|| short(start))?;
    // Little-endian u16 (1.0) or u32 (2.0/3.0).
    let header_len = len_field
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    if header_len > MAX_HEADER_LEN {
        return Err(Error::Format(format!(
            "the .npy header claims to be {header_len} bytes; lort reads headers of at \
             most {MAX_HEADER_LEN} bytes (a float array needs about 128)"
        )));
    }
    Ok((version, start as u64 + header_len))
}

/// Quotes untrusted header text for a message: printable ASCII as is, the rest
/// escaped, and cut short so a garbage header cannot flood the terminal.
fn show(s: &str) -> String {
    const MAX_CHARS: usize = 120;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str("...");
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
    }
    out
}

/// The subset of Python literals a `.npy` header can contain. `raw` is the
/// source text, kept for messages.
struct Value<'a> {
    raw: &'a str,
    kind: Kind<'a>,
}

enum Kind<'a> {
    Str(&'a str),
    /// Decimal digits of a non-negative integer (parsed where it is used, so
    /// that an overflow is reported as such).
    Int(&'a str),
    NegInt,
    Bool(bool),
    None,
    Tuple(Vec<Value<'a>>),
    /// A list (a structured dtype's `descr`); its items are only validated.
    List,
}

/// A recursive-descent parser for the header dict. Positions only ever advance
/// over ASCII bytes or whole string literals, so they stay on char boundaries.
struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, c: u8) -> bool {
        let hit = self.peek() == Some(c);
        self.pos += usize::from(hit);
        hit
    }

    /// Skips Python whitespace (NumPy pads the header with spaces and a newline).
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')) {
            self.pos += 1;
        }
    }

    fn error(&self, what: &str) -> Error {
        let found = match self.text.get(self.pos..).and_then(|s| s.chars().next()) {
            Some(c) => format!("found '{}'", show(c.encode_utf8(&mut [0; 4]))),
            None => "found the end of the header".into(),
        };
        Error::Format(format!(
            "malformed .npy header: expected {what} at byte {}, {found} (header: {})",
            self.pos,
            show(self.text.trim_end())
        ))
    }

    fn expect(&mut self, c: u8, what: &str) -> Result<()> {
        self.skip_ws();
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.error(what))
        }
    }

    /// The whole header: one dict, then only whitespace.
    fn header_dict(&mut self) -> Result<Vec<(Value<'a>, Value<'a>)>> {
        self.expect(b'{', "'{'")?;
        let mut entries = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(b'}') {
                break;
            }
            let key = self.value(1)?;
            self.expect(b':', "':'")?;
            let value = self.value(1)?;
            entries.push((key, value));
            self.skip_ws();
            if !self.eat(b',') {
                self.expect(b'}', "',' or '}'")?;
                break;
            }
        }
        self.skip_ws();
        if self.pos != self.text.len() {
            return Err(self.error("the end of the header after the dict"));
        }
        Ok(entries)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>> {
        if depth > MAX_DEPTH {
            return Err(self.error("less deeply nested values"));
        }
        self.skip_ws();
        let start = self.pos;
        let kind = match self.peek() {
            Some(q @ (b'\'' | b'"')) => self.string(q)?,
            Some(b'(') => {
                self.pos += 1;
                let (mut items, trailing_comma) = self.items(b')', depth)?;
                // `(x)` is just `x` in Python; only `(x,)` is a 1-tuple.
                if items.len() == 1 && !trailing_comma {
                    items.swap_remove(0).kind
                } else {
                    Kind::Tuple(items)
                }
            }
            Some(b'[') => {
                self.pos += 1;
                self.items(b']', depth)?;
                Kind::List
            }
            Some(b'-') => {
                self.pos += 1;
                self.digits()?;
                Kind::NegInt
            }
            Some(b'0'..=b'9') => Kind::Int(self.digits()?),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let word = self.word();
                match word {
                    "True" => Kind::Bool(true),
                    "False" => Kind::Bool(false),
                    "None" => Kind::None,
                    _ => {
                        self.pos = start;
                        return Err(self.error("a string, number, tuple, True, False or None"));
                    }
                }
            }
            _ => return Err(self.error("a value")),
        };
        Ok(Value {
            raw: &self.text[start..self.pos],
            kind,
        })
    }

    /// A quoted string without escapes (none of the accepted keys or dtypes has
    /// any). Returns its contents.
    fn string(&mut self, quote: u8) -> Result<Kind<'a>> {
        let open = self.pos;
        let body = &self.text.as_bytes()[open + 1..];
        match body
            .iter()
            .position(|&b| matches!(b, b'\\' | b'\n' | b'\r') || b == quote)
        {
            Some(len) if body[len] == quote => {
                self.pos = open + 1 + len + 1;
                Ok(Kind::Str(&self.text[open + 1..open + 1 + len]))
            }
            Some(len) => {
                self.pos = open + 1 + len;
                Err(self.error("a string without escapes or line breaks"))
            }
            None => {
                self.pos = self.text.len();
                Err(self.error("the closing quote of a string"))
            }
        }
    }

    /// A decimal integer as Python 3 writes it: no sign, no leading zeros, no
    /// `_`, `L` suffix or base prefix.
    fn digits(&mut self) -> Result<&'a str> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        let digits = &self.text[start..self.pos];
        let bad_zero = digits.len() > 1 && digits.starts_with('0');
        let glued =
            matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_' || c == b'.');
        if digits.is_empty() || bad_zero || glued {
            self.pos = start;
            return Err(self.error("a decimal integer"));
        }
        Ok(digits)
    }

    fn word(&mut self) -> &'a str {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.pos += 1;
        }
        &self.text[start..self.pos]
    }

    /// Comma-separated values up to `close` (already past the opening bracket).
    /// Also returns whether the last item was followed by a comma.
    fn items(&mut self, close: u8, depth: usize) -> Result<(Vec<Value<'a>>, bool)> {
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.eat(close) {
                let trailing_comma = !items.is_empty();
                return Ok((items, trailing_comma));
            }
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            if !self.eat(b',') {
                self.expect(close, "',' or a closing bracket")?;
                return Ok((items, false));
            }
        }
    }
}

/// Positioned reads need no lock on unix; elsewhere seek+read is serialised.
#[cfg(unix)]
type Handle = File;
#[cfg(not(unix))]
type Handle = std::sync::Mutex<File>;

#[cfg(unix)]
fn read_at(file: &Handle, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &Handle, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    use std::io::{Seek, SeekFrom};
    let mut file = file
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    file.seek(SeekFrom::Start(offset))?;
    file.read(buf)
}

/// An open, validated `.npy` file whose rows are read on demand.
#[derive(Debug)]
pub struct NpyFile {
    file: Handle,
    header: Header,
    /// `cols * itemsize`; cannot overflow (checked by `parse_header`).
    row_bytes: u64,
    path: PathBuf,
}

impl NpyFile {
    /// Opens `path`, reads and validates the header (reading only the bytes
    /// the length field asks for), and checks that the file is exactly
    /// `data_offset + rows * cols * itemsize` bytes long.
    pub fn open(path: &Path) -> Result<NpyFile> {
        let at = |e: Error| prefix(path, e);
        let io_err = |e: io::Error| Error::Io(format!("{}: {e}", path.display()));
        let file = File::open(path).map_err(io_err)?;
        let meta = file.metadata().map_err(io_err)?;
        if !meta.is_file() {
            return Err(Error::Io(format!("{}: not a regular file", path.display())));
        }
        let found = meta.len();

        // The 10- or 12-byte preamble first, then exactly the rest of the header.
        let mut head = Vec::new();
        (&file).take(12).read_to_end(&mut head).map_err(io_err)?;
        let (_, header_len) = preamble(&head).map_err(at)?;
        if header_len > found {
            return Err(Error::Truncated(format!(
                "{}: the file is {found} bytes but its .npy header claims {header_len} bytes",
                path.display()
            )));
        }
        let rest = header_len.saturating_sub(head.len() as u64);
        (&file).take(rest).read_to_end(&mut head).map_err(io_err)?;
        let header = parse_header(&head).map_err(at)?;

        let row_bytes = header.cols * header.dtype.itemsize() as u64;
        let expected = header.data_offset + header.rows * row_bytes;
        if found < expected {
            let whole = (found - header.data_offset) / row_bytes;
            return Err(Error::Truncated(format!(
                "{}: truncated: expected {expected} bytes ({}-byte header + {} rows x {} \
                 bytes), found {found}; only {whole} of {} rows are complete",
                path.display(),
                header.data_offset,
                header.rows,
                row_bytes,
                header.rows
            )));
        }
        if found > expected {
            return Err(Error::Format(format!(
                "{}: {} trailing bytes after the array data (expected {expected} bytes for \
                 shape ({}, {}) {}, found {found})",
                path.display(),
                found - expected,
                header.rows,
                header.cols,
                header.dtype.name()
            )));
        }

        #[cfg(not(unix))]
        let file = std::sync::Mutex::new(file);
        Ok(NpyFile {
            file,
            header,
            row_bytes,
            path: path.to_path_buf(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes per row: `cols * itemsize`.
    pub fn row_bytes(&self) -> u64 {
        self.row_bytes
    }

    /// Reads rows `[start, start + n)` into `buf` (resized to fit; reuse it
    /// across calls) and returns the filled bytes, little-endian, row-major.
    /// Takes `&self` so several threads can read concurrently. Errors as for
    /// [`NpyFile::read_rows_into`].
    pub fn read_rows<'a>(&self, start: u64, n: usize, buf: &'a mut Vec<u8>) -> Result<&'a [u8]> {
        buf.resize(self.byte_len(start, n)?, 0);
        self.read_rows_into(start, n, buf)?;
        Ok(buf)
    }

    /// Reads rows `[start, start + n)` into `out`, which must be exactly
    /// `n * row_bytes()` long (lets the caller choose the buffer's alignment).
    ///
    /// A range past the end or a wrong `out` length is `Error::Input`; a file
    /// that has shrunk since `open` is `Error::Truncated` naming the first
    /// incomplete row.
    pub fn read_rows_into(&self, start: u64, n: usize, out: &mut [u8]) -> Result<()> {
        let len = self.byte_len(start, n)?;
        if out.len() != len {
            return Err(Error::Input(format!(
                "{}: a buffer for {n} rows must be {len} bytes, not {}",
                self.path.display(),
                out.len()
            )));
        }
        let (rows, name) = (self.header.rows, self.path.display());
        // In range, so bounded by the file size that `parse_header` checked.
        let offset = self.header.data_offset + start * self.row_bytes;
        let mut done = 0;
        while done < len {
            match read_at(&self.file, &mut out[done..], offset + done as u64) {
                Ok(0) => {
                    return Err(Error::Truncated(format!(
                        "{name}: the file ends inside row {} of {rows}; it has shrunk since \
                         it was opened",
                        start + done as u64 / self.row_bytes
                    )))
                }
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(Error::Io(format!(
                        "{name}: reading rows {start}..{}: {e}",
                        start + n as u64
                    )))
                }
            }
        }
        Ok(())
    }

    /// Checks that rows `[start, start + n)` exist and returns their size in
    /// bytes (before any buffer is sized from it).
    fn byte_len(&self, start: u64, n: usize) -> Result<usize> {
        let (rows, name) = (self.header.rows, self.path.display());
        if start.checked_add(n as u64).is_none_or(|end| end > rows) {
            return Err(Error::Input(format!(
                "{name}: cannot read {n} rows from row {start}; the file has {rows} rows"
            )));
        }
        // Cannot overflow u64 (n <= rows), but may exceed usize on 32-bit.
        usize::try_from(n as u64 * self.row_bytes)
            .map_err(|_| Error::Input(format!("{name}: {n} rows do not fit in memory at once")))
    }
}

/// Prefixes the file name to a header error from `parse_header`.
fn prefix(path: &Path, e: Error) -> Error {
    let name = path.display();
    match e {
        Error::Format(m) => Error::Format(format!("{name}: {m}")),
        Error::Truncated(m) => Error::Truncated(format!("{name}: {m}")),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header as NumPy writes it: preamble, `text`, space padding and a
    /// newline up to a multiple of 64 bytes.
    fn npy(major: u8, text: &str) -> Vec<u8> {
        let start = if major == 1 { 10 } else { 12 };
        let pad = 63 - (start + text.len()) % 64;
        let len = text.len() + pad + 1;
        let mut out = MAGIC.to_vec();
        out.extend([major, 0]);
        if major == 1 {
            out.extend((len as u16).to_le_bytes());
        } else {
            out.extend((len as u32).to_le_bytes());
        }
        out.extend(text.as_bytes());
        out.extend(std::iter::repeat_n(b' ', pad));
        out.push(b'\n');
        out
    }

    /// The bytes of a header with exactly `text` (no padding).
    fn raw(major: u8, text: &[u8]) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend([major, 0]);
        if major == 1 {
            out.extend((text.len() as u16).to_le_bytes());
        } else {
            out.extend((text.len() as u32).to_le_bytes());
        }
        out.extend(text);
        out
    }

    fn dict(descr: &str, fortran: &str, shape: &str) -> String {
        format!("{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}")
    }

    fn ok(bytes: &[u8]) -> Header {
        parse_header(bytes).unwrap_or_else(|e| panic!("{e}"))
    }

    fn format_err(bytes: &[u8]) -> String {
        match parse_header(bytes) {
            Err(Error::Format(m)) => m,
            other => panic!("expected a format error, got {other:?}"),
        }
    }

    fn shape_err(shape: &str) -> String {
        format_err(&npy(1, &dict("'<f4'", "False", shape)))
    }

    #[test]
    fn accepts_numpy_headers() {
        for (descr, dtype) in [
            ("'<f2'", Dtype::F16),
            ("'<f4'", Dtype::F32),
            ("'<f8'", Dtype::F64),
        ] {
            for major in 1..=3 {
                let bytes = npy(major, &dict(descr, "False", "(7, 3)"));
                let h = ok(&bytes);
                assert_eq!(
                    h,
                    Header {
                        dtype,
                        rows: 7,
                        cols: 3,
                        data_offset: 128
                    },
                    "{descr} v{major}"
                );
            }
        }
        assert_eq!(ok(&npy(1, &dict("'<f4'", "False", "(0, 1000)"))).rows, 0);
    }

    #[test]
    fn dtype_names() {
        assert_eq!(Dtype::F16.name(), "float16");
        assert_eq!(Dtype::F32.itemsize(), 4);
        assert_eq!(Dtype::F64.name(), "float64");
    }

    #[test]
    fn accepts_literal_variations() {
        for text in [
            "{'shape': (2, 3), 'descr': '<f4', 'fortran_order': False}",
            "{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2,3)}",
            "\n{ 'descr' :'<f4' ,\n\t'fortran_order':False,'shape':( 2 , 3 , ) , }\r\n  ",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}",
        ] {
            let h = ok(&raw(1, text.as_bytes()));
            assert_eq!((h.rows, h.cols), (2, 3), "{text}");
            assert_eq!(h.data_offset, 10 + text.len() as u64);
        }
    }

    #[test]
    fn bytes_may_extend_past_the_header() {
        let mut bytes = npy(2, &dict("'<f8'", "False", "(1, 1)"));
        bytes.extend([0xff; 100]);
        assert_eq!(ok(&bytes).data_offset, 128);
    }

    #[test]
    fn rejects_bad_preambles() {
        assert!(format_err(b"").contains("empty"));
        assert!(format_err(b"PK\x03\x04 a zip file").contains("bad magic"));
        assert!(format_err(b"\x93NUMPZ\x01\x00").contains("bad magic"));
        for short in [
            &b"\x93NUM"[..],
            b"\x93NUMPY",
            b"\x93NUMPY\x01\x00\x10",
            b"\x93NUMPY\x02\x00\x10\x00",
        ] {
            assert!(
                matches!(parse_header(short), Err(Error::Truncated(_))),
                "{short:?}"
            );
        }
        for version in [[0, 0], [4, 0], [1, 1], [2, 5]] {
            let mut bytes = npy(1, &dict("'<f4'", "False", "(1, 1)"));
            bytes[6..8].copy_from_slice(&version);
            assert!(format_err(&bytes).contains("version"));
        }
    }

    #[test]
    fn header_length_must_fit() {
        let bytes = npy(1, &dict("'<f4'", "False", "(1, 1)"));
        let cut = parse_header(&bytes[..bytes.len() - 1]);
        assert!(matches!(cut, Err(Error::Truncated(m)) if m.contains("128 bytes")));
        let mut huge = raw(2, b"{}");
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(format_err(&huge).contains("4294967295"));
        let mut v1 = raw(1, b"{}");
        v1[8..10].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(matches!(parse_header(&v1), Err(Error::Truncated(_))));
    }

    #[test]
    fn header_text_encoding() {
        let text = dict("'<f4'", "False", "(1, 1)").replace("{", "{ \u{e9}");
        assert!(format_err(&raw(1, text.as_bytes())).contains("not ASCII"));
        // Valid UTF-8 in 3.0, but then it is just a syntax error.
        assert!(format_err(&raw(3, text.as_bytes())).contains("malformed"));
        let descr = dict("'\u{e9}'", "False", "(1, 1)");
        assert!(format_err(&raw(3, descr.as_bytes())).contains("'\\u{e9}'"));
        assert!(format_err(&raw(3, b"{'descr': '\xff'}")).contains("UTF-8"));
    }

    #[test]
    fn rejects_other_dtypes() {
        let err = |descr: &str| format_err(&npy(1, &dict(descr, "False", "(1, 1)")));
        let big = err("'>f4'");
        assert!(
            big.contains("'>f4' is big-endian") && big.contains("arr.astype('<f4')"),
            "{big}"
        );
        assert!(err("'>f2'").contains("astype('<f2')"));
        for descr in ["'=f8'", "'|f4'", "'f4'"] {
            let m = err(descr);
            assert!(
                m.contains("little-endian") && m.contains("astype('<f"),
                "{m}"
            );
        }
        assert!(err("'<i8'").contains("'<i8' (signed integer)"));
        assert!(err("'|u1'").contains("unsigned integer"));
        assert!(err("'|b1'").contains("boolean"));
        assert!(err("'<c8'").contains("complex"));
        assert!(err("'<f16'").contains("unsupported size"));
        assert!(err("'|O'").contains("not a float"));
        assert!(err("''").contains("dtype ''"));
        let structured = err("[('a', '<f4'), ('b', '<i4', (2,))]");
        assert!(structured.contains("structured"), "{structured}");
        assert!(err("4").contains("'descr' must be a dtype string"));
        assert!(err("None").contains("found None"));
        for m in [big, err("'<i8'"), structured] {
            assert!(m.contains("'<f2', '<f4', '<f8'"), "{m}");
        }
    }

    #[test]
    fn rejects_fortran_order() {
        let m = format_err(&npy(1, &dict("'<f4'", "True", "(2, 3)")));
        assert!(m.contains("fortran_order is True") && m.contains("np.ascontiguousarray"));
        let m = format_err(&npy(1, &dict("'<f4'", "0", "(2, 3)")));
        assert!(m.contains("True or False, found 0"), "{m}");
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(
            shape_err("(3,)").contains("shape (3,) is 1-D; logits must be 2-D (rows x classes)")
        );
        assert!(shape_err("()").contains("is 0-D"));
        assert!(shape_err("(2, 3, 4)").contains("is 3-D"));
        assert!(shape_err("(3)").contains("must be a tuple, found (3)"));
        assert!(shape_err("[2, 3]").contains("must be a tuple"));
        assert!(shape_err("(-1, 3)").contains("negative"));
        assert!(shape_err("(2, 'x')").contains("must hold integers"));
        assert!(shape_err("(2, None)").contains("must hold integers"));
        assert!(shape_err("(18446744073709551616, 1)").contains("does not fit in 64 bits"));
        assert!(shape_err("(5, 0)").contains("no classes"));
        assert!(shape_err("(0, 0)").contains("no classes"));
        // rows * cols * itemsize, and data_offset + size.
        assert!(shape_err("(4611686018427387904, 16)").contains("too large"));
        assert!(shape_err("(4611686018427387903, 1)").contains("too large"));
        let most = ok(&npy(1, &dict("'<f4'", "False", "(4611686018427387000, 1)")));
        assert_eq!(most.rows, 4611686018427387000);
        // More classes than any reader keeps state for, whatever the rows: a
        // 128-byte file of shape (0, 2^40) once asked for 8 TiB.
        for shape in [
            "(0, 1099511627776)",
            "(1, 16777217)",
            "(0, 18446744073709551615)",
        ] {
            assert!(
                shape_err(shape).contains("lort reads at most 16777216"),
                "{shape}"
            );
        }
        let widest = ok(&npy(1, &dict("'<f2'", "False", "(0, 16777216)")));
        assert_eq!(widest.cols, MAX_CLASSES as u64);
    }

    #[test]
    fn rejects_bad_keys() {
        let text = |body: &str| format_err(&raw(1, body.as_bytes()));
        let all = "'descr': '<f4', 'fortran_order': False, 'shape': (1, 1)";
        assert!(text("{'descr': '<f4', 'shape': (1, 1)}").contains("no 'fortran_order' key"));
        assert!(text("{'fortran_order': False, 'shape': (1, 1)}").contains("no 'descr' key"));
        assert!(text("{'descr': '<f4', 'fortran_order': False}").contains("no 'shape' key"));
        assert!(text(&format!("{{{all}, 'extra': 1}}")).contains("unexpected key 'extra'"));
        assert!(text(&format!("{{{all}, 'shape': (1, 1)}}")).contains("'shape' appears twice"));
        assert!(text(&format!("{{{all}, 1: 2}}")).contains("unexpected key 1"));
        assert!(text("{}").contains("no 'descr' key"));
    }

    #[test]
    fn rejects_bad_syntax() {
        let all = "'descr': '<f4', 'fortran_order': False, 'shape': (1, 1)";
        for body in [
            String::new(),
            "   ".into(),
            all.to_string(),
            format!("{{{all}"),
            format!("{{{all}}} x"),
            format!("{{{all}}}}}"),
            format!("{{{all},,}}"),
            format!("{{, {all}}}"),
            format!("{{{all} 'a': 1}}"),
            "{'descr' '<f4'}".into(),
            "{'descr: '<f4'}".into(),
            "{'descr': '<f4\\'', }".into(),
            "{'descr': '<f4\n'}".into(),
            "{'descr': \"<f4'}".into(),
            "{'descr': 'a' 'b'}".into(),
            "{'descr': '<f4', 'shape': (1,, 1)}".into(),
            "{'descr': '<f4', 'shape': (,)}".into(),
            "{'descr': '<f4', 'shape': (1 1)}".into(),
            "{'descr': '<f4', 'shape': (01, 1)}".into(),
            "{'descr': '<f4', 'shape': (1L, 1)}".into(),
            "{'descr': '<f4', 'shape': (1.0, 1)}".into(),
            "{'descr': '<f4', 'shape': (1_0, 1)}".into(),
            "{'descr': '<f4', 'shape': (0x1, 1)}".into(),
            "{'descr': '<f4', 'shape': (+1, 1)}".into(),
            "{'descr': '<f4', 'shape': (- 1, 1)}".into(),
            "{'descr': '<f4', 'shape': (-, 1)}".into(),
            "{'descr': '<f4', 'shape': {}}".into(),
            "{'descr': '<f4', 'fortran_order': false}".into(),
            "{'descr': '<f4', 'fortran_order': np.False_}".into(),
            "{'descr': '<f4'\0}".into(),
        ] {
            let m = format_err(&raw(1, body.as_bytes()));
            assert!(m.starts_with("malformed .npy header"), "{body:?}: {m}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{{'descr': {}}}", "[".repeat(10_000));
        assert!(format_err(&raw(2, deep.as_bytes())).contains("nested"));
        let ok_depth = format!("{{'descr': {}{}}}", "(".repeat(20), ")".repeat(20));
        assert!(!format_err(&raw(1, ok_depth.as_bytes())).contains("nested"));
    }

    #[test]
    fn messages_quote_untrusted_text_safely() {
        let long = format!("'{}'", "\x1b".repeat(500));
        let m = format_err(&raw(1, dict(&long, "False", "(1, 1)").as_bytes()));
        assert!(
            !m.contains('\x1b') && m.contains("\\u{1b}") && m.contains("...") && m.len() < 1200
        );
    }
}
