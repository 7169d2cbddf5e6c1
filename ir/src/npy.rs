//! Reading and writing NumPy `.npy` files as [`Tensor`]s.
//!
//! The format (<https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>) is a
//! magic string `\x93NUMPY`, a version (1.0, 2.0 or 3.0), a little-endian header length (2 bytes
//! in 1.0, 4 bytes after), an ASCII header holding a Python dict literal with the keys `descr`,
//! `fortran_order` and `shape`, then the raw element bytes.
//!
//! Reading accepts the little-endian descrs of kiln's dtypes (`<f4`, `<f2`, `<V2`, `|i1`, `|u1`,
//! `<i4`, `<i8`, `|b1`) in C or Fortran order, and turns every malformed input into an error rather than
//! a panic: the data size a header declares is checked against the bytes actually present before
//! anything is allocated. Writing produces C-order, little-endian files in version 1.0 (2.0 if the
//! header is too long for 1.0) with the data aligned to 64 bytes, as NumPy does. bf16 has no
//! NumPy dtype: it is read and written as `ml_dtypes` saves its `bfloat16`, a 2-byte void
//! (`<V2`).

use crate::{DType, Tensor};
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn, ShapeBuilder};
use std::fmt::Write as _;
use std::path::Path;

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// Data in written files starts at a multiple of this many bytes.
const ALIGN: usize = 64;

/// NumPy's own limit on the number of dimensions.
const MAX_RANK: usize = 64;

/// How deeply header literals may nest (a valid header needs 2).
const MAX_DEPTH: usize = 16;

/// Parses an in-memory `.npy` file (format version 1.0, 2.0 or 3.0).
///
/// Supported descrs are `<f4`, `<f2`, `|i1`, `|u1`, `<i4`, `<i8` and `|b1` (single-byte types
/// also with `<` or `>`); Fortran-order data is transposed into C order. Any other descr, a
/// big-endian file, a malformed header, or a data section whose length disagrees with the
/// declared shape is an error.
pub fn parse_npy(bytes: &[u8]) -> Result<Tensor, String> {
    let (header, data) = split_header(bytes)?;
    let header = parse_header(header)?;
    let n = element_count(&header.shape)?;
    let size = header.dtype.size();
    let expected = n
        .checked_mul(size)
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or_else(|| {
            format!(
                "header declares shape {} of {} elements of {size} bytes, which is too large",
                py_shape(&header.shape),
                n
            )
        })?;
    if data.len() != expected {
        return Err(format!(
            "header declares shape {} of {} = {expected} bytes but {} bytes of data follow",
            py_shape(&header.shape),
            header.descr,
            data.len()
        ));
    }
    let t = match header.dtype {
        DType::F32 => build(&header, decode(data, f32::from_le_bytes))?,
        DType::F16 => build(
            &header,
            decode(data, |b| f16::from_bits(u16::from_le_bytes(b))),
        )?,
        DType::I8 => build(&header, decode(data, i8::from_le_bytes))?,
        DType::U8 => build(&header, data.to_vec())?,
        DType::I32 => build(&header, decode(data, i32::from_le_bytes))?,
        DType::I64 => build(&header, decode(data, i64::from_le_bytes))?,
        DType::Bool => {
            if let Some(i) = data.iter().position(|&b| b > 1) {
                return Err(format!(
                    "bool element {i} has byte value {} (expected 0 or 1)",
                    data[i]
                ));
            }
            build(&header, data.iter().map(|&b| b != 0).collect())?
        }
        DType::BF16 => build(
            &header,
            decode(data, |b| bf16::from_bits(u16::from_le_bytes(b))),
        )?,
    };
    Ok(t)
}

