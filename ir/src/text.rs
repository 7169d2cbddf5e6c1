//! The text form of a [`Graph`]: a readable, line-oriented listing that [`print()`] writes and
//! [`parse`] reads back exactly (`print(&parse(&print(g))?) == print(g)`, with equal values,
//! attributes and constant bytes).
//!
//! ```text
//! kiln graph v1
//! input %input_ids: i64[batch, seq]
//! const %w: f32[64, 64] = base64"AAAAAAAA..."
//! const %axes: i64[1] = [0]
//! %y: f32[batch, seq, 64] = MatMul(%x, %w)  @"/layer0/MatMul"
//! %a: f32[2, 3], %b: f32[2, 3] = Split[axis=0, split=[3, 3]](%x)  @"split_0"
//! %n: f32[batch, seq, 64] = LayerNormalization[axis=-1, epsilon=1e-12](%x, %g, _)  @"ln"
//! %d: i64[3] = SymbolicDims[dims=dims[batch, seq, 4]]()  @"d"
//! output logits = %y
//! ```
//!
//! # Grammar
//!
//! One statement per line; blank lines and `#` comments (outside strings) are ignored;
//! whitespace between tokens is free.
//!
//! ```text
//! graph    := "kiln graph v1" { stmt }
//! stmt     := "input" value ":" type
//!           | "const" value ":" ctype "=" data
//!           | outs "=" OpKind [ "[" [ attr { "," attr } ] "]" ] "(" [ arg { "," arg } ] ")" [ "@" string ]
//!           | "output" name "=" value
//! outs     := "()"                                   (a node without outputs)
//!           | value [ ":" type ] { "," value [ ":" type ] }
//! arg      := value | "_"                            (`_`: an absent optional input)
//! value    := "%" name
//! name     := bare | string
//! bare     := one or more of [A-Za-z0-9_./:-], not ending in ":"
//! string   := a JSON string literal ("...", with \" \\ \n \uXXXX escapes)
//! type     := dtype "[" [ dim { "," dim } ] "]"      (`f32[]` is a scalar)
//! ctype    := a type whose dims are non-negative integers
//! dtype    := f32 | f16 | bf16 | i8 | u8 | i32 | i64 | bool
//! dim      := a [`Dim`] expression: 64, batch, seq*4+1, ? (unknown)
//! data     := "[" [ elem { "," elem } ] "]"          (row-major, exactly as many as the shape holds)
//!           | "base64" string                        (raw little-endian bytes)
//!           | "weights" "[" int "]"                  (raw bytes at this offset of a weights
//!                                                     file: [`print_with_weights`])
//! elem     := int | float | true | false             (as the dtype requires; f16/bf16 via f32)
//! attr     := attrname "=" attrval
//! attrname := [A-Za-z_][A-Za-z0-9_]* | string
//! attrval  := int                                    Attr::Int     3, -1
//!           | float                                  Attr::Float   1.0, 1e-12, -0.0, inf, NaN
//!           | string                                 Attr::Str     "tanh"
//!           | "[" [ int { "," int } ] "]"            Attr::Ints    [0, 2, 1]
//!           | "floats[" [ float { "," float } ] "]"  Attr::Floats  floats[1.0, 2.5]
//!           | "dims[" [ dim { "," dim } ] "]"        Attr::Dims    dims[batch, seq*4]
//!           | "tensor" ctype "=" data                Attr::Tensor  tensor f32[1] = [0.0]
//! float    := a Rust float literal with a "." or an exponent, inf, -inf, NaN,
//!             or NaN(0xXXXXXXXX) for a NaN with other bits than the canonical one
//! ```
//!
//! The printer writes the inputs first (in declaration order), then every other node in
//! [`Graph::topo_order`], then the outputs; it writes every attribute, every output type and
//! every node name (`@"..."`). Constants with at most [`MAX_LITERAL_ELEMENTS`] elements are
//! written as literals when each element reads back to the same bytes, others as base64.
//!
//! The parser is more forgiving: attributes missing from a node get their defaults
//! ([`Op::new`]), output types may be omitted (they are inferred; when given they must equal
//! the inferred ones), and a node without `@"..."` is named after its first output.
//! Every error is one line: `line N: expected X, found Y`, or `line N: ...` naming the value
//! or node at fault.

use crate::data::{element_count, TensorData};
use crate::graph::{Graph, NodeKind, ValueId, ValueType};
use crate::infer::fmt_shape;
use crate::op::{Op, OpKind};
use crate::{Attr, Attrs, DType, Dim};
use base64::Engine;
use bytes::Bytes;
use half::{bf16, f16};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;
use std::hash::{Hash, Hasher};

/// The first line of every text graph.
pub const HEADER: &str = "kiln graph v1";

/// Constants (and tensor attributes) with at most this many elements are printed as literals.
pub const MAX_LITERAL_ELEMENTS: usize = 16;

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// Printing
// ---------------------------------------------------------------------------------------------

/// Prints `graph` in the text form; [`parse`] reads the result back into an identical graph.
pub fn print(graph: &Graph) -> String {
    print_into(graph, None)
}

/// The alignment, in bytes, of every tensor in a weights blob (a cache line; what kernels
/// reading whole vectors expect). [`parse_with_weights`] refuses offsets that are not.
pub const WEIGHTS_ALIGN: usize = 64;

/// The weights blob a parse reads `weights[OFFSET]` data from, and the byte ranges of the
/// tensors read so far (start to end and line), so that no two tensors overlap unless they are
/// the same bytes (equal constants are stored once).
struct WeightsInUse<'a> {
    bytes: &'a Bytes,
    ranges: RefCell<BTreeMap<usize, (usize, usize)>>,
}

/// The weights file that [`print_with_weights`] fills: the bytes of constants, each 64-byte
/// aligned, stored once however many constants (of however many graphs) hold equal bytes.
#[derive(Debug, Default)]
pub struct WeightsBlob {
    bytes: Vec<u8>,
    /// Offsets of the tensors stored so far, by a hash of their bytes and their length.
    stored: HashMap<(u64, usize), Vec<usize>>,
}

impl WeightsBlob {
    /// The offset of `data` in the blob, appending it unless equal bytes are there already.
    pub fn insert(&mut self, data: &[u8]) -> usize {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        data.hash(&mut hasher);
        let offsets = self
            .stored
            .entry((hasher.finish(), data.len()))
            .or_default();
        if let Some(&o) = offsets
            .iter()
            .find(|&&o| &self.bytes[o..o + data.len()] == data)
        {
            return o;
        }
        self.bytes
            .resize(self.bytes.len().next_multiple_of(WEIGHTS_ALIGN), 0);
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(data);
        offsets.push(offset);
        offset
    }

    /// The blob's bytes, as the weights file holds them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Prints `graph` with the data of every constant too large for a literal moved to `weights`,
/// referenced as `weights[OFFSET]`. [`parse_with_weights`] reads the text and the blob back
/// into an identical graph.
pub fn print_with_weights(graph: &Graph, weights: &mut WeightsBlob) -> String {
    print_into(graph, Some(weights))
}

/// The text form, with large constants in `weights` if given, else inline as base64.
fn print_into(graph: &Graph, mut weights: Option<&mut WeightsBlob>) -> String {
    let mut out = String::new();
    out.push_str(HEADER);
    out.push('\n');
    let mut inputs = HashSet::new();
    for v in graph.inputs() {
        inputs.insert(v.node);
        let value = graph.value(v);
        let _ = writeln!(
            out,
            "input {}: {}",
            value_ref(&value.name),
            type_text(&value.ty)
        );
    }
    for n in graph.topo_order() {
        if inputs.contains(&n) {
            continue;
        }
        let node = graph.node(n);
        match &node.kind {
            NodeKind::Input => {
                // Every input node is listed by `graph.inputs()`; print a stray one anyway.
                for v in &node.outputs {
                    let _ = writeln!(out, "input {}: {}", value_ref(&v.name), type_text(&v.ty));
                }
            }
            NodeKind::Constant(data) => {
                for v in &node.outputs {
                    let text = match (literal_text(data), weights.as_deref_mut()) {
                        (None, Some(blob)) => {
                            let offset = blob.insert(data.bytes());
                            format!("{}{:?} = weights[{offset}]", data.dtype(), data.shape())
                        }
                        _ => data_text(data),
                    };
                    let _ = writeln!(out, "const {}: {text}", value_ref(&v.name));
                }
            }
            NodeKind::Op(op) => {
                if node.outputs.is_empty() {
                    out.push_str("()");
                }
                for (i, v) in node.outputs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    let _ = write!(out, "{}: {}", value_ref(&v.name), type_text(&v.ty));
                }
                let _ = write!(out, " = {}", op.kind);
                if !op.attrs.0.is_empty() {
                    out.push('[');
                    for (i, (name, attr)) in op.attrs.0.iter().enumerate() {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        let _ = write!(out, "{}={}", attr_name_text(name), attr_text(attr));
                    }
                    out.push(']');
                }
                out.push('(');
                for (i, input) in node.inputs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    match input {
                        Some(v) => out.push_str(&value_ref(&graph.value(*v).name)),
                        None => out.push('_'),
                    }
                }
                let _ = writeln!(out, ")  @{}", quote(&node.name));
            }
        }
    }
    for (name, v) in graph.outputs() {
        let _ = writeln!(
            out,
            "output {} = {}",
            name_text(name),
            value_ref(&graph.value(*v).name)
        );
    }
    out
}

