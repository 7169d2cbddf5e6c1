//! The e-graph language: one e-node per IR op (with its attributes), graph inputs, constants,
//! and projections of the extra outputs of multi-output ops.
//!
//! An op e-node's e-class stands for the op's output 0; `Get(i, x)` (i >= 1) stands for output
//! `i` of the op chosen for class `x`. Ops print and parse as compact tokens without spaces,
//! `Softmax[axis=-1]` or `Transpose[perm=[0,2,1,3]]`, so they can appear in s-expressions.

use egg::{Id, Language};
use kiln_ir::{Attr, Attrs, DType, Dim, Op, OpKind, TensorData};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// An op with its attributes, compared by kind and canonical token.
#[derive(Clone, Debug)]
pub struct OpNode {
    /// The op.
    pub op: Arc<Op>,
    /// `op_token(op)`: the identity of the op for hashing and comparison.
    pub token: Arc<str>,
}

impl OpNode {
    /// Wraps an op.
    pub fn new(op: Op) -> OpNode {
        let token = op_token(&op).into();
        OpNode {
            op: Arc::new(op),
            token,
        }
    }
}

impl PartialEq for OpNode {
    fn eq(&self, other: &Self) -> bool {
        self.token == other.token
    }
}
impl Eq for OpNode {}
impl Hash for OpNode {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.token.hash(state)
    }
}
impl PartialOrd for OpNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OpNode {
    /// By kind first, so e-nodes of one kind sort together (egg relies on it).
    fn cmp(&self, other: &Self) -> Ordering {
        (self.op.kind, &self.token).cmp(&(other.op.kind, &other.token))
    }
}

/// An e-node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Node {
    /// A graph input, by name.
    Input(Arc<str>),
    /// A constant, by index into [`crate::analysis::KilnAnalysis::constants`].
    Const(u32),
    /// An absent optional input.
    Absent,
    /// An op on the children (in input order; `Absent` for missing optional inputs).
    Op(OpNode, Vec<Id>),
    /// Output `i` (>= 1) of the multi-output op in the child class.
    Get(u32, [Id; 1]),
}

/// What egg indexes e-nodes by: the variant, and for ops the kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Discriminant {
    /// A specific input.
    Input(Arc<str>),
    /// A specific constant.
    Const(u32),
    /// The absent input.
    Absent,
    /// Any op of this kind with this many inputs.
    Op(OpKind, usize),
    /// A projection of output `i`.
    Get(u32),
}

impl Language for Node {
    type Discriminant = Discriminant;

    fn discriminant(&self) -> Discriminant {
        match self {
            Node::Input(n) => Discriminant::Input(n.clone()),
            Node::Const(c) => Discriminant::Const(*c),
            Node::Absent => Discriminant::Absent,
            Node::Op(op, args) => Discriminant::Op(op.op.kind, args.len()),
            Node::Get(i, _) => Discriminant::Get(*i),
        }
    }

    /// A pattern op matches an e-node of the same kind and arity whose attributes include
    /// every attribute the pattern states (a pattern may leave attributes unconstrained).
    fn matches(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Op(p, a), Node::Op(q, b)) => {
                p.op.kind == q.op.kind
                    && a.len() == b.len()
                    && (p.token == q.token
                        || p.op
                            .attrs
                            .0
                            .iter()
                            .all(|(k, v)| q.op.attrs.get(k) == Some(v)))
            }
            _ => self.discriminant() == other.discriminant(),
        }
    }

    fn children(&self) -> &[Id] {
        match self {
            Node::Op(_, args) => args,
            Node::Get(_, x) => x,
            _ => &[],
        }
    }

    fn children_mut(&mut self) -> &mut [Id] {
        match self {
            Node::Op(_, args) => args,
            Node::Get(_, x) => x,
            _ => &mut [],
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Input(n) => write!(f, "input:{n}"),
            Node::Const(c) => write!(f, "const:{c}"),
            Node::Absent => f.write_str("_"),
            Node::Op(op, _) => f.write_str(&op.token),
            Node::Get(i, _) => write!(f, "Get{i}"),
        }
    }
}

impl egg::FromOp for Node {
    type Error = String;