/// Reads and parses the `.npy` file at `path` (see [`parse_npy`]); errors start with the path.
pub fn read_npy(path: &Path) -> Result<Tensor, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_npy(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Serialises `t` as a `.npy` file: C order, little endian, format version 1.0 (2.0 if the header
/// does not fit in 1.0), the header padded with spaces and ending in `\n` so that the data starts
/// at a multiple of 64 bytes.
///
/// bf16, which NumPy has no dtype for, is written as `ml_dtypes` writes it: descr `<V2`
/// (`np.load(f).view(ml_dtypes.bfloat16)` reads it back).
pub fn npy_bytes(t: &Tensor) -> Result<Vec<u8>, String> {
    let descr = descr_of(t.dtype());
    let mut header = format!(
        "{{'descr': '{descr}', 'fortran_order': False, 'shape': {}, }}",
        py_shape(t.shape())
    );
    // Version 1.0 has a 2-byte header length, later versions a 4-byte one.
    let (version, len_bytes) = if MAGIC.len() + 2 + 2 + header.len() < u16::MAX as usize - ALIGN {
        (1u8, 2)
    } else {
        (2u8, 4)
    };
    let prefix = MAGIC.len() + 2 + len_bytes;
    let unpadded = prefix + header.len() + 1;
    let total = unpadded.div_ceil(ALIGN) * ALIGN;
    header.push_str(&" ".repeat(total - unpadded));
    header.push('\n');
    let data_len = t
        .len()
        .checked_mul(t.dtype().size())
        .ok_or("tensor is too large to serialise")?;
    let mut out = Vec::with_capacity(total + data_len);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[version, 0]);
    if version == 1 {
        let len = u16::try_from(header.len()).map_err(|_| "header too long for .npy 1.0")?;
        out.extend_from_slice(&len.to_le_bytes());
    } else {
        let len = u32::try_from(header.len()).map_err(|_| "header too long for .npy 2.0")?;
        out.extend_from_slice(&len.to_le_bytes());
    }
    out.extend_from_slice(header.as_bytes());
    debug_assert_eq!(out.len() % ALIGN, 0);
    match t {
        Tensor::F32(a) => encode(&mut out, a, f32::to_le_bytes),
        Tensor::F16(a) => encode(&mut out, a, |x| x.to_bits().to_le_bytes()),
        Tensor::I8(a) => encode(&mut out, a, i8::to_le_bytes),
        Tensor::U8(a) => encode(&mut out, a, u8::to_le_bytes),
        Tensor::I32(a) => encode(&mut out, a, i32::to_le_bytes),
        Tensor::I64(a) => encode(&mut out, a, i64::to_le_bytes),
        Tensor::Bool(a) => encode(&mut out, a, |x| [x as u8]),
        Tensor::BF16(a) => encode(&mut out, a, |x| x.to_bits().to_le_bytes()),
    }
    Ok(out)
}

/// Writes `t` to `path` as a `.npy` file (see [`npy_bytes`]); errors start with the path.
pub fn write_npy(path: &Path, t: &Tensor) -> Result<(), String> {
    let bytes = npy_bytes(t).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The descr NumPy (or, for bf16, `ml_dtypes`) writes for `d`.
fn descr_of(d: DType) -> &'static str {
    match d {
        DType::F32 => "<f4",
        DType::F16 => "<f2",
        DType::I8 => "|i1",
        DType::U8 => "|u1",
        DType::I32 => "<i4",
        DType::I64 => "<i8",
        DType::Bool => "|b1",
        DType::BF16 => "<V2",
    }
}

/// Appends every element of `a`, in row-major order, as bytes.
fn encode<T: Copy, const N: usize>(out: &mut Vec<u8>, a: &ArrayD<T>, f: impl Fn(T) -> [u8; N]) {
    for &x in a.iter() {
        out.extend_from_slice(&f(x));
    }
}

/// Decodes `data` (whose length is a multiple of `N`) as little-endian elements.
fn decode<T, const N: usize>(data: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// Wraps decoded elements (in file order) as a C-order tensor of the header's shape.
fn build<T: crate::Element>(h: &Header, v: Vec<T>) -> Result<Tensor, String> {
    let a = ArrayD::from_shape_vec(IxDyn(&h.shape).set_f(h.fortran_order), v)
        .map_err(|e| format!("shape {}: {e}", py_shape(&h.shape)))?;
    let a = if h.fortran_order {
        a.as_standard_layout().into_owned()
    } else {
        a
    };
    Ok(T::wrap(a))
}

/// Formats a shape the way Python prints a tuple: `()`, `(3,)`, `(2, 3)`.
fn py_shape(shape: &[usize]) -> String {
    let mut s = String::from("(");
    for (i, d) in shape.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{d}");
    }
    if shape.len() == 1 {
        s.push(',');
    }
    s.push(')');
    s
}

/// The number of elements of `shape`, checking that it fits (as ndarray requires) in an isize
/// even when a zero dimension makes the product itself small.
fn element_count(shape: &[usize]) -> Result<usize, String> {
    let mut nonzero: usize = 1;
    for &d in shape {
        if d != 0 {
            nonzero = nonzero
                .checked_mul(d)
                .filter(|&n| n <= isize::MAX as usize)
                .ok_or_else(|| format!("shape {} has too many elements", py_shape(shape)))?;
        }
    }
    Ok(if shape.contains(&0) { 0 } else { nonzero })
}

/// Checks the magic string and version and splits the file into header text and data.
fn split_header(bytes: &[u8]) -> Result<(&str, &[u8]), String> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err("not a .npy file (missing the \\x93NUMPY magic string)".to_string());
    }
    let rest = &bytes[MAGIC.len()..];
    let [major, minor, rest @ ..] = rest else {
        return Err("file is truncated inside the format version".to_string());
    };
    let len_bytes = match (*major, *minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Err(format!("unsupported .npy format version {major}.{minor}")),
    };
    if rest.len() < len_bytes {
        return Err("file is truncated inside the header length".to_string());
    }
    let (len, rest) = rest.split_at(len_bytes);
    let header_len = len
        .iter()
        .rev()
        .fold(0usize, |acc, &b| (acc << 8) | b as usize);
    if header_len > rest.len() {
        return Err(format!(
            "header length {header_len} runs past the end of the file ({} bytes remain)",
            rest.len()
        ));
    }
    let (header, data) = rest.split_at(header_len);
    if let Some(i) = header.iter().position(|b| !b.is_ascii()) {
        return Err(format!(
            "header contains a non-ASCII byte 0x{:02x} at offset {i}",
            header[i]
        ));
    }
    let header = std::str::from_utf8(header).map_err(|e| format!("header is not text: {e}"))?;
    Ok((header, data))
}