/// A JSON string literal for `s`.
fn quote(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_./:-".contains(c)
}

/// `name` bare when it is non-empty, made of `[A-Za-z0-9_./:-]` and does not end in `:`;
/// quoted otherwise.
fn name_text(name: &str) -> String {
    if !name.is_empty() && name.chars().all(is_name_char) && !name.ends_with(':') {
        name.to_string()
    } else {
        quote(name)
    }
}

/// How a value is referred to: `%name` or `%"odd name"`.
fn value_ref(name: &str) -> String {
    format!("%{}", name_text(name))
}

fn attr_name_text(name: &str) -> String {
    let mut chars = name.chars();
    let ident = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident {
        name.to_string()
    } else {
        quote(name)
    }
}

/// A type as `f32[batch, seq, 64]`.
fn type_text(ty: &ValueType) -> String {
    format!("{}{}", ty.dtype, fmt_shape(&ty.shape))
}

/// Formats an f32 so that [`parse_float`] reads back the same bits: Rust's shortest
/// round-trip form (`1.0`, `1e-12`, `-0.0`, `inf`, `NaN`), or `NaN(0x7fc00001)` for a NaN
/// that is not the canonical one.
pub(crate) fn float_text(x: f32) -> String {
    if x.is_nan() && x.to_bits() != f32::NAN.to_bits() {
        format!("NaN(0x{:08x})", x.to_bits())
    } else {
        format!("{x:?}")
    }
}

/// Reads a float written by [`float_text`] (or any Rust float literal).
pub(crate) fn parse_float(s: &str) -> Option<f32> {
    if let Some(hex) = s.strip_prefix("NaN(0x").and_then(|r| r.strip_suffix(')')) {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let x = f32::from_bits(u32::from_str_radix(hex, 16).ok()?);
        return x.is_nan().then_some(x);
    }
    s.parse().ok()
}

fn attr_text(attr: &Attr) -> String {
    let list = |items: Vec<String>| items.join(", ");
    match attr {
        Attr::Int(v) => v.to_string(),
        Attr::Float(x) => float_text(*x),
        Attr::Str(s) => quote(s),
        Attr::Ints(v) => format!("[{}]", list(v.iter().map(i64::to_string).collect())),
        Attr::Floats(v) => format!(
            "floats[{}]",
            list(v.iter().map(|&x| float_text(x)).collect())
        ),
        Attr::Dims(v) => format!("dims[{}]", list(v.iter().map(Dim::to_string).collect())),
        Attr::Tensor(d) => format!("tensor {}", data_text(d)),
    }
}

/// A tensor as `f32[2] = [1.0, 2.0]` or `f32[64, 64] = base64"..."`.
fn data_text(d: &TensorData) -> String {
    let body = literal_text(d).unwrap_or_else(|| {
        format!(
            "base64\"{}\"",
            base64::engine::general_purpose::STANDARD.encode(d.bytes())
        )
    });
    format!("{}{:?} = {body}", d.dtype(), d.shape())
}

/// The elements as a literal list, if the tensor is small and every element reads back exactly.
fn literal_text(d: &TensorData) -> Option<String> {
    if d.len() > MAX_LITERAL_ELEMENTS {
        return None;
    }
    let mut items = Vec::with_capacity(d.len());
    for chunk in d.bytes().chunks_exact(d.dtype().size()) {
        let text = element_text(d.dtype(), chunk);
        if parse_element(d.dtype(), &text)? != chunk {
            return None;
        }
        items.push(text);
    }
    Some(format!("[{}]", items.join(", ")))
}

fn le<const N: usize>(chunk: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&chunk[..N]);
    a
}

/// One element (its little-endian bytes) as text.
fn element_text(dtype: DType, chunk: &[u8]) -> String {
    match dtype {
        DType::F32 => format!("{:?}", f32::from_le_bytes(le(chunk))),
        DType::F16 => format!("{:?}", f16::from_le_bytes(le(chunk)).to_f32()),
        DType::BF16 => format!("{:?}", bf16::from_le_bytes(le(chunk)).to_f32()),
        DType::I8 => i8::from_le_bytes(le(chunk)).to_string(),
        DType::U8 => chunk[0].to_string(),
        DType::I32 => i32::from_le_bytes(le(chunk)).to_string(),
        DType::I64 => i64::from_le_bytes(le(chunk)).to_string(),
        DType::Bool => match chunk[0] {
            0 => "false".into(),
            1 => "true".into(),
            b => b.to_string(),
        },
    }
}

/// The little-endian bytes of one literal element of `dtype`.
fn parse_element(dtype: DType, s: &str) -> Option<Vec<u8>> {
    Some(match dtype {
        DType::F32 => parse_float(s)?.to_le_bytes().to_vec(),
        DType::F16 => f16::from_f32(parse_float(s)?).to_le_bytes().to_vec(),
        DType::BF16 => bf16::from_f32(parse_float(s)?).to_le_bytes().to_vec(),
        DType::I8 => s.parse::<i8>().ok()?.to_le_bytes().to_vec(),
        DType::U8 => s.parse::<u8>().ok()?.to_le_bytes().to_vec(),
        DType::I32 => s.parse::<i32>().ok()?.to_le_bytes().to_vec(),
        DType::I64 => s.parse::<i64>().ok()?.to_le_bytes().to_vec(),
        DType::Bool => match s {
            "true" => vec![1],
            "false" => vec![0],
            _ => return None,
        },
    })
}

// ---------------------------------------------------------------------------------------------
// Parsing
// ---------------------------------------------------------------------------------------------

/// Parses the text form (see the module doc) into a graph, building it through
/// [`Graph::add_input`], [`Graph::add_constant`] and [`Graph::add_op`] and checking every
/// declared output type against the inferred one. The error is one line, `line N: ...`.
pub fn parse(text: &str) -> Result<Graph, String> {
    parse_from(text, None)
}

/// Parses the text form of [`print_with_weights`]: `weights[OFFSET]` data are the bytes of
/// `weights` at that offset (shared, not copied, so a memory-mapped file stays mapped).
pub fn parse_with_weights(text: &str, weights: Bytes) -> Result<Graph, String> {
    parse_from(text, Some(weights))
}

fn parse_from(text: &str, weights: Option<Bytes>) -> Result<Graph, String> {
    let mut p = Parser {
        graph: Graph::new(),
        outputs: Vec::new(),
    };
    p.run(text, weights.as_ref()).map_err(|e| one_line(&e))?;
    p.graph.set_outputs(p.outputs);
    Ok(p.graph)
}

/// Escapes line breaks so an error stays on one line whatever names it quotes.
fn one_line(e: &str) -> String {
    e.replace('\r', "\\r").replace('\n', "\\n")
}

/// Adds an op node whose outputs are named (and optionally typed) by `outputs`: rejects names
/// already defined (or repeated), and declared types (dtype and shape) that differ from the
/// inferred ones. `show` formats a value name for messages. Errors name the node.
pub(crate) fn add_checked_op(
    graph: &mut Graph,
    name: &str,
    op: Op,
    inputs: Vec<Option<ValueId>>,
    outputs: &[(String, Option<ValueType>)],
    show: fn(&str) -> String,
) -> Result<Vec<ValueId>, String> {
    let mut seen = HashSet::new();
    for (n, _) in outputs {
        if graph.value_by_name(n).is_some() || !seen.insert(n.as_str()) {
            return Err(format!("node `{name}`: value {} is defined twice", show(n)));
        }
    }
    let names: Vec<String> = outputs.iter().map(|(n, _)| n.clone()).collect();
    let ids = graph.add_op(name, op, inputs, &names)?;
    for (id, (n, declared)) in ids.iter().zip(outputs) {
        let got = &graph.value(*id).ty;
        if let Some(d) = declared {
            if d.dtype != got.dtype || d.shape != got.shape {
                return Err(format!(
                    "node `{name}`: value {} is declared {} but inferred {}",
                    show(n),
                    type_text(d),
                    type_text(got)
                ));
            }
        }
    }
    Ok(ids)
}

struct Parser {
    graph: Graph,
    outputs: Vec<(String, ValueId)>,
}

fn show_value(name: &str) -> String {
    format!("`{}`", value_ref(name))
}