    /// Parses the tokens [`Display`](fmt::Display) prints; op attributes that a pattern
    /// leaves out stay unconstrained (no defaults are filled in).
    fn from_op(token: &str, children: Vec<Id>) -> Result<Node, String> {
        if let Some(n) = token.strip_prefix("input:") {
            return Ok(Node::Input(n.into()));
        }
        if let Some(c) = token.strip_prefix("const:") {
            return c
                .parse()
                .map(Node::Const)
                .map_err(|_| format!("bad constant `{token}`"));
        }
        if token == "_" {
            return Ok(Node::Absent);
        }
        if let Some(i) = token.strip_prefix("Get") {
            let i: u32 = i.parse().map_err(|_| format!("bad projection `{token}`"))?;
            let [x] = children.as_slice() else {
                return Err(format!("`{token}` takes one argument"));
            };
            return Ok(Node::Get(i, [*x]));
        }
        let op = parse_op_token(token)?;
        Ok(Node::Op(
            OpNode {
                token: token.into(),
                op: Arc::new(op),
            },
            children,
        ))
    }
}

/// The compact token of an op: `Kind` or `Kind[key=value,...]` (no spaces, sorted keys).
pub fn op_token(op: &Op) -> String {
    if op.attrs.0.is_empty() {
        return op.kind.name().to_string();
    }
    let attrs: Vec<String> = op
        .attrs
        .0
        .iter()
        .map(|(k, v)| format!("{k}={}", attr_token(v)))
        .collect();
    format!("{}[{}]", op.kind.name(), attrs.join(","))
}

/// The compact text of one attribute value.
pub fn attr_token(a: &Attr) -> String {
    let join = |items: Vec<String>| items.join(",");
    match a {
        Attr::Int(v) => v.to_string(),
        Attr::Float(v) => float_token(*v),
        Attr::Str(s)
            if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
        {
            s.clone()
        }
        Attr::Str(s) => format!(
            "str:{}",
            s.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        Attr::Ints(v) => format!("[{}]", join(v.iter().map(|x| x.to_string()).collect())),
        Attr::Floats(v) => format!(
            "floats[{}]",
            join(v.iter().map(|x| float_token(*x)).collect())
        ),
        Attr::Dims(v) => format!(
            "dims[{}]",
            join(v.iter().map(|d| d.to_string().replace(' ', "")).collect())
        ),
        Attr::Tensor(t) => format!(
            "tensor:{}:{}:{}",
            t.dtype(),
            join(t.shape().iter().map(|d| d.to_string()).collect()),
            t.bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ),
    }
}

/// A float written so it reads back bit for bit and never looks like an int.
fn float_token(v: f32) -> String {
    if v.is_nan() {
        return format!("nan:{:08x}", v.to_bits());
    }
    let s = format!("{v:?}");
    if s.contains(['.', 'e', 'i']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// Parses an op token; attributes it names are set, others are left absent.
pub fn parse_op_token(token: &str) -> Result<Op, String> {
    let (kind, rest) = match token.find('[') {
        Some(i) => (&token[..i], Some(&token[i..])),
        None => (token, None),
    };
    let kind: OpKind = kind.parse()?;
    let mut attrs = Attrs::default();
    if let Some(rest) = rest {
        let inner = rest
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .ok_or_else(|| format!("unbalanced brackets in `{token}`"))?;
        for item in split_top_level(inner) {
            let (k, v) = item
                .split_once('=')
                .ok_or_else(|| format!("expected key=value in `{token}`, found `{item}`"))?;
            attrs.set(
                k,
                parse_attr_token(v).map_err(|e| format!("`{token}`: {e}"))?,
            );
        }
    }
    Ok(Op { kind, attrs })
}

/// Splits on commas that are not inside brackets.
pub(crate) fn split_top_level(s: &str) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, vec![]);
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if !s.is_empty() {
        out.push(&s[start..]);
    }
    out
}

/// Parses one attribute value token.
pub fn parse_attr_token(v: &str) -> Result<Attr, String> {
    let bad = || format!("bad attribute value `{v}`");
    let unhex = |h: &str| -> Result<Vec<u8>, String> {
        (0..h.len())
            .step_by(2)
            .map(|i| {
                h.get(i..i + 2)
                    .and_then(|b| u8::from_str_radix(b, 16).ok())
                    .ok_or_else(bad)
            })
            .collect()
    };
    if let Some(inner) = v.strip_prefix("floats[").and_then(|r| r.strip_suffix(']')) {
        return split_top_level(inner)
            .into_iter()
            .map(|x| parse_float_token(x).ok_or_else(bad))
            .collect::<Result<_, _>>()
            .map(Attr::Floats);
    }
    if let Some(inner) = v.strip_prefix("dims[").and_then(|r| r.strip_suffix(']')) {
        return split_top_level(inner)
            .into_iter()
            .map(|x| x.parse::<Dim>())
            .collect::<Result<_, _>>()
            .map(Attr::Dims);
    }
    if let Some(inner) = v.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return split_top_level(inner)
            .into_iter()
            .map(|x| x.parse::<i64>().map_err(|_| bad()))
            .collect::<Result<_, _>>()
            .map(Attr::Ints);
    }
    if let Some(h) = v.strip_prefix("str:") {
        return String::from_utf8(unhex(h)?)
            .map(Attr::Str)
            .map_err(|_| bad());
    }
    if let Some(t) = v.strip_prefix("tensor:") {
        let parts: Vec<&str> = t.splitn(3, ':').collect();
        let [dtype, shape, data] = parts.as_slice() else {
            return Err(bad());
        };
        let dtype: DType = dtype.parse()?;
        let shape: Vec<usize> = split_top_level(shape)
            .into_iter()
            .map(|x| x.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        return TensorData::new(dtype, shape, unhex(data)?.into()).map(Attr::Tensor);
    }
    if let Ok(i) = v.parse::<i64>() {
        return Ok(Attr::Int(i));
    }
    if let Some(f) = parse_float_token(v) {
        return Ok(Attr::Float(f));
    }
    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Ok(Attr::Str(v.to_string()));
    }
    Err(bad())
}