/// The validated contents of a header dict.
#[derive(Debug)]
struct Header {
    descr: String,
    dtype: DType,
    fortran_order: bool,
    shape: Vec<usize>,
}

/// Parses and validates the header dict.
fn parse_header(text: &str) -> Result<Header, String> {
    let lit = Parser::parse(text)?;
    let Lit::Dict(entries) = lit else {
        return Err(format!("header is not a dict: {}", excerpt(text)));
    };
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    for (k, v) in entries {
        let Lit::Str(k) = k else {
            return Err(format!("header key is not a string: {}", excerpt(text)));
        };
        let slot = match k.as_str() {
            "descr" => &mut descr,
            "fortran_order" => &mut fortran_order,
            "shape" => &mut shape,
            _ => return Err(format!("header has unexpected key '{}'", k.escape_debug())),
        };
        if slot.replace(v).is_some() {
            return Err(format!("header repeats key '{k}'"));
        }
    }
    let missing = |k: &str| format!("header is missing key '{k}'");
    let descr = match descr.ok_or_else(|| missing("descr"))? {
        Lit::Str(s) => s,
        Lit::List(_) => return Err("structured (record) dtypes are not supported".to_string()),
        _ => return Err("header 'descr' is not a string".to_string()),
    };
    let fortran_order = match fortran_order.ok_or_else(|| missing("fortran_order"))? {
        Lit::Bool(b) => b,
        _ => return Err("header 'fortran_order' is not True or False".to_string()),
    };
    let Lit::Tuple(dims) = shape.ok_or_else(|| missing("shape"))? else {
        return Err("header 'shape' is not a tuple".to_string());
    };
    if dims.len() > MAX_RANK {
        return Err(format!(
            "shape has {} dimensions (at most {MAX_RANK} allowed)",
            dims.len()
        ));
    }
    let shape = dims
        .into_iter()
        .map(|d| match d {
            Lit::Int(s) if s.starts_with('-') && s.bytes().skip(1).any(|b| b != b'0') => {
                Err(format!("shape dimension {s} is negative"))
            }
            Lit::Int(s) => s
                .trim_start_matches(['-', '+'])
                .parse::<usize>()
                .map_err(|_| format!("shape dimension {s} is too large")),
            _ => Err("shape dimensions must be integers".to_string()),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let dtype = dtype_of(&descr)?;
    Ok(Header {
        descr,
        dtype,
        fortran_order,
        shape,
    })
}

/// Maps a descr to a dtype, or explains why it is not supported.
fn dtype_of(descr: &str) -> Result<DType, String> {
    let bytes = descr.as_bytes();
    let (order, kind) = match bytes {
        [o @ (b'<' | b'>' | b'|' | b'='), rest @ ..] => (*o, rest),
        _ => (b'=', bytes),
    };
    let dtype = match kind {
        b"f4" => DType::F32,
        b"f2" => DType::F16,
        b"i1" => DType::I8,
        b"u1" => DType::U8,
        b"i4" => DType::I32,
        b"i8" => DType::I64,
        b"b1" => DType::Bool,
        // ml_dtypes' bfloat16 has no NumPy type code: np.save writes it as a 2-byte void.
        b"V2" => DType::BF16,
        _ => {
            return Err(format!(
                "unsupported dtype descr '{}' (kiln reads <f4, <f2, <V2 (ml_dtypes' bfloat16), \
                 |i1, |u1, <i4, <i8 and |b1)",
                descr.escape_debug()
            ))
        }
    };
    // Byte order is meaningless for single-byte types (NumPy treats them all alike).
    if dtype.size() > 1 {
        match (order, descr.len()) {
            (b'<', 3) => {}
            // A void has no byte order of its own; ml_dtypes' bfloat16 is little-endian.
            (b'|', 3) if dtype == DType::BF16 => {}
            (b'>', 3) => {
                return Err(format!(
                    "big-endian descr '{descr}' is not supported (only little-endian data)"
                ))
            }
            _ => {
                return Err(format!(
                    "dtype descr '{descr}' has no explicit little-endian byte order ('<')"
                ))
            }
        }
    }
    Ok(dtype)
}

/// A short, single-line rendering of header text for error messages.
fn excerpt(text: &str) -> String {
    let t = text.trim();
    let mut s: String = t
        .chars()
        .take(120)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if t.len() > 120 {
        s.push_str("...");
    }
    format!("`{s}`")
}

/// A Python literal, as far as `.npy` headers need.
#[derive(Debug, Clone, PartialEq)]
enum Lit {
    /// A string.
    Str(String),
    /// `True` or `False`.
    Bool(bool),
    /// `None`.
    None,
    /// An integer, kept as its text (optional `-`, digits) so out-of-range values can be reported.
    Int(String),
    /// A tuple.
    Tuple(Vec<Lit>),
    /// A list.
    List(Vec<Lit>),
    /// A dict, in source order.
    Dict(Vec<(Lit, Lit)>),
}

/// A tiny recursive-descent parser for Python literals over an ASCII header.
struct Parser<'a> {
    text: &'a str,
    s: &'a [u8],
    pos: usize,
}

impl<'a> Parser<'a> {
    /// Parses `text` as exactly one literal, surrounded by optional whitespace.
    fn parse(text: &'a str) -> Result<Lit, String> {
        let mut p = Parser {
            text,
            s: text.as_bytes(),
            pos: 0,
        };
        let lit = p.value(0)?;
        p.ws();
        if p.pos != p.s.len() {
            return Err(p.err("unexpected text after the dict"));
        }
        Ok(lit)
    }

    fn err(&self, what: &str) -> String {
        format!(
            "cannot parse header {}: {what} at offset {}",
            excerpt(self.text),
            self.pos
        )
    }

    fn ws(&mut self) {
        while self.pos < self.s.len() && matches!(self.s[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// Skips whitespace, then consumes `c` if it is next.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Result<Lit, String> {
        if depth > MAX_DEPTH {
            return Err(self.err("literals nest too deeply"));
        }
        self.ws();
        match self.peek() {
            None => Err(self.err("unexpected end of header")),
            Some(q @ (b'\'' | b'"')) => self.string(q),
            Some(b'{') => self.dict(depth),
            Some(b'(') => self.tuple(depth),
            Some(b'[') => {
                self.pos += 1;
                let (items, _) = self.items(b']', depth)?;
                Ok(Lit::List(items))
            }
            Some(b'-' | b'+' | b'0'..=b'9') => self.int(),
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.pos;
                while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
                    self.pos += 1;
                }
                match &self.text[start..self.pos] {
                    "True" => Ok(Lit::Bool(true)),
                    "False" => Ok(Lit::Bool(false)),
                    "None" => Ok(Lit::None),
                    _ => {
                        self.pos = start;
                        Err(self.err("unknown name"))
                    }
                }
            }
            Some(_) => Err(self.err("unexpected character")),
        }
    }

    fn string(&mut self, quote: u8) -> Result<Lit, String> {
        let start = self.pos;
        self.pos += 1;
        let mut out = String::new();
        loop {
            match self.peek() {
                None | Some(b'\n') => {
                    self.pos = start;
                    return Err(self.err("unterminated string"));
                }
                Some(c) if c == quote => {
                    self.pos += 1;
                    return Ok(Lit::Str(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(e) = self.peek() else { continue };
                    self.pos += 1;
                    match e {
                        b'\\' | b'\'' | b'"' => out.push(e as char),
                        b'n' => out.push('\n'),
                        b't' => out.push('\t'),
                        b'r' => out.push('\r'),
                        b'0' => out.push('\0'),
                        _ => {
                            out.push('\\');
                            out.push(e as char);
                        }
                    }
                }
                Some(c) => {
                    self.pos += 1;
                    out.push(c as char);
                }
            }
        }
    }

    fn int(&mut self) -> Result<Lit, String> {
        let mut text = String::new();
        match self.peek() {
            Some(b'-') => {
                text.push('-');
                self.pos += 1;
            }
            Some(b'+') => self.pos += 1,
            _ => {}
        }
        let digits = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        if self.pos == digits {
            return Err(self.err("expected digits"));
        }
        text.push_str(&self.text[digits..self.pos]);
        // Python 2 era NumPy wrote long integers as `3L`.
        if matches!(self.peek(), Some(b'L' | b'l')) {
            self.pos += 1;
        }
        if matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'.' || c == b'_') {
            return Err(self.err("malformed integer"));
        }
        Ok(Lit::Int(text))
    }

    /// Parses comma-separated values up to `close` (the opening bracket is already consumed);
    /// also returns whether any comma was seen.
    fn items(&mut self, close: u8, depth: usize) -> Result<(Vec<Lit>, bool), String> {
        let mut items = Vec::new();
        let mut comma = false;
        loop {
            if self.eat(close) {
                return Ok((items, comma));
            }
            items.push(self.value(depth + 1)?);
            if self.eat(b',') {
                comma = true;
            } else if self.eat(close) {
                return Ok((items, comma));
            } else {
                return Err(self.err(&format!("expected ',' or '{}'", close as char)));
            }
        }
    }

    fn tuple(&mut self, depth: usize) -> Result<Lit, String> {
        self.pos += 1;
        let (mut items, comma) = self.items(b')', depth)?;
        // `(x)` is just `x`; `()` and anything with a comma is a tuple.
        if items.len() == 1 && !comma {
            Ok(items.remove(0))
        } else {
            Ok(Lit::Tuple(items))
        }
    }

    fn dict(&mut self, depth: usize) -> Result<Lit, String> {
        self.pos += 1;
        let mut entries = Vec::new();
        loop {
            if self.eat(b'}') {
                return Ok(Lit::Dict(entries));
            }
            let k = self.value(depth + 1)?;
            if !self.eat(b':') {
                return Err(self.err("expected ':'"));
            }
            let v = self.value(depth + 1)?;
            entries.push((k, v));
            if !self.eat(b',') {
                if self.eat(b'}') {
                    return Ok(Lit::Dict(entries));
                }
                return Err(self.err("expected ',' or '}'"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    // Files written by NumPy 2.4 (`np.lib.format.write_array`).

    /// `np.array([[1.5, -2.0, 0.0], [3.25, np.inf, -0.0]], dtype='<f4')`
    const NP_F4: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }                                                          \n\x00\x00\xc0?\x00\x00\x00\xc0\x00\x00\x00\x00\x00\x00P@\x00\x00\x80\x7f\x00\x00\x00\x80";
    /// `np.array([-1, 2**40, 3, -2**63], dtype='<i8')`
    const NP_I8: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<i8', 'fortran_order': False, 'shape': (4,), }                                                            \n\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00\x00\x00\x00\x01\x00\x00\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x80";
    /// `np.array([[True, False], [False, True], [True, True]])`
    const NP_BOOL: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '|b1', 'fortran_order': False, 'shape': (3, 2), }                                                          \n\x01\x00\x00\x01\x01\x01";
    /// `np.asfortranarray(np.arange(6, dtype='<i4').reshape(2, 3))`
    const NP_FORTRAN: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<i4', 'fortran_order': True, 'shape': (2, 3), }                                                           \n\x00\x00\x00\x00\x03\x00\x00\x00\x01\x00\x00\x00\x04\x00\x00\x00\x02\x00\x00\x00\x05\x00\x00\x00";
    /// `np.array(-0.5, dtype='<f2')`
    const NP_F2_SCALAR: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f2', 'fortran_order': False, 'shape': (), }                                                              \n\x00\xb8";
    /// `np.array([0, 7, 255], dtype='u1')`, format version 2.0
    const NP_U1_V2: &[u8] = b"\x93NUMPY\x02\x00t\x00\x00\x00{'descr': '|u1', 'fortran_order': False, 'shape': (3,), }                                                          \n\x00\x07\xff";
    /// `np.array([-128, 0, 127], dtype='i1').reshape(3, 1)`, format version 3.0
    const NP_I1_V3: &[u8] = b"\x93NUMPY\x03\x00t\x00\x00\x00{'descr': '|i1', 'fortran_order': False, 'shape': (3, 1), }                                                        \n\x80\x00\x7f";
    /// `np.zeros((2, 0), dtype='<f4')`
    const NP_EMPTY: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 0), }                                                          \n";

    const NUMPY_FILES: [&[u8]; 8] = [
        NP_F4,
        NP_I8,
        NP_BOOL,
        NP_FORTRAN,
        NP_F2_SCALAR,
        NP_U1_V2,
        NP_I1_V3,
        NP_EMPTY,
    ];

    /// A version 1.0 file with the given header text (unpadded) and data.
    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut v = MAGIC.to_vec();
        v.extend_from_slice(&[1, 0]);
        v.extend_from_slice(&(header.len() as u16).to_le_bytes());
        v.extend_from_slice(header.as_bytes());
        v.extend_from_slice(data);
        v
    }

    fn err(bytes: &[u8]) -> String {
        let e = parse_npy(bytes).expect_err("should fail");
        assert!(!e.contains('\n'), "multi-line error: {e:?}");
        e
    }

    fn assert_err(bytes: &[u8], needle: &str) {
        let e = err(bytes);
        assert!(
            e.contains(needle),
            "error {e:?} does not mention {needle:?}"
        );
    }

    fn sample_tensors() -> Vec<Tensor> {
        let mut ts = vec![
            Tensor::from_vec(&[2, 3], vec![1.5f32, -2.0, 0.0, f32::INFINITY, -0.0, 1e-30]).unwrap(),
            Tensor::from_vec(
                &[3, 1],
                vec![f16::from_f32(0.5), f16::MAX, f16::NEG_INFINITY],
            )
            .unwrap(),
            Tensor::from_vec(&[4], vec![i8::MIN, -1, 0, i8::MAX]).unwrap(),
            Tensor::from_vec(&[2, 2], vec![0u8, 1, 128, 255]).unwrap(),
            Tensor::from_vec(&[1, 2, 2], vec![i32::MIN, -7, 0, i32::MAX]).unwrap(),
            Tensor::from_vec(&[3], vec![i64::MIN, 1 << 40, i64::MAX]).unwrap(),
            Tensor::from_vec(&[2, 3], vec![true, false, true, true, false, false]).unwrap(),
            Tensor::scalar(3.5f32),
            Tensor::scalar(f16::from_f32(-2.0)),
            Tensor::scalar(-5i8),
            Tensor::scalar(200u8),
            Tensor::scalar(-123456i32),
            Tensor::scalar(-1i64),
            Tensor::scalar(true),
            Tensor::from_vec(
                &[3],
                vec![bf16::from_f32(1.5), bf16::MIN, bf16::NEG_INFINITY],
            )
            .unwrap(),
        ];
        for d in DType::ALL {
            ts.push(Tensor::zeros(d, &[0]));
            ts.push(Tensor::zeros(d, &[2, 0, 3]));
        }
        ts
    }

    #[test]
    fn round_trips_every_writable_dtype() {
        for t in sample_tensors() {
            let bytes = npy_bytes(&t).unwrap();
            assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
            let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + hlen) % 64, 0, "data of {t:?} is not 64-byte aligned");
            assert_eq!(bytes[10 + hlen - 1], b'\n');
            assert_eq!(bytes.len() - 10 - hlen, t.len() * t.dtype().size());
            let back = parse_npy(&bytes).unwrap();
            assert_eq!(back.dtype(), t.dtype());
            assert_eq!(back.shape(), t.shape());
            assert_eq!(back, t);
        }
    }

    #[test]
    fn writes_numpy_style_header() {
        let t =
            Tensor::from_vec(&[2, 3], vec![1.5f32, -2.0, 0.0, 3.25, f32::INFINITY, -0.0]).unwrap();
        let bytes = npy_bytes(&t).unwrap();
        let header = std::str::from_utf8(&bytes[10..bytes.len() - 24]).unwrap();
        assert!(header.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
        // Same data bytes as NumPy's file.
        assert_eq!(&bytes[bytes.len() - 24..], &NP_F4[NP_F4.len() - 24..]);
        let s = npy_bytes(&Tensor::scalar(1u8)).unwrap();
        assert!(String::from_utf8_lossy(&s)
            .contains("'descr': '|u1', 'fortran_order': False, 'shape': (), }"));
        let v = npy_bytes(&Tensor::from_vec(&[5], vec![true; 5]).unwrap()).unwrap();
        assert!(String::from_utf8_lossy(&v)
            .contains("'descr': '|b1', 'fortran_order': False, 'shape': (5,), }"));
    }

    #[test]
    fn bf16_is_read_and_written_as_ml_dtypes_saves_it() {
        // `np.save(f, np.array([1.5, -2, 3.25], dtype=ml_dtypes.bfloat16))` (ml_dtypes 0.5).
        let mut file =
            b"\x93NUMPY\x01\x00v\x00{'descr': '<V2', 'fortran_order': False, 'shape': (3,), }"
                .to_vec();
        file.resize(127, b' ');
        file.push(b'\n');
        file.extend_from_slice(&[0xc0, 0x3f, 0x00, 0xc0, 0x50, 0x40]);
        let want: Vec<bf16> = [1.5f32, -2.0, 3.25]
            .iter()
            .map(|&v| bf16::from_f32(v))
            .collect();
        let t = Tensor::from_vec(&[3], want).unwrap();
        assert_eq!(parse_npy(&file).unwrap(), t);
        assert_eq!(npy_bytes(&t).unwrap(), file);
    }

    #[test]
    fn reads_numpy_files() {
        assert_eq!(
            parse_npy(NP_F4).unwrap(),
            Tensor::from_vec(&[2, 3], vec![1.5f32, -2.0, 0.0, 3.25, f32::INFINITY, -0.0]).unwrap()
        );
        assert_eq!(
            parse_npy(NP_I8).unwrap(),
            Tensor::from_vec(&[4], vec![-1i64, 1 << 40, 3, i64::MIN]).unwrap()
        );
        assert_eq!(
            parse_npy(NP_BOOL).unwrap(),
            Tensor::from_vec(&[3, 2], vec![true, false, false, true, true, true]).unwrap()
        );
        assert_eq!(
            parse_npy(NP_F2_SCALAR).unwrap(),
            Tensor::scalar(f16::from_f32(-0.5))
        );
        assert_eq!(
            parse_npy(NP_U1_V2).unwrap(),
            Tensor::from_vec(&[3], vec![0u8, 7, 255]).unwrap()
        );
        assert_eq!(
            parse_npy(NP_I1_V3).unwrap(),
            Tensor::from_vec(&[3, 1], vec![-128i8, 0, 127]).unwrap()
        );
        assert_eq!(
            parse_npy(NP_EMPTY).unwrap(),
            Tensor::zeros(DType::F32, &[2, 0])
        );
    }

    #[test]
    fn fortran_order_is_transposed_into_c_order() {
        let t = parse_npy(NP_FORTRAN).unwrap();
        assert_eq!(
            t,
            Tensor::from_vec(&[2, 3], vec![0i32, 1, 2, 3, 4, 5]).unwrap()
        );
        let Tensor::I32(a) = &t else { panic!("{t:?}") };
        assert!(a.is_standard_layout());
        assert_eq!(a.as_slice().unwrap(), &[0, 1, 2, 3, 4, 5]);
        // Writing it back gives C order.
        let again = parse_npy(&npy_bytes(&t).unwrap()).unwrap();
        assert_eq!(again, t);
    }

    #[test]
    fn header_syntax_variants() {
        let data = [1u8, 2, 3, 4, 5, 6];
        let want = Tensor::from_vec(&[2, 3], data.to_vec()).unwrap();
        for h in [
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 3), }\n",
            "{'shape': (2, 3), 'fortran_order': False, 'descr': '|u1'}",
            "{\"descr\":\"|u1\",\"fortran_order\":False,\"shape\":(2,3,)}",
            "  {\n 'descr' : '<u1' ,\t'fortran_order' : False , 'shape' : ( 2L , 3L ) , }  \n",
            "{'descr': '|u1', 'fortran_order': False, 'shape': (2, +3), }",
        ] {
            assert_eq!(parse_npy(&file(h, &data)).unwrap(), want, "header {h:?}");
        }
        let scalar = file(
            "{'descr': '<i4', 'fortran_order': True, 'shape': ()}",
            &7i32.to_le_bytes(),
        );
        assert_eq!(parse_npy(&scalar).unwrap(), Tensor::scalar(7i32));
        let one = file(
            "{'descr': '<i4', 'fortran_order': False, 'shape': (1,)}",
            &7i32.to_le_bytes(),
        );
        assert_eq!(
            parse_npy(&one).unwrap(),
            Tensor::from_vec(&[1], vec![7i32]).unwrap()
        );
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let h = |s: &str, data: &[u8]| file(s, data);
        assert_err(b"", "magic");
        assert_err(b"\x93NUMP", "magic");
        assert_err(b"PK\x03\x04 not npy at all", "magic");
        assert_err(b"\x93NUMPY\x01", "truncated");
        assert_err(b"\x93NUMPY\x01\x00\x10", "truncated");
        assert_err(b"\x93NUMPY\x02\x00\x10\x00\x00", "truncated");
        assert_err(b"\x93NUMPY\x04\x00\x10\x00", "version 4.0");
        assert_err(b"\x93NUMPY\x01\x01\x10\x00", "version 1.1");
        assert_err(b"\x93NUMPY\x01\x00\xff\xff{}", "runs past the end");
        assert_err(b"\x93NUMPY\x02\x00\xff\xff\xff\xff{}", "runs past the end");
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                &[0; 20],
            ),
            "header declares shape (2, 3) of <f4 = 24 bytes but 20 bytes of data follow",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }",
                &[0; 28],
            ),
            "= 24 bytes but 28 bytes of data follow",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (), }",
                &[],
            ),
            "= 4 bytes but 0",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (0,), }",
                &[1],
            ),
            "= 0 bytes but 1",
        );
        assert_err(
            &h(
                "{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
            "big-endian",
        );
        assert_err(
            &h(
                "{'descr': '>i8', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
            ),
            "big-endian",
        );
        assert_err(
            &h(
                "{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }",
                &[0; 8],
            ),
            "'<f8'",
        );
        assert_err(
            &h(
                "{'descr': '<u4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
            "'<u4'",
        );
        assert_err(
            &h(
                "{'descr': '<i2', 'fortran_order': False, 'shape': (1,), }",
                &[0; 2],
            ),
            "'<i2'",
        );
        assert_err(
            &h(
                "{'descr': '|f4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
            "'|f4'",
        );
        assert_err(
            &h(
                "{'descr': 'f4', 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
            "'f4'",
        );
        assert_err(
            &h(
                "{'descr': '<U3', 'fortran_order': False, 'shape': (1,), }",
                &[0; 12],
            ),
            "'<U3'",
        );
        assert_err(
            &h(
                "{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
            "structured",
        );
        assert_err(
            &h(
                "{'descr': 4, 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
            "'descr' is not a string",
        );
        assert_err(
            &h("{'fortran_order': False, 'shape': (1,), }", &[0; 4]),
            "missing key 'descr'",
        );
        assert_err(
            &h("{'descr': '<f4', 'shape': (1,), }", &[0; 4]),
            "missing key 'fortran_order'",
        );
        assert_err(
            &h("{'descr': '<f4', 'fortran_order': False}", &[0; 4]),
            "missing key 'shape'",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'x': 1}",
                &[0; 4],
            ),
            "unexpected key 'x'",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
                &[0; 4],
            ),
            "repeats key 'descr'",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': 0, 'shape': (1,), }",
                &[0; 4],
            ),
            "fortran_order",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1), }",
                &[0; 4],
            ),
            "not a tuple",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': [1], }",
                &[0; 4],
            ),
            "not a tuple",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 'a'), }",
                &[0; 4],
            ),
            "integers",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
                &[0; 4],
            ),
            "-1 is negative",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,), }",
                &[0; 4],
            ),
            "too large",
        );
        assert_err(&h("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776, 1099511627776), }", &[0; 4]), "too many elements");
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387903,), }",
                &[0; 4],
            ),
            "too large",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776,), }",
                &[0; 4],
            ),
            "but 4 bytes of data follow",
        );
        assert_err(
            &h(
                "{'descr': '|b1', 'fortran_order': False, 'shape': (2,), }",
                &[1, 2],
            ),
            "bool element 1 has byte value 2",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1.5,), }",
                &[0; 4],
            ),
            "cannot parse header",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': false, 'shape': (1,), }",
                &[0; 4],
            ),
            "unknown name",
        );
        assert_err(
            &h(
                "{'descr': '<f4 , 'fortran_order': False, 'shape': (1,), }",
                &[0; 4],
            ),
            "cannot parse header",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), ",
                &[0; 4],
            ),
            "end of header",
        );
        assert_err(
            &h(
                "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)} x",
                &[0; 4],
            ),
            "after the dict",
        );
        assert_err(
            &h(
                "{'descr' '<f4', 'fortran_order': False, 'shape': (1,)}",
                &[0; 4],
            ),
            "expected ':'",
        );
        assert_err(&h("('descr', '<f4')", &[0; 4]), "not a dict");
        assert_err(&h("", &[0; 4]), "end of header");
        assert_err(&h(&"(".repeat(10_000), &[]), "nest too deeply");
        let mut non_ascii = h(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,)}",
            &[0; 4],
        );
        non_ascii[12] = 0xe9;
        assert_err(&non_ascii, "non-ASCII");
        let rank65 = format!(
            "{{'descr': '|u1', 'fortran_order': False, 'shape': ({}), }}",
            "1, ".repeat(65)
        );
        assert_err(&h(&rank65, &[0]), "dimensions");
    }

    #[test]
    fn zero_size_shapes_with_huge_dims() {
        // Zero elements, but the other dimensions must still be sane.
        let ok = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 0)}",
            &[],
        );
        assert_eq!(parse_npy(&ok).unwrap().shape(), &[1 << 40, 0]);
        let bad = file(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 0, 1099511627776)}",
            &[],
        );
        assert!(err(&bad).contains("too many elements"));
    }

    #[test]
    fn truncation_and_mutation_never_panic() {
        let mut files: Vec<Vec<u8>> = NUMPY_FILES.iter().map(|f| f.to_vec()).collect();
        files.push(file(
            "{'descr':'<i8','fortran_order':True,'shape':(2,1)}",
            &[0; 16],
        ));
        for f in &files {
            parse_npy(f).expect("the unmodified file parses");
            for cut in 0..f.len() {
                // Every proper prefix is an error (the data length no longer matches).
                assert!(
                    parse_npy(&f[..cut]).is_err(),
                    "prefix of {cut} bytes parsed"
                );
            }
            let mut g = f.clone();
            g.push(0);
            assert!(parse_npy(&g).is_err(), "trailing byte accepted");
            for i in 0..f.len() {
                for v in 0..=255u8 {
                    g.clear();
                    g.extend_from_slice(f);
                    g[i] = v;
                    if let Err(e) = parse_npy(&g) {
                        assert!(!e.is_empty() && !e.contains('\n'), "bad error {e:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn read_and_write_files() {
        let dir = std::env::temp_dir().join(format!("kiln-npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.npy");
        let t = Tensor::from_vec(&[2, 2], vec![1i32, 2, 3, 4]).unwrap();
        write_npy(&path, &t).unwrap();
        assert_eq!(read_npy(&path).unwrap(), t);
        std::fs::write(&path, b"garbage").unwrap();
        let e = read_npy(&path).unwrap_err();
        assert!(
            e.starts_with(&format!("{}: ", path.display())) && e.contains("magic"),
            "{e}"
        );
        let missing = dir.join("missing.npy");
        let e = read_npy(&missing).unwrap_err();
        assert!(e.starts_with(&format!("{}: ", missing.display())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Cross-checks the writer against NumPy itself when `python3` with NumPy is available.
    #[test]
    fn numpy_loads_written_files() {
        let have_numpy = std::process::Command::new("python3")
            .args(["-c", "import numpy"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !have_numpy {
            eprintln!("skipping: python3 with numpy is not available");
            return;
        }
        let dir = std::env::temp_dir().join(format!("kiln-npy-numpy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut script = String::from("import numpy as np\n");
        // NumPy reads bf16 only as 2-byte voids (ml_dtypes gives them a type).
        let numpy_types = sample_tensors()
            .into_iter()
            .filter(|t| t.dtype() != DType::BF16);
        for (i, t) in numpy_types.enumerate() {
            let path = dir.join(format!("{i}.npy"));
            write_npy(&path, &t).unwrap();
            let values: Vec<String> = t
                .to_f64_array()
                .iter()
                .map(|v| {
                    if v.is_infinite() {
                        format!("float('{v}')")
                    } else {
                        format!("{v:?}")
                    }
                })
                .collect();
            let _ = writeln!(
                script,
                "a = np.load({:?})\nassert a.dtype == np.dtype('{}'), a.dtype\nassert a.shape == {}, a.shape\n\
                 assert a.astype(np.float64).ravel().tolist() == [{}], a\n",
                path.display().to_string(),
                descr_of(t.dtype()),
                py_shape(t.shape()),
                values.join(", ")
            );
        }
        let out = std::process::Command::new("python3")
            .args(["-c", &script])
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "numpy rejected a file: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