impl Parser {
    fn run(&mut self, text: &str, weights: Option<&Bytes>) -> Res<()> {
        let weights = weights.map(|bytes| WeightsInUse {
            bytes,
            ranges: RefCell::default(),
        });
        let weights = weights.as_ref();
        let mut header = false;
        for (i, line) in text.lines().enumerate() {
            let mut c = Cursor {
                line: i + 1,
                s: line,
                pos: 0,
                weights,
            };
            if c.at_end() {
                continue;
            }
            if header {
                self.statement(&mut c)?;
                continue;
            }
            let ok = HEADER.split(' ').all(|w| {
                c.skip_ws();
                c.ident() == w
            }) && c.at_end();
            if !ok {
                c.pos = 0;
                return Err(c.expected(&format!("`{HEADER}`")));
            }
            header = true;
        }
        if !header {
            return Err(format!("line 1: expected `{HEADER}`, found end of input"));
        }
        Ok(())
    }

    fn lookup(&self, c: &Cursor, name: &str) -> Res<ValueId> {
        self.graph
            .value_by_name(name)
            .ok_or_else(|| c.err(format!("value {} is not defined", show_value(name))))
    }

    fn check_new(&self, c: &Cursor, name: &str) -> Res<()> {
        match self.graph.value_by_name(name) {
            Some(_) => Err(c.err(format!("value {} is defined twice", show_value(name)))),
            None => Ok(()),
        }
    }

    fn statement(&mut self, c: &mut Cursor) -> Res<()> {
        if matches!(c.peek(), Some('%' | '(')) {
            return self.node(c);
        }
        let start = c.pos;
        match c.ident() {
            "input" => {
                let name = c.value_name()?;
                c.expect(':')?;
                let ty = c.ty()?;
                c.end()?;
                self.check_new(c, &name)?;
                self.graph
                    .add_input(&name, ty.dtype, ty.shape)
                    .map_err(|e| c.err(e))?;
            }
            "const" => {
                let name = c.value_name()?;
                c.expect(':')?;
                let (dtype, shape) = c.concrete_ty()?;
                c.expect('=')?;
                let data = c.data(dtype, shape)?;
                c.end()?;
                self.check_new(c, &name)?;
                self.graph.add_constant(&name, data).map_err(|e| c.err(e))?;
            }
            "output" => {
                let name = c.name("an output name")?;
                c.expect('=')?;
                let value = c.value_name()?;
                c.end()?;
                let id = self.lookup(c, &value)?;
                self.outputs.push((name, id));
            }
            _ => {
                c.pos = start;
                return Err(
                    c.expected("a statement (`input`, `const`, `output` or `%value = Op(...)`)")
                );
            }
        }
        Ok(())
    }

    fn node(&mut self, c: &mut Cursor) -> Res<()> {
        let mut outs: Vec<(String, Option<ValueType>)> = Vec::new();
        if c.eat('(') {
            c.expect(')')?;
        } else {
            loop {
                let name = c.value_name()?;
                let ty = if c.eat(':') { Some(c.ty()?) } else { None };
                outs.push((name, ty));
                if !c.eat(',') {
                    break;
                }
            }
        }
        c.expect('=')?;
        c.skip_ws();
        let start = c.pos;
        let word = c.ident();
        let kind: OpKind = match word.parse() {
            Ok(k) => k,
            Err(_) if word.is_empty() => return Err(c.expected("an op name")),
            Err(_) => {
                c.pos = start;
                return Err(c.err(format!("unknown op `{word}`")));
            }
        };
        let mut attrs = Attrs::default();
        if c.eat('[') {
            let items = c.list(']', |c| {
                let name = c.attr_name()?;
                c.expect('=')?;
                let value = c.attr_value()?;
                Ok((name, value))
            })?;
            for (name, value) in items {
                if attrs.0.insert(name.clone(), value).is_some() {
                    return Err(c.err(format!("attribute `{name}` is given twice")));
                }
            }
        }
        c.expect('(')?;
        let args = c.list(')', |c| {
            if c.eat('_') {
                Ok(None)
            } else {
                c.value_name().map(Some)
            }
        })?;
        let node_name = if c.eat('@') {
            c.string()?
        } else {
            outs.first().map(|o| o.0.clone()).unwrap_or_default()
        };
        c.end()?;
        let mut inputs = Vec::with_capacity(args.len());
        for arg in &args {
            inputs.push(match arg {
                Some(name) => Some(self.graph.value_by_name(name).ok_or_else(|| {
                    c.err(format!(
                        "node `{node_name}`: value {} is not defined",
                        show_value(name)
                    ))
                })?),
                None => None,
            });
        }
        add_checked_op(
            &mut self.graph,
            &node_name,
            Op::new(kind, attrs),
            inputs,
            &outs,
            show_value,
        )
        .map_err(|e| c.err(e))?;
        Ok(())
    }
}