fn parse_float_token(v: &str) -> Option<f32> {
    if let Some(bits) = v.strip_prefix("nan:") {
        return u32::from_str_radix(bits, 16).ok().map(f32::from_bits);
    }
    if !v.contains(['.', 'e', 'i']) {
        return None;
    }
    v.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_tokens_round_trip() {
        let mut attrs = Attrs::default();
        attrs.set("perm", Attr::Ints(vec![0, 2, 1, 3]));
        attrs.set("eps", Attr::Float(1e-12));
        attrs.set("one", Attr::Float(1.0));
        attrs.set("mode", Attr::Str("tanh".into()));
        attrs.set("odd", Attr::Str("a b".into()));
        attrs.set("fs", Attr::Floats(vec![0.5, -2.0]));
        attrs.set(
            "dims",
            Attr::Dims(vec![Dim::sym("batch"), "2*seq+1".parse().unwrap()]),
        );
        attrs.set(
            "value",
            Attr::Tensor(
                kiln_ir::Tensor::from_vec(&[2], vec![1i64, 2])
                    .unwrap()
                    .to_data(),
            ),
        );
        let op = Op {
            kind: OpKind::Transpose,
            attrs,
        };
        let token = op_token(&op);
        assert!(!token.contains(' '), "{token}");
        assert_eq!(parse_op_token(&token).unwrap(), op);
        assert_eq!(
            op_token(&parse_op_token("Softmax[axis=-1]").unwrap()),
            "Softmax[axis=-1]"
        );
        assert!(parse_op_token("Softmax[axis=]").is_err());
        assert!(parse_op_token("NoSuchOp").is_err());
    }

    #[test]
    fn partial_pattern_ops_match_complete_ones() {
        let pattern = Node::Op(
            OpNode::new(parse_op_token("Softmax").unwrap()),
            vec![Id::from(0)],
        );
        let full = Node::Op(OpNode::new(Op::plain(OpKind::Softmax)), vec![Id::from(3)]);
        let other_axis = Node::Op(
            OpNode::new(parse_op_token("Softmax[axis=1]").unwrap()),
            vec![Id::from(3)],
        );
        let pinned = Node::Op(
            OpNode::new(parse_op_token("Softmax[axis=-1]").unwrap()),
            vec![Id::from(0)],
        );
        assert!(pattern.matches(&full) && pattern.matches(&other_axis));
        assert!(pinned.matches(&full) && !pinned.matches(&other_axis));
    }
}