/// A position in one line of the text.
struct Cursor<'a> {
    line: usize,
    s: &'a str,
    pos: usize,
    /// The weights blob that `weights[OFFSET]` data refer to, if any.
    weights: Option<&'a WeightsInUse<'a>>,
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_.+-".contains(c)
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    /// The next character after whitespace; `None` at the end of the line or a comment.
    fn peek(&mut self) -> Option<char> {
        self.skip_ws();
        self.rest().chars().next().filter(|&c| c != '#')
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, c: char) -> Res<()> {
        if self.eat(c) {
            Ok(())
        } else {
            Err(self.expected(&format!("`{c}`")))
        }
    }

    fn at_end(&mut self) -> bool {
        self.peek().is_none()
    }

    fn end(&mut self) -> Res<()> {
        if self.at_end() {
            Ok(())
        } else {
            Err(self.expected("end of line"))
        }
    }

    fn err(&self, msg: impl std::fmt::Display) -> String {
        format!("line {}: {msg}", self.line)
    }

    /// `line N: expected {what}, found {the text at the cursor}`.
    fn expected(&mut self, what: &str) -> String {
        let found = match self.peek() {
            None => "end of line".to_string(),
            Some(_) => {
                let r = self.rest();
                let tok: String = r
                    .chars()
                    .take_while(|c| !c.is_whitespace())
                    .take(24)
                    .collect();
                let more = tok.len() < r.len() && !r[tok.len()..].starts_with(char::is_whitespace);
                let shown: String = tok
                    .chars()
                    .map(|c| {
                        if c.is_control() {
                            c.escape_default().to_string()
                        } else {
                            c.to_string()
                        }
                    })
                    .collect();
                format!("`{shown}`{}", if more { "..." } else { "" })
            }
        };
        self.err(format!("expected {what}, found {found}"))
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let r = self.rest();
        let n = r.find(|c| !f(c)).unwrap_or(r.len());
        self.pos += n;
        &r[..n]
    }

    /// `[A-Za-z0-9_]*` (keywords, op kinds, dtypes).
    fn ident(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphanumeric() || c == '_')
    }

    /// A number-like word, including `NaN(0x...)`.
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let start = self.pos;
        self.take_while(is_word_char);
        if &self.s[start..self.pos] == "NaN" && self.rest().starts_with('(') {
            if let Some(i) = self.rest().find(')') {
                self.pos += i + 1;
            }
        }
        &self.s[start..self.pos]
    }

    /// Items separated by `,` up to `close` (the opening bracket is already consumed).
    fn list<T>(&mut self, close: char, mut item: impl FnMut(&mut Self) -> Res<T>) -> Res<Vec<T>> {
        let mut out = Vec::new();
        if self.eat(close) {
            return Ok(out);
        }
        loop {
            out.push(item(self)?);
            if self.eat(',') {
                continue;
            }
            if self.eat(close) {
                return Ok(out);
            }
            return Err(self.expected(&format!("`,` or `{close}`")));
        }
    }

    /// A JSON string literal, returned with its quotes and escapes.
    fn raw_string(&mut self) -> Res<&'a str> {
        if self.peek() != Some('"') {
            return Err(self.expected("a string"));
        }
        let r = self.rest();
        let b = r.as_bytes();
        let mut i = 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => {
                    self.pos += i + 1;
                    return Ok(&r[..=i]);
                }
                _ => i += 1,
            }
        }
        Err(self.err("expected `\"` closing the string, found end of line"))
    }

    fn string(&mut self) -> Res<String> {
        let start = self.pos;
        let raw = self.raw_string()?;
        serde_json::from_str(raw).map_err(|_| {
            self.pos = start;
            self.expected("a valid string literal")
        })
    }

    /// A bare or quoted name.
    fn name(&mut self, what: &str) -> Res<String> {
        if self.peek() == Some('"') {
            return self.string();
        }
        let r = self.rest();
        let n = r.find(|c| !is_name_char(c)).unwrap_or(r.len());
        let n = r[..n].trim_end_matches(':').len();
        if n == 0 {
            return Err(self.expected(what));
        }
        self.pos += n;
        Ok(r[..n].to_string())
    }

    fn value_name(&mut self) -> Res<String> {
        if !self.eat('%') {
            return Err(self.expected("a value (`%name`)"));
        }
        self.name("a value name")
    }

    fn attr_name(&mut self) -> Res<String> {
        if self.peek() == Some('"') {
            return self.string();
        }
        match self.ident() {
            "" => Err(self.expected("an attribute name")),
            name => Ok(name.to_string()),
        }
    }

    /// `[dim, ...]`.
    fn dims(&mut self) -> Res<Vec<Dim>> {
        self.expect('[')?;
        self.list(']', |c| {
            c.skip_ws();
            let r = c.rest();
            let mut depth = 0i32;
            let mut end = r.len();
            for (i, ch) in r.char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => depth -= 1,
                    ',' | ']' if depth <= 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            let text = r[..end].trim_end();
            if text.is_empty() {
                return Err(c.expected("a dim"));
            }
            let dim = parse_dim(text)
                .map_err(|e| c.err(format!("expected a dim, found `{text}` ({e})")))?;
            c.pos += end;
            Ok(dim)
        })
    }

    fn dtype(&mut self) -> Res<DType> {
        self.skip_ws();
        let start = self.pos;
        match self.ident().parse() {
            Ok(d) => Ok(d),
            Err(_) => {
                self.pos = start;
                Err(self.expected("a dtype (f32, f16, bf16, i8, u8, i32, i64 or bool)"))
            }
        }
    }

    fn ty(&mut self) -> Res<ValueType> {
        let dtype = self.dtype()?;
        Ok(ValueType::new(dtype, self.dims()?))
    }

    /// A type whose dims are all non-negative integers.
    fn concrete_ty(&mut self) -> Res<(DType, Vec<usize>)> {
        let ty = self.ty()?;
        let shape = ty
            .shape
            .iter()
            .map(|d| {
                d.as_known()
                    .and_then(|v| usize::try_from(v).ok())
                    .ok_or_else(|| {
                        self.err(format!("expected a non-negative integer dim, found `{d}`"))
                    })
            })
            .collect::<Res<Vec<usize>>>()?;
        Ok((ty.dtype, shape))
    }

    /// Tensor data: `[elem, ...]`, `base64"..."` or `weights[OFFSET]`.
    fn data(&mut self, dtype: DType, shape: Vec<usize>) -> Res<TensorData> {
        let count = element_count(&shape)
            .ok_or_else(|| self.err(format!("shape {shape:?} is too large")))?;
        if self.eat('[') {
            let mut bytes = Vec::new();
            let items = self.list(']', |c| {
                let start = c.pos;
                let word = c.word();
                match parse_element(dtype, word) {
                    Some(b) => {
                        bytes.extend_from_slice(&b);
                        Ok(())
                    }
                    None => {
                        c.pos = start;
                        Err(c.expected(&format!("a {dtype} element")))
                    }
                }
            })?;
            if items.len() != count {
                return Err(self.err(format!(
                    "expected {count} elements for {dtype}{shape:?}, found {}",
                    items.len()
                )));
            }
            return TensorData::new(dtype, shape, Bytes::from(bytes)).map_err(|e| self.err(e));
        }
        self.skip_ws();
        let start = self.pos;
        let word = self.ident();
        if word == "weights" && self.rest().starts_with('[') {
            return self.weights_data(dtype, shape, count);
        }
        if word != "base64" || !self.rest().starts_with('"') {
            self.pos = start;
            return Err(self.expected("`[` or `base64\"...\"`"));
        }
        let raw = self.raw_string()?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&raw[1..raw.len() - 1])
            .map_err(|e| self.err(format!("expected base64 data, found invalid base64 ({e})")))?;
        TensorData::new(dtype, shape, Bytes::from(bytes)).map_err(|e| self.err(e))
    }

    /// `[OFFSET]` after `weights`: `count` elements of the weights blob from that offset.
    fn weights_data(&mut self, dtype: DType, shape: Vec<usize>, count: usize) -> Res<TensorData> {
        self.expect('[')?;
        let start = self.pos;
        let offset: usize = self.word().parse().map_err(|_| {
            self.pos = start;
            self.expected("a byte offset")
        })?;
        self.expect(']')?;
        let Some(weights) = self.weights else {
            return Err(self.err("`weights[...]` data, but no weights file was given"));
        };
        let end = count
            .checked_mul(dtype.size())
            .and_then(|n| n.checked_add(offset))
            .filter(|&end| end <= weights.bytes.len())
            .ok_or_else(|| {
                self.err(format!(
                    "{dtype}{shape:?} at byte {offset} runs past the end of the weights ({} bytes)",
                    weights.bytes.len()
                ))
            })?;
        if !offset.is_multiple_of(WEIGHTS_ALIGN) {
            return Err(self.err(format!(
                "{dtype}{shape:?} at byte {offset}: the offset is not a multiple of {WEIGHTS_ALIGN}"
            )));
        }
        if end > offset {
            let mut ranges = weights.ranges.borrow_mut();
            let before = ranges.range(..=offset).next_back();
            let after = ranges.range(offset..end).next();
            for (&start, &(stop, line)) in before.into_iter().chain(after) {
                let same = start == offset && stop == end;
                if !same && start < end && offset < stop {
                    return Err(self.err(format!(
                        "{dtype}{shape:?} at bytes {offset}..{end} overlaps the weights of line \
                         {line} (bytes {start}..{stop})"
                    )));
                }
            }
            ranges.insert(offset, (end, self.line));
        }
        TensorData::new(dtype, shape, weights.bytes.slice(offset..end)).map_err(|e| self.err(e))
    }

    fn attr_value(&mut self) -> Res<Attr> {
        match self.peek() {
            Some('"') => return Ok(Attr::Str(self.string()?)),
            Some('[') => {
                self.pos += 1;
                return Ok(Attr::Ints(self.list(']', |c| {
                    let start = c.pos;
                    c.word().parse().map_err(|_| {
                        c.pos = start;
                        c.expected("an integer")
                    })
                })?));
            }
            _ => {}
        }
        let start = self.pos;
        let word = self.word();
        match word {
            "floats" if self.eat('[') => Ok(Attr::Floats(self.list(']', |c| {
                let start = c.pos;
                parse_float(c.word()).ok_or_else(|| {
                    c.pos = start;
                    c.expected("a float")
                })
            })?)),
            "dims" if self.peek() == Some('[') => Ok(Attr::Dims(self.dims()?)),
            "tensor" => {
                let (dtype, shape) = self.concrete_ty()?;
                self.expect('=')?;
                Ok(Attr::Tensor(self.data(dtype, shape)?))
            }
            _ => {
                let parsed = if looks_like_float(word) {
                    parse_float(word).map(Attr::Float)
                } else {
                    word.parse().ok().map(Attr::Int)
                };
                parsed.ok_or_else(|| {
                    self.pos = start;
                    self.expected("an attribute value (int, float, string, [ints], floats[...], dims[...] or tensor)")
                })
            }
        }
    }
}

/// True if a numeric word is a float rather than an int: it has a `.` or an exponent, or is
/// an infinity or NaN.
fn looks_like_float(word: &str) -> bool {
    let w = word.trim_start_matches(['-', '+']).to_ascii_lowercase();
    w.contains(['.', 'e']) || w.starts_with("inf") || w.starts_with("nan")
}

/// Parses a dim expression with [`Dim::from_str`](std::str::FromStr), after checking that it
/// cannot overflow `Dim`'s `i64` arithmetic, nest too deeply or expand into too many terms.
fn parse_dim(text: &str) -> Res<Dim> {
    dim_guard::check(text)?;
    text.parse()
}

/// A mirror of `Dim`'s expression parser that only tracks bounds: for each subexpression, the
/// sum of its coefficients' magnitudes (bounds every coefficient and every partial sum `Dim`
/// computes), its number of terms and its degree.
mod dim_guard {
    const MAX_COEF: u128 = i64::MAX as u128;
    const MAX_TERMS: u128 = 4096;
    const MAX_DEGREE: u128 = 64;
    const MAX_DEPTH: usize = 32;

    #[derive(Clone, Copy)]
    struct Bound {
        coef: u128,
        terms: u128,
        degree: u128,
    }

    enum Stop {
        /// Not an expression: `Dim`'s parser stops here too, after the same (checked) arithmetic.
        Syntax,
        TooLarge(&'static str),
    }

    pub(super) fn check(s: &str) -> Result<(), String> {
        let tokens = tokenize(s);
        let mut pos = 0;
        match expr(&tokens, &mut pos, 0) {
            Err(Stop::TooLarge(why)) => Err(format!("dim `{s}` is too large ({why})")),
            _ => Ok(()),
        }
    }

    /// The tokens of `Dim`'s tokenizer, up to the first character it rejects.
    fn tokenize(s: &str) -> Vec<String> {
        let chars: Vec<char> = s.chars().collect();
        let mut out = Vec::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c.is_whitespace() {
                i += 1;
            } else if "+-*()".contains(c) {
                out.push(c.to_string());
                i += 1;
            } else if c.is_ascii_alphanumeric() || c == '_' || c == '?' {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || "_.?".contains(chars[i]))
                {
                    i += 1;
                }
                out.push(chars[start..i].iter().collect());
            } else {
                break;
            }
        }
        out
    }

    fn limit(b: Bound) -> Result<Bound, Stop> {
        if b.coef > MAX_COEF {
            Err(Stop::TooLarge("coefficient overflow"))
        } else if b.terms > MAX_TERMS {
            Err(Stop::TooLarge("too many terms"))
        } else if b.degree > MAX_DEGREE {
            Err(Stop::TooLarge("degree too high"))
        } else {
            Ok(b)
        }
    }

    fn add(a: Bound, b: Bound) -> Result<Bound, Stop> {
        limit(Bound {
            coef: a.coef.saturating_add(b.coef),
            terms: a.terms.saturating_add(b.terms),
            degree: a.degree.max(b.degree),
        })
    }

    fn expr(t: &[String], pos: &mut usize, depth: usize) -> Result<Bound, Stop> {
        let mut acc = if t.get(*pos).map(String::as_str) == Some("-") {
            *pos += 1;
            let zero = Bound {
                coef: 0,
                terms: 0,
                degree: 0,
            };
            add(zero, term(t, pos, depth)?)?
        } else {
            term(t, pos, depth)?
        };
        while let Some("+" | "-") = t.get(*pos).map(String::as_str) {
            *pos += 1;
            acc = add(acc, term(t, pos, depth)?)?;
        }
        Ok(acc)
    }

    fn term(t: &[String], pos: &mut usize, depth: usize) -> Result<Bound, Stop> {
        let mut acc = factor(t, pos, depth)?;
        while t.get(*pos).map(String::as_str) == Some("*") {
            *pos += 1;
            let f = factor(t, pos, depth)?;
            acc = limit(Bound {
                coef: acc.coef.saturating_mul(f.coef),
                terms: acc.terms.saturating_mul(f.terms),
                degree: acc.degree.saturating_add(f.degree),
            })?;
        }
        Ok(acc)
    }

    fn factor(t: &[String], pos: &mut usize, depth: usize) -> Result<Bound, Stop> {
        let tok = t.get(*pos).ok_or(Stop::Syntax)?;
        *pos += 1;
        if tok == "(" {
            if depth >= MAX_DEPTH {
                return Err(Stop::TooLarge("nested too deeply"));
            }
            let b = expr(t, pos, depth + 1)?;
            if t.get(*pos).map(String::as_str) != Some(")") {
                return Err(Stop::Syntax);
            }
            *pos += 1;
            Ok(b)
        } else if tok.starts_with(|c: char| c.is_ascii_digit()) {
            let v: i64 = tok.parse().map_err(|_| Stop::Syntax)?;
            limit(Bound {
                coef: v.unsigned_abs() as u128,
                terms: 1,
                degree: 0,
            })
        } else if tok.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_' || c == '?') {
            Ok(Bound {
                coef: 1,
                terms: 1,
                degree: 1,
            })
        } else {
            Err(Stop::Syntax)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::graph::Node;
    use crate::Tensor;
    use std::collections::HashMap;

    fn sym(s: &str) -> Dim {
        Dim::sym(s)
    }

    fn k(v: i64) -> Dim {
        Dim::known(v)
    }

    fn f32_data(shape: &[usize], v: Vec<f32>) -> TensorData {
        Tensor::from_vec(shape, v).unwrap().to_data()
    }

    fn attrs(list: Vec<(&str, Attr)>) -> Attrs {
        Attrs(list.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// A deterministic xorshift generator, for test data and fuzzing.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn unit(&mut self) -> f32 {
            (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        }
    }

    /// A graph exercising every attribute kind, multi-output and output-less nodes, absent
    /// optional inputs, odd names, symbolic dims, every dtype of constant (literal and base64)
    /// and special floats.
    pub(crate) fn sample_graph() -> Graph {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut g = Graph::new();
        let x = g
            .add_input("x", DType::F32, vec![sym("batch"), sym("seq"), k(8)])
            .unwrap();
        g.add_input("input ids", DType::I64, vec![sym("batch"), sym("seq")])
            .unwrap();
        g.add_input(
            "odd:dims",
            DType::F32,
            vec![Dim::unknown(), "2*seq+1".parse().unwrap(), k(0)],
        )
        .unwrap();
        let w = g
            .add_constant(
                "onnx::MatMul_12",
                f32_data(&[8, 8], (0..64).map(|_| rng.unit()).collect()),
            )
            .unwrap();
        let gamma = g
            .add_constant(
                "ln.weight",
                f32_data(&[8], vec![1.0, 0.5, -2.0, 1e-3, 3.25, 1.0, 0.75, 2.0]),
            )
            .unwrap();
        let specials = vec![
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -0.0,
            1e-12,
            f32::MIN_POSITIVE / 8.0,
        ];
        g.add_constant("weird \"name\"\n#1", f32_data(&[2, 3], specials))
            .unwrap();
        g.add_constant(
            "nan-payload",
            f32_data(&[2], vec![f32::from_bits(0x7fc0_0001), 1.0]),
        )
        .unwrap();
        let halves = [1.0f32, 65504.0, -0.0, 1e-7].map(f16::from_f32);
        g.add_constant(
            "h:",
            Tensor::from_vec(&[4], halves.to_vec()).unwrap().to_data(),
        )
        .unwrap();
        let bhalves = [1.0f32, -3.0e38, 0.1].map(bf16::from_f32);
        g.add_constant(
            "",
            Tensor::from_vec(&[3], bhalves.to_vec()).unwrap().to_data(),
        )
        .unwrap();
        g.add_constant(
            "mask",
            Tensor::from_vec(&[2, 2], vec![true, false, false, true])
                .unwrap()
                .to_data(),
        )
        .unwrap();
        g.add_constant(
            "q8",
            Tensor::from_vec(&[3], vec![-128i8, 0, 127])
                .unwrap()
                .to_data(),
        )
        .unwrap();
        g.add_constant(
            "u8",
            Tensor::from_vec(&[2], vec![0u8, 255]).unwrap().to_data(),
        )
        .unwrap();
        g.add_constant(
            "empty",
            Tensor::from_vec(&[0, 3], Vec::<i32>::new())
                .unwrap()
                .to_data(),
        )
        .unwrap();
        g.add_constant("scalar", Tensor::scalar(i64::MIN).to_data())
            .unwrap();
        let big_i64: Vec<i64> = (0..20).map(|i| i * 1_000_000_007 - 3).collect();
        g.add_constant(
            "big_ints",
            Tensor::from_vec(&[4, 5], big_i64).unwrap().to_data(),
        )
        .unwrap();
        let not_bool = TensorData::new(DType::Bool, vec![2], Bytes::from(vec![1u8, 2])).unwrap();
        g.add_constant("not_bool", not_bool).unwrap();

        let mm = g
            .add_op(
                "/layer0/MatMul",
                Op::plain(OpKind::MatMul),
                vec![Some(x), Some(w)],
                &["/model/MatMul_output_0".into()],
            )
            .unwrap()[0];
        let ln_attrs = attrs(vec![
            ("axis", Attr::Int(-1)),
            ("epsilon", Attr::Float(1e-12)),
        ]);
        let ln = g
            .add_op(
                "ln",
                Op::new(OpKind::LayerNormalization, ln_attrs),
                vec![Some(mm), Some(gamma), None],
                &["ln out".into()],
            )
            .unwrap()[0];
        let split_attrs = attrs(vec![
            ("axis", Attr::Int(2)),
            ("split", Attr::Ints(vec![3, 5])),
        ]);
        let parts = g
            .add_op(
                "split_0",
                Op::new(OpKind::Split, split_attrs),
                vec![Some(ln)],
                &["a".into(), "b:c".into()],
            )
            .unwrap();
        let gelu_attrs = attrs(vec![("approximate", Attr::Str("tanh".into()))]);
        let gelu = g
            .add_op(
                "",
                Op::new(OpKind::Gelu, gelu_attrs),
                vec![Some(parts[0])],
                &["gelu".into()],
            )
            .unwrap()[0];
        let dims = vec![sym("batch"), "4*seq-1".parse().unwrap(), k(2)];
        let d = g
            .add_op(
                "dims",
                Op::new(
                    OpKind::SymbolicDims,
                    attrs(vec![("dims", Attr::Dims(dims))]),
                ),
                vec![],
                &["d".into()],
            )
            .unwrap()[0];
        let fill = attrs(vec![("value", Attr::Tensor(f32_data(&[1], vec![0.5])))]);
        let filled = g
            .add_op(
                "fill",
                Op::new(OpKind::ConstantOfShape, fill),
                vec![Some(d)],
                &["filled".into()],
            )
            .unwrap()[0];
        let big_tensor = f32_data(&[17], (0..17).map(|i| i as f32 * 0.25).collect());
        let extra = attrs(vec![
            ("f_nan", Attr::Float(f32::NAN)),
            ("f_payload", Attr::Float(f32::from_bits(0xffc0_1234))),
            ("f_inf", Attr::Float(f32::NEG_INFINITY)),
            ("f_neg0", Attr::Float(-0.0)),
            ("f_big", Attr::Float(1e20)),
            ("f_one", Attr::Float(1.0)),
            (
                "floats",
                Attr::Floats(vec![1.0, 2.5, f32::NAN, f32::INFINITY, -0.0, 1e-45]),
            ),
            ("no_floats", Attr::Floats(vec![])),
            ("no_ints", Attr::Ints(vec![])),
            ("ints", Attr::Ints(vec![i64::MIN, -1, 0, i64::MAX])),
            ("no_dims", Attr::Dims(vec![])),
            ("str", Attr::Str("a \"b\" \\ c\n\t# é ✓".into())),
            ("empty_str", Attr::Str(String::new())),
            ("big_tensor", Attr::Tensor(big_tensor)),
            ("odd attr-name", Attr::Int(7)),
        ]);
        let ident = g
            .add_op(
                "identity\n\"x\"",
                Op::new(OpKind::Identity, extra),
                vec![Some(parts[1])],
                &["with space".into()],
            )
            .unwrap()[0];
        // A node without outputs, and one whose result nobody uses.
        g.add_op("sink", Op::plain(OpKind::Identity), vec![Some(gelu)], &[])
            .unwrap();
        g.add_op(
            "unused",
            Op::plain(OpKind::Neg),
            vec![Some(gelu)],
            &["neg".into()],
        )
        .unwrap();
        let weird = g.value_by_name("weird \"name\"\n#1").unwrap();
        g.set_outputs(vec![
            ("out".into(), gelu),
            ("with space".into(), ident),
            ("ln".into(), ln),
            ("weird: \"out\"".into(), weird),
            ("filled".into(), filled),
            ("out".into(), gelu),
        ]);
        g
    }

    fn attr_eq(a: &Attr, b: &Attr) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        match (a, b) {
            (Attr::Float(x), Attr::Float(y)) => x.to_bits() == y.to_bits(),
            (Attr::Floats(x), Attr::Floats(y)) => bits(x) == bits(y),
            _ => a == b,
        }
    }

    fn input_names(g: &Graph, n: &Node) -> Vec<Option<String>> {
        n.inputs
            .iter()
            .map(|i| i.map(|v| g.value(v).name.clone()))
            .collect()
    }

    /// Asserts that two graphs are identical: same nodes in the same topological order with
    /// the same names, kinds, attributes (floats compared bitwise), constant bytes, inputs,
    /// output values and types (including the symbolic values), graph inputs and outputs.
    pub(crate) fn assert_same_graph(a: &Graph, b: &Graph) {
        let (oa, ob) = (a.topo_order(), b.topo_order());
        assert_eq!(oa.len(), ob.len(), "node count");
        for (&na, &nb) in oa.iter().zip(&ob) {
            let (x, y) = (a.node(na), b.node(nb));
            assert_eq!(x.name, y.name);
            match (&x.kind, &y.kind) {
                (NodeKind::Input, NodeKind::Input) => {}
                (NodeKind::Constant(p), NodeKind::Constant(q)) => {
                    assert_eq!(p, q, "constant {}", x.name)
                }
                (NodeKind::Op(p), NodeKind::Op(q)) => {
                    assert_eq!(p.kind, q.kind);
                    assert_eq!(
                        p.attrs.0.keys().collect::<Vec<_>>(),
                        q.attrs.0.keys().collect::<Vec<_>>()
                    );
                    for (name, v) in &p.attrs.0 {
                        assert!(
                            attr_eq(v, &q.attrs.0[name]),
                            "attribute {name} of {}: {v:?}",
                            x.name
                        );
                    }
                }
                (p, q) => panic!("node {}: {p:?} vs {q:?}", x.name),
            }
            assert_eq!(input_names(a, x), input_names(b, y), "inputs of {}", x.name);
            assert_eq!(x.outputs, y.outputs, "outputs of {}", x.name);
        }
        let names = |g: &Graph| {
            g.inputs()
                .map(|v| g.value(v).name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(a), names(b));
        let outs = |g: &Graph| {
            g.outputs()
                .iter()
                .map(|(n, v)| (n.clone(), g.value(*v).name.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(outs(a), outs(b));
    }

    /// Runs both graphs on the same feeds and asserts bit-identical outputs.
    pub(crate) fn assert_same_results(a: &Graph, b: &Graph) {
        let mut rng = Rng(7);
        let x: Vec<f32> = (0..2 * 3 * 8).map(|_| rng.unit() * 4.0).collect();
        let feeds = HashMap::from([
            ("x".to_string(), Tensor::from_vec(&[2, 3, 8], x).unwrap()),
            (
                "input ids".to_string(),
                Tensor::from_vec(&[2, 3], vec![1i64, 2, 3, 4, 5, 6]).unwrap(),
            ),
            (
                "odd:dims".to_string(),
                Tensor::zeros(DType::F32, &[5, 7, 0]),
            ),
        ]);
        let ra = crate::interp::run(a, &feeds).unwrap();
        let rb = crate::interp::run(b, &feeds).unwrap();
        assert_eq!(ra.len(), 6);
        assert_eq!(ra.len(), rb.len());
        for ((na, ta), (nb, tb)) in ra.iter().zip(&rb) {
            assert_eq!(na, nb);
            assert_eq!(ta.to_data(), tb.to_data(), "output {na}");
        }
        let filled = &ra[4].1;
        assert_eq!(filled.shape(), &[2, 11, 2]);
    }

    #[test]
    fn round_trips_exactly() {
        let g = sample_graph();
        let text = print(&g);
        let parsed = parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(print(&parsed), text);
        assert_same_graph(&g, &parsed);
        assert_same_results(&g, &parsed);
    }

    #[test]
    fn round_trips_with_a_weights_file() {
        let g = sample_graph();
        let mut blob = WeightsBlob::default();
        let text = print_with_weights(&g, &mut blob);
        assert_eq!(
            print_with_weights(&g, &mut blob),
            text,
            "a second graph with the same constants reuses their bytes"
        );
        let weights = blob.bytes().to_vec();
        assert!(text.contains("= weights["), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("const") && l.contains("base64")),
            "large constants move to the weights: {text}"
        );
        let parsed = parse_with_weights(&text, Bytes::from(weights.clone())).unwrap();
        assert_eq!(print(&parsed), print(&g));
        assert_same_graph(&g, &parsed);
        let line = text.lines().find(|l| l.contains("= weights[")).unwrap();
        let (dims, offset) = line.split_once("= weights[").unwrap();
        assert_eq!(
            parse(&format!("{HEADER}\n{line}")).unwrap_err(),
            "line 2: `weights[...]` data, but no weights file was given"
        );
        let truncated = Bytes::from(weights[..weights.len() - 1].to_vec());
        let last = text.lines().rfind(|l| l.contains("= weights[")).unwrap();
        let err = parse_with_weights(&format!("{HEADER}\n{last}"), truncated).unwrap_err();
        assert!(err.contains("runs past the end of the weights"), "{err}");
        assert!(offset.ends_with(']'));
        let past = format!("{HEADER}\n{dims}= weights[{}]", weights.len());
        let err = parse_with_weights(&past, Bytes::from(weights)).unwrap_err();
        assert!(
            err.starts_with("line 2: ") && err.contains("runs past the end of the weights"),
            "{err}"
        );
    }

    #[test]
    fn weights_offsets_must_be_aligned_and_must_not_overlap() {
        let weights = Bytes::from(vec![0u8; 256]);
        let parse_consts = |lines: &[&str]| {
            parse_with_weights(&format!("{HEADER}\n{}", lines.join("\n")), weights.clone())
        };
        // Two tensors at the same offset with the same length share bytes (stored once).
        parse_consts(&[
            "const %a: f32[16] = weights[64]",
            "const %b: f32[16] = weights[64]",
            "const %c: f32[16] = weights[0]",
        ])
        .unwrap();
        let err = parse_consts(&["const %a: f32[16] = weights[4]"]).unwrap_err();
        assert_eq!(
            err,
            "line 2: f32[16] at byte 4: the offset is not a multiple of 64"
        );
        for (a, b) in [("weights[0]", "weights[64]"), ("weights[64]", "weights[0]")] {
            let err = parse_consts(&[
                &format!("const %a: f32[32] = {a}"),
                &format!("const %b: f32[32] = {b}"),
            ])
            .unwrap_err();
            assert!(
                err.starts_with("line 3: ") && err.contains("overlaps the weights of line 2"),
                "{err}"
            );
        }
        let err = parse_consts(&[
            "const %a: f32[16] = weights[64]",
            "const %b: f32[8] = weights[64]",
        ])
        .unwrap_err();
        assert!(
            err.contains("overlaps the weights of line 2 (bytes 64..128)"),
            "{err}"
        );
    }

    #[test]
    fn prints_readable_lines() {
        let text = print(&sample_graph());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "kiln graph v1");
        assert_eq!(lines[1], "input %x: f32[batch, seq, 8]");
        assert_eq!(lines[2], r#"input %"input ids": i64[batch, seq]"#);
        assert_eq!(lines[3], "input %odd:dims: f32[?, 2*seq+1, 0]");
        for want in [
            "const %ln.weight: f32[8] = [1.0, 0.5, -2.0, 0.001, 3.25, 1.0, 0.75, 2.0]",
            r#"const %"weird \"name\"\n#1": f32[2, 3] = [NaN, inf, -inf, -0.0, 1e-12, 1.469368e-39]"#,
            r#"const %"h:": f16[4] = [1.0, 65504.0, -0.0, 1.1920929e-7]"#,
            r#"const %"": bf16[3] = [1.0, -3.0040553e38, 0.100097656]"#,
            "const %mask: bool[2, 2] = [true, false, false, true]",
            "const %q8: i8[3] = [-128, 0, 127]",
            "const %u8: u8[2] = [0, 255]",
            "const %empty: i32[0, 3] = []",
            "const %scalar: i64[] = [-9223372036854775808]",
            "const %not_bool: bool[2] = base64\"AQI=\"",
            "const %nan-payload: f32[2] = base64\"AQDAfwAAgD8=\"",
            "%/model/MatMul_output_0: f32[batch, seq, 8] = MatMul(%x, %onnx::MatMul_12)  @\"/layer0/MatMul\"",
            "%\"ln out\": f32[batch, seq, 8] = LayerNormalization[axis=-1, epsilon=1e-12](%/model/MatMul_output_0, %ln.weight, _)  @\"ln\"",
            "%a: f32[batch, seq, 3], %b:c: f32[batch, seq, 5] = Split[axis=2, split=[3, 5]](%\"ln out\")  @\"split_0\"",
            "%gelu: f32[batch, seq, 3] = Gelu[approximate=\"tanh\"](%a)  @\"\"",
            "%d: i64[3] = SymbolicDims[dims=dims[batch, 4*seq-1, 2]]()  @\"dims\"",
            "%filled: f32[batch, 4*seq-1, 2] = ConstantOfShape[value=tensor f32[1] = [0.5]](%d)  @\"fill\"",
            "() = Identity(%gelu)  @\"sink\"",
            "output \"weird: \\\"out\\\"\" = %\"weird \\\"name\\\"\\n#1\"",
            "output out = %gelu",
        ] {
            assert!(lines.contains(&want), "missing line {want}\n{text}");
        }
        let ident = lines.iter().find(|l| l.contains("= Identity[")).unwrap();
        for want in [
            "f_nan=NaN",
            "f_payload=NaN(0xffc01234)",
            "f_inf=-inf",
            "f_neg0=-0.0",
            "f_big=1e20",
            "f_one=1.0",
            "floats=floats[1.0, 2.5, NaN, inf, -0.0, 1e-45]",
            "no_floats=floats[]",
            "no_ints=[]",
            "ints=[-9223372036854775808, -1, 0, 9223372036854775807]",
            "no_dims=dims[]",
            r#"str="a \"b\" \\ c\n\t# é ✓""#,
            r#"empty_str="""#,
            "big_tensor=tensor f32[17] = base64\"",
            r#""odd attr-name"=7"#,
            r#"@"identity\n\"x\"""#,
        ] {
            assert!(ident.contains(want), "missing {want} in {ident}");
        }
    }

    #[test]
    fn hand_written_text_gets_defaults() {
        let text = "
            # a comment, then blank lines

            kiln graph v1   # the header
            input %x: f32[2, 4]
            const %g: f32[4] = [1, 2, 3, 4]     # ints are fine as float literals
            const %shape: i64[2] = base64\"BAAAAAAAAAACAAAAAAAAAA==\"
            %n = LayerNormalization(%x, %g)
            %r: f32[4, 2] = Reshape(%n, %shape)
            %t = Transpose[perm=[1, 0]](%r)  @\"transpose\"
            output y = %t
        ";
        let g = parse(text).unwrap();
        let n = g.node(g.value_by_name("n").unwrap().node);
        assert_eq!(n.name, "n");
        let op = n.op().unwrap();
        assert_eq!(op.attrs.get("epsilon"), Some(&Attr::Float(1e-5)));
        assert_eq!(op.attrs.get("axis"), Some(&Attr::Int(-1)));
        let t = g.value(g.value_by_name("t").unwrap());
        assert_eq!(t.ty.shape, vec![k(2), k(4)]);
        assert_eq!(g.node(g.value_by_name("t").unwrap().node).name, "transpose");
        // Printing then parsing the parsed graph is exact from here on.
        let printed = print(&g);
        assert!(printed
            .contains("%n: f32[2, 4] = LayerNormalization[axis=-1, epsilon=1e-5](%x, %g)  @\"n\""));
        assert!(printed.contains("const %shape: i64[2] = [4, 2]"));
        assert_eq!(print(&parse(&printed).unwrap()), printed);
        let feeds = HashMap::from([(
            "x".to_string(),
            Tensor::from_vec(&[2, 4], vec![1.0f32; 8]).unwrap(),
        )]);
        let y = crate::interp::run(&g, &feeds).unwrap();
        assert_eq!(y[0].1.shape(), &[2, 4]);
    }

    #[test]
    fn floats_round_trip_bitwise() {
        let mut rng = Rng(12345);
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            f32::MIN,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
            f32::EPSILON,
        ];
        let randoms = (0..20_000).map(|_| f32::from_bits(rng.next() as u32));
        for x in specials.into_iter().chain(randoms) {
            let t = float_text(x);
            assert!(looks_like_float(&t), "{t}");
            assert_eq!(parse_float(&t).map(f32::to_bits), Some(x.to_bits()), "{t}");
            let g = format!("kiln graph v1\n%y: i64[1] = SymbolicDims[dims=dims[1], f={t}]()");
            let parsed = parse(&g).unwrap();
            let attr = parsed
                .node(parsed.value_by_name("y").unwrap().node)
                .op()
                .unwrap()
                .attrs
                .get("f")
                .cloned();
            assert!(
                matches!(attr, Some(Attr::Float(v)) if v.to_bits() == x.to_bits()),
                "{t}"
            );
        }
        assert_eq!(parse_float("NaN(0x00000001)"), None, "not a NaN");
        assert_eq!(parse_float("NaN(0x)"), None);
    }

    #[test]
    fn half_literals_round_trip() {
        for bits in 0..=u16::MAX {
            for (dtype, bytes) in [
                (DType::F16, bits.to_le_bytes()),
                (DType::BF16, bits.to_le_bytes()),
            ] {
                let d = TensorData::new(dtype, vec![1], Bytes::copy_from_slice(&bytes)).unwrap();
                let text = format!("kiln graph v1\nconst %c: {}\n", data_text(&d));
                let g = parse(&text).unwrap();
                match &g.node(g.value_by_name("c").unwrap().node).kind {
                    NodeKind::Constant(back) => assert_eq!(back, &d, "{text}"),
                    _ => unreachable!(),
                }
            }
        }
    }

    fn parse_err(body: &str) -> String {
        parse(&format!("kiln graph v1\ninput %x: f32[2, 3]\n{body}")).unwrap_err()
    }

    #[test]
    fn reports_errors_on_one_line() {
        let cases: &[(&str, &str)] = &[
            ("%y = Frobnicate(%x)", "line 3: unknown op `Frobnicate`"),
            ("%y = Relu(%z)", "line 3: node `y`: value `%z` is not defined"),
            ("%x = Relu(%x)", "line 3: node `x`: value `%x` is defined twice"),
            ("%a, %a = Split[split=[1, 1]](%x)", "line 3: node `a`: value `%a` is defined twice"),
            ("input %x: f32[1]", "line 3: value `%x` is defined twice"),
            ("const %x: f32[1] = [1.0]", "line 3: value `%x` is defined twice"),
            ("%y: f32[3, 2] = Relu(%x)", "line 3: node `y`: value `%y` is declared f32[3, 2] but inferred f32[2, 3]"),
            ("%y: i64[2, 3] = Relu(%x)", "line 3: node `y`: value `%y` is declared i64[2, 3] but inferred f32[2, 3]"),
            ("%y = Relu(%x", "line 3: expected `,` or `)`, found end of line"),
            ("%y = Relu(%x) junk", "line 3: expected end of line, found `junk`"),
            ("%y = Relu %x", "line 3: expected `(`, found `%x`"),
            ("%y Relu(%x)", "line 3: expected `=`, found `Relu(%x)`"),
            ("%y = (%x)", "line 3: expected an op name, found `(%x)`"),
            ("%y = Relu(x)", "line 3: expected a value (`%name`), found `x)`"),
            ("%y = Relu(%)", "line 3: expected a value name, found `)`"),
            ("%y: f33[2, 3] = Relu(%x)", "line 3: expected a dtype (f32, f16, bf16, i8, u8, i32, i64 or bool), found `f33[2,`"),
            ("input %z: f32[2, $]", "line 3: expected a dim, found `$` (unexpected character `$` in dim `$`)"),
            ("input %z: f32[2,]", "line 3: expected a dim, found `]`"),
            ("input %z: f32[2", "line 3: expected `,` or `]`, found end of line"),
            ("input %z: f32[99999999999*99999999999]", "is too large (coefficient overflow)"),
            ("input %z: f32[((((((((((((((((((((((((((((((((((1)))))))))))))))))))))))))))))))))]", "nested too deeply"),
            ("const %c: f32[batch] = [1.0]", "line 3: expected a non-negative integer dim, found `batch`"),
            ("const %c: f32[2] = [1.0]", "line 3: expected 2 elements for f32[2], found 1"),
            ("const %c: i8[1] = [128]", "line 3: expected a i8 element, found `128]`"),
            ("const %c: bool[1] = [1]", "line 3: expected a bool element, found `1]`"),
            ("const %c: f32[1] = base64\"AAAA\"", "line 3: 3 bytes of data for f32[1], which needs 4"),
            ("const %c: f32[1] = base64\"A\"", "line 3: expected base64 data, found invalid base64"),
            ("const %c: f32[1] = 1.0", "line 3: expected `[` or `base64\"...\"`, found `1.0`"),
            ("const %c: f32[99999999999, 99999999999] = []", "line 3: shape [99999999999, 99999999999] is too large"),
            ("%y = Relu[a=1, a=2](%x)", "line 3: attribute `a` is given twice"),
            ("%y = Relu[a=zz](%x)", "line 3: expected an attribute value (int, float, string, [ints], floats[...], dims[...] or tensor), found `zz](%x)`"),
            ("%y = Relu[a=[1.5]](%x)", "line 3: expected an integer, found `1.5]](%x)`"),
            ("%y = Relu[a=floats[x]](%x)", "line 3: expected a float, found `x]](%x)`"),
            ("%y = Relu[a=\"unterminated](%x)", "line 3: expected `\"` closing the string, found end of line"),
            ("%y = Relu[a=\"bad \\q escape\"](%x)", "line 3: expected a valid string literal, found `\"bad`"),
            ("%y = Relu[=1](%x)", "line 3: expected an attribute name, found `=1](%x)`"),
            ("%y = Relu(%x)  @name", "line 3: expected a string, found `name`"),
            ("%y = Gather(%x)", "line 3: node `y` (Gather): input 1 is missing"),
            ("output = %x", "line 3: expected an output name, found `=`"),
            ("output y = %nope", "line 3: value `%nope` is not defined"),
            ("frobnicate %x", "line 3: expected a statement (`input`, `const`, `output` or `%value = Op(...)`), found `frobnicate`"),
            ("%\"a\nb\" = Relu(%x)", "line 3: expected `\"` closing the string, found end of line"),
        ];
        for (body, want) in cases {
            let e = parse_err(body);
            assert!(
                e.starts_with(want) || e.contains(want),
                "{body}\n got: {e}\nwant: {want}"
            );
            assert!(!e.contains('\n'), "{e}");
        }
        assert_eq!(
            parse("").unwrap_err(),
            "line 1: expected `kiln graph v1`, found end of input"
        );
        assert_eq!(
            parse("# only\n\n").unwrap_err(),
            "line 1: expected `kiln graph v1`, found end of input"
        );
        assert_eq!(
            parse("kiln graph v2\n").unwrap_err(),
            "line 1: expected `kiln graph v1`, found `kiln`"
        );
        // Node names with line breaks stay on one line in errors.
        let e = parse("kiln graph v1\ninput %x: f32[2]\n%y = Gather(%x)  @\"a\\nb\"").unwrap_err();
        assert_eq!(e, "line 3: node `a\\nb` (Gather): input 1 is missing");
    }

    /// Damages `b` in one to three places: byte flips, deletions, duplications, line swaps,
    /// numbers replaced by extreme ones and op names replaced by other ops.
    fn mutate(b: &mut Vec<u8>, rng: &mut Rng) {
        const INTERESTING: &[u8] = b" ,:=%_[]()\"\\@#-+*?.0123456789eE\n";
        const NUMBERS: &[&str] = &[
            "0",
            "1",
            "-1",
            "2",
            "-2",
            "7",
            "1000000",
            "-9223372036854775808",
            "9223372036854775807",
            "99999999999",
            "1e300",
            "NaN",
            "0.5",
        ];
        for _ in 0..1 + rng.below(3) {
            if b.is_empty() {
                return;
            }
            let i = rng.below(b.len());
            match rng.below(8) {
                0 => b[i] = rng.next() as u8,
                1 => b[i] = INTERESTING[rng.below(INTERESTING.len())],
                2 => {
                    b.remove(i);
                }
                3 => {
                    let j = (i + 1 + rng.below(8)).min(b.len());
                    let chunk = b[i..j].to_vec();
                    b.splice(i..i, chunk);
                }
                4 => {
                    // Swap two lines.
                    let text = String::from_utf8_lossy(b).into_owned();
                    let mut lines: Vec<&str> = text.lines().collect();
                    let (x, y) = (rng.below(lines.len()), rng.below(lines.len()));
                    lines.swap(x, y);
                    *b = lines.join("\n").into_bytes();
                }
                5 | 6 => {
                    // Replace the number (or op name) around `i`.
                    let is_num = |c: u8| c.is_ascii_digit() || c == b'-';
                    let is_word = |c: u8| c.is_ascii_alphanumeric();
                    let class: &dyn Fn(u8) -> bool = if is_num(b[i]) { &is_num } else { &is_word };
                    if !class(b[i]) {
                        continue;
                    }
                    let (mut s, mut e) = (i, i);
                    while s > 0 && class(b[s - 1]) {
                        s -= 1;
                    }
                    while e < b.len() && class(b[e]) {
                        e += 1;
                    }
                    let with = if is_num(b[i]) {
                        NUMBERS[rng.below(NUMBERS.len())].to_string()
                    } else {
                        OpKind::ALL[rng.below(OpKind::ALL.len())].name().to_string()
                    };
                    b.splice(s..e, with.into_bytes());
                }
                _ => b.insert(i, b"9999999999"[rng.below(10)]),
            }
        }
    }

    #[test]
    fn never_panics_on_damaged_text() {
        // KILN_FUZZ_ITERS=1000000 fuzzes deeper.
        let iters: usize = std::env::var("KILN_FUZZ_ITERS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(20_000);
        let hand = "kiln graph v1\ninput %x: f32[b, 4]\nconst %s: i64[2] = [4, -1]\nconst %i: i64[1] = [1]\n\
            %r: f32[4, b] = Reshape(%x, %s)  @\"r\"\n%t = Transpose[perm=[1, 0]](%r)\n\
            %u = Unsqueeze[axes=[0]](%t)\n%g = Gather[axis=2](%u, %i)\n%c = Concat[axis=1](%u, %u)\n\
            %sh = Shape[start=1](%c)\n%e = Expand(%x, %sh)\n%v = Slice(%c, %i, %i, _, _)\noutput y = %v\n";
        let mut rng = Rng(0xDEAD_BEEF);
        let mut ok = 0;
        for seed in [print(&sample_graph()), print(&parse(hand).unwrap())] {
            let bytes = seed.as_bytes();
            // Every truncation.
            for cut in 0..bytes.len() {
                ok += parse(&String::from_utf8_lossy(&bytes[..cut])).is_ok() as usize;
            }
            for _ in 0..iters {
                let mut b = bytes.to_vec();
                mutate(&mut b, &mut rng);
                let s = String::from_utf8_lossy(&b);
                match parse(&s) {
                    Ok(g) => {
                        ok += 1;
                        // Whatever parses prints and parses back the same.
                        let again = print(&g);
                        assert_eq!(print(&parse(&again).unwrap()), again);
                    }
                    Err(e) => {
                        assert!(e.starts_with("line "), "{e}");
                        assert!(!e.contains('\n'), "{e}");
                    }
                }
            }
        }
        assert!(ok > 0);
    }
}
