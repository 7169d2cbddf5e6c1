//! The JSON form of a [`Graph`]: one flat serde document that [`to_json`] writes and
//! [`from_json`] reads back into an identical graph.
//!
//! ```json
//! {
//!   "inputs": [{ "name": "x", "dtype": "f32", "shape": ["batch", "seq", 64] }],
//!   "constants": [{ "name": "w", "data": { "dtype": "f32", "shape": [64, 64], "data": "<base64>" } }],
//!   "nodes": [{
//!     "name": "/layer0/MatMul",
//!     "op": { "kind": "MatMul", "attrs": {} },
//!     "inputs": ["x", "w"],
//!     "outputs": [{ "name": "y", "dtype": "f32", "shape": ["batch", "seq", 64] }]
//!   }],
//!   "outputs": [{ "name": "logits", "value": "y" }]
//! }
//! ```
//!
//! - `inputs` are the graph inputs in declaration order; `constants` and `nodes` follow
//!   [`Graph::topo_order`]; a node input is a value name, or `null` for an absent optional input.
//! - Dims are integers or [`Dim`] expressions as strings (`"batch*seq"`, `"?"`); constant and
//!   tensor-attribute data is [`TensorData`]'s serde form (raw little-endian bytes in base64).
//! - Attributes are externally tagged like [`Attr`]'s derive: `{"Int": 3}`, `{"Float": 1e-12}`,
//!   `{"Str": "tanh"}`, `{"Ints": [1, 2]}`, `{"Floats": [1.0]}`, `{"Dims": ["batch", 4]}`,
//!   `{"Tensor": {...}}`. Floats that JSON numbers cannot hold are strings: `"NaN"`, `"inf"`,
//!   `"-inf"`, or `"NaN(0x7fc00001)"` for a NaN with non-canonical bits; every float reads
//!   back bit for bit.
//!
//! [`from_json`] rebuilds the graph through [`Graph::add_input`], [`Graph::add_constant`] and
//! [`Graph::add_op`] (so attributes missing from `attrs`, or `attrs` itself, take their
//! defaults), and checks each node's declared output types against the inferred ones, like
//! the text parser. Unknown fields are errors; missing top-level lists are empty.

use crate::graph::{Graph, NodeKind, Value, ValueType};
use crate::text::{add_checked_op, float_text, parse_float};
use crate::{Attr, Attrs, DType, Dim, Op, OpKind, TensorData};
use serde::de::{self, Unexpected, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashSet};
use std::fmt;

#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Doc {
    #[serde(default)]
    inputs: Vec<ValueDoc>,
    #[serde(default)]
    constants: Vec<ConstDoc>,
    #[serde(default)]
    nodes: Vec<NodeDoc>,
    #[serde(default)]
    outputs: Vec<OutputDoc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueDoc {
    name: String,
    dtype: DType,
    shape: Vec<Dim>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConstDoc {
    name: String,
    data: TensorData,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NodeDoc {
    name: String,
    op: OpDoc,
    inputs: Vec<Option<String>>,
    outputs: Vec<ValueDoc>,
}

/// [`Op`]'s serde form, with floats that survive JSON.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpDoc {
    kind: OpKind,
    #[serde(default)]
    attrs: BTreeMap<String, AttrDoc>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputDoc {
    name: String,
    value: String,
}

/// [`Attr`]'s serde form (same tags), with floats that survive JSON.
#[derive(Serialize, Deserialize)]
enum AttrDoc {
    Int(i64),
    Float(F32Doc),
    Str(String),
    Ints(Vec<i64>),
    Floats(Vec<F32Doc>),
    Dims(Vec<Dim>),
    Tensor(TensorData),
}

/// An f32 as a JSON number when that reads back bit for bit, else as a string.
#[derive(Clone, Copy)]
struct F32Doc(f32);

impl Serialize for F32Doc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let x = self.0;
        if !x.is_finite() {
            return s.serialize_str(&float_text(x));
        }
        // The shortest f32 digits are the most readable, but serde_json reads numbers through
        // f64, which can round differently; the exact value as an f64 always reads back.
        if reads_back_as_f32(x) {
            s.serialize_f32(x)
        } else {
            s.serialize_f64(f64::from(x))
        }
    }
}

fn reads_back_as_f32(x: f32) -> bool {
    serde_json::to_string(&x)
        .ok()
        .and_then(|t| serde_json::from_str::<F32Doc>(&t).ok())
        .is_some_and(|y| y.0.to_bits() == x.to_bits())
}

impl<'de> Deserialize<'de> for F32Doc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<F32Doc, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = F32Doc;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, \"NaN\", \"inf\" or \"-inf\"")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<F32Doc, E> {
                Ok(F32Doc(v as f32))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<F32Doc, E> {
                Ok(F32Doc(v as f32))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<F32Doc, E> {
                Ok(F32Doc(v as f32))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<F32Doc, E> {
                parse_float(v)
                    .map(F32Doc)
                    .ok_or_else(|| E::invalid_value(Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

impl From<&Attr> for AttrDoc {
    fn from(a: &Attr) -> AttrDoc {
        match a {
            Attr::Int(v) => AttrDoc::Int(*v),
            Attr::Float(v) => AttrDoc::Float(F32Doc(*v)),
            Attr::Str(v) => AttrDoc::Str(v.clone()),
            Attr::Ints(v) => AttrDoc::Ints(v.clone()),
            Attr::Floats(v) => AttrDoc::Floats(v.iter().map(|&x| F32Doc(x)).collect()),
            Attr::Dims(v) => AttrDoc::Dims(v.clone()),
            Attr::Tensor(v) => AttrDoc::Tensor(v.clone()),
        }
    }
}

impl From<AttrDoc> for Attr {
    fn from(a: AttrDoc) -> Attr {
        match a {
            AttrDoc::Int(v) => Attr::Int(v),
            AttrDoc::Float(v) => Attr::Float(v.0),
            AttrDoc::Str(v) => Attr::Str(v),
            AttrDoc::Ints(v) => Attr::Ints(v),
            AttrDoc::Floats(v) => Attr::Floats(v.into_iter().map(|x| x.0).collect()),
            AttrDoc::Dims(v) => Attr::Dims(v),
            AttrDoc::Tensor(v) => Attr::Tensor(v),
        }
    }
}

impl From<&Value> for ValueDoc {
    fn from(v: &Value) -> ValueDoc {
        ValueDoc {
            name: v.name.clone(),
            dtype: v.ty.dtype,
            shape: v.ty.shape.clone(),
        }
    }
}

/// Writes `graph` as a pretty-printed JSON document (see the module doc); [`from_json`]
/// reads it back into an identical graph.
pub fn to_json(graph: &Graph) -> String {
    let mut doc = Doc::default();
    let mut inputs = HashSet::new();
    for v in graph.inputs() {
        inputs.insert(v.node);
        doc.inputs.push(graph.value(v).into());
    }
    for n in graph.topo_order() {
        let node = graph.node(n);
        match &node.kind {
            NodeKind::Input if !inputs.contains(&n) => {
                doc.inputs.extend(node.outputs.iter().map(ValueDoc::from))
            }
            NodeKind::Input => {}
            NodeKind::Constant(data) => {
                doc.constants.extend(node.outputs.iter().map(|v| ConstDoc {
                    name: v.name.clone(),
                    data: data.clone(),
                }))
            }
            NodeKind::Op(op) => doc.nodes.push(NodeDoc {
                name: node.name.clone(),
                op: OpDoc {
                    kind: op.kind,
                    attrs: op
                        .attrs
                        .0
                        .iter()
                        .map(|(k, a)| (k.clone(), a.into()))
                        .collect(),
                },
                inputs: node
                    .inputs
                    .iter()
                    .map(|i| i.map(|v| graph.value(v).name.clone()))
                    .collect(),
                outputs: node.outputs.iter().map(ValueDoc::from).collect(),
            }),
        }
    }
    doc.outputs = graph
        .outputs()
        .iter()
        .map(|(name, v)| OutputDoc {
            name: name.clone(),
            value: graph.value(*v).name.clone(),
        })
        .collect();
    serde_json::to_string_pretty(&doc).expect("a graph document always serializes")
}

/// Reads a JSON document written by [`to_json`] (or by hand), rebuilding the graph through the
/// [`Graph`] API with default attributes applied and every declared node output type checked
/// against the inferred one. Errors name the input, constant, node or output at fault.
pub fn from_json(s: &str) -> Result<Graph, String> {
    let doc: Doc = serde_json::from_str(s).map_err(|e| format!("invalid graph JSON: {e}"))?;
    let mut g = Graph::new();
    let defined = |g: &Graph, what: &str, name: &str| match g.value_by_name(name) {
        Some(_) => Err(format!("{what} `{name}`: value `{name}` is defined twice")),
        None => Ok(()),
    };
    for v in doc.inputs {
        defined(&g, "input", &v.name)?;
        g.add_input(&v.name, v.dtype, v.shape)
            .map_err(|e| format!("input `{}`: {e}", v.name))?;
    }
    for c in doc.constants {
        defined(&g, "constant", &c.name)?;
        g.add_constant(&c.name, c.data)
            .map_err(|e| format!("constant `{}`: {e}", c.name))?;
    }
    for n in doc.nodes {
        let inputs = n
            .inputs
            .iter()
            .map(|i| match i {
                Some(v) => g
                    .value_by_name(v)
                    .map(Some)
                    .ok_or_else(|| format!("node `{}`: value `{v}` is not defined", n.name)),
                None => Ok(None),
            })
            .collect::<Result<Vec<_>, String>>()?;
        let attrs = Attrs(n.op.attrs.into_iter().map(|(k, a)| (k, a.into())).collect());
        let outputs: Vec<(String, Option<ValueType>)> = n
            .outputs
            .into_iter()
            .map(|v| (v.name, Some(ValueType::new(v.dtype, v.shape))))
            .collect();
        add_checked_op(
            &mut g,
            &n.name,
            Op::new(n.op.kind, attrs),
            inputs,
            &outputs,
            |v| format!("`{v}`"),
        )?;
    }
    let mut outputs = Vec::with_capacity(doc.outputs.len());
    for o in doc.outputs {
        let v = g
            .value_by_name(&o.value)
            .ok_or_else(|| format!("output `{}`: value `{}` is not defined", o.name, o.value))?;
        outputs.push((o.name, v));
    }
    g.set_outputs(outputs);
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::tests::{assert_same_graph, assert_same_results, sample_graph, Rng};

    #[test]
    fn round_trips_exactly() {
        let g = sample_graph();
        let json = to_json(&g);
        let back = from_json(&json).unwrap_or_else(|e| panic!("{e}\n{json}"));
        assert_eq!(to_json(&back), json);
        assert_same_graph(&g, &back);
        assert_same_results(&g, &back);
        // The text form of both is identical too.
        assert_eq!(crate::text::print(&back), crate::text::print(&g));
    }

    #[test]
    fn document_is_flat_and_readable() {
        let g = sample_graph();
        let doc: serde_json::Value = serde_json::from_str(&to_json(&g)).unwrap();
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["constants", "inputs", "nodes", "outputs"]);
        assert_eq!(
            doc["inputs"][0],
            serde_json::json!({"name": "x", "dtype": "f32", "shape": ["batch", "seq", 8]})
        );
        assert_eq!(
            doc["inputs"][2]["shape"],
            serde_json::json!(["?", "2*seq+1", 0])
        );
        let ln = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "ln")
            .unwrap();
        assert_eq!(ln["op"]["kind"], "LayerNormalization");
        assert_eq!(
            ln["op"]["attrs"],
            serde_json::json!({"axis": {"Int": -1}, "epsilon": {"Float": 1e-12}})
        );
        assert_eq!(
            ln["inputs"],
            serde_json::json!(["/model/MatMul_output_0", "ln.weight", null])
        );
        assert_eq!(
            ln["outputs"][0]["shape"],
            serde_json::json!(["batch", "seq", 8])
        );
        let split = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == "split_0")
            .unwrap();
        assert_eq!(split["outputs"].as_array().unwrap().len(), 2);
        let ident = &doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["op"]["kind"] == "Identity")
            .unwrap();
        let a = &ident["op"]["attrs"];
        assert_eq!(a["f_nan"], serde_json::json!({"Float": "NaN"}));
        assert_eq!(
            a["f_payload"],
            serde_json::json!({"Float": "NaN(0xffc01234)"})
        );
        assert_eq!(a["f_inf"], serde_json::json!({"Float": "-inf"}));
        assert_eq!(a["f_one"], serde_json::json!({"Float": 1.0}));
        let floats = a["floats"]["Floats"].as_array().unwrap();
        assert_eq!(
            floats[..5],
            serde_json::json!([1.0, 2.5, "NaN", "inf", -0.0])
                .as_array()
                .unwrap()[..]
        );
        // (serde_json::Value reads `1e-45` imprecisely through f64; F32Doc reads it exactly.)
        assert!(floats[5].is_number());
        assert_eq!(a["big_tensor"]["Tensor"]["shape"], serde_json::json!([17]));
        let consts = doc["constants"].as_array().unwrap();
        let axes = consts.iter().find(|c| c["name"] == "q8").unwrap();
        assert_eq!(
            axes["data"],
            serde_json::json!({"dtype": "i8", "shape": [3], "data": "gAB/"})
        );
        assert!(doc["outputs"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!({"name": "out", "value": "gelu"})));
    }

    #[test]
    fn floats_read_back_bitwise() {
        let mut rng = Rng(99);
        let specials = [
            0.0f32,
            -0.0,
            1.0,
            0.1,
            1e-12,
            f32::MIN,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-45,
        ];
        for x in specials
            .into_iter()
            .chain((0..100_000).map(|_| f32::from_bits(rng.next() as u32)))
        {
            let t = serde_json::to_string(&F32Doc(x)).unwrap();
            let y: F32Doc = serde_json::from_str(&t).unwrap();
            assert_eq!(y.0.to_bits(), x.to_bits(), "{x:?} as {t}");
        }
    }

    #[test]
    fn hand_written_json_gets_defaults() {
        let json = r#"{
            "inputs": [{"name": "x", "dtype": "f32", "shape": [2, "n"]}],
            "constants": [{"name": "g", "data": {"dtype": "f32", "shape": [1], "data": "AACAPw=="}}],
            "nodes": [{
                "name": "norm",
                "op": {"kind": "LayerNormalization"},
                "inputs": ["x", "g", null],
                "outputs": [{"name": "y", "dtype": "f32", "shape": [2, "n"]}]
            }, {
                "name": "scale",
                "op": {"kind": "Gemm", "attrs": {"alpha": {"Float": 2}, "transB": {"Int": 1}}},
                "inputs": ["y", "y"],
                "outputs": [{"name": "z", "dtype": "f32", "shape": [2, 2]}]
            }],
            "outputs": [{"name": "out", "value": "z"}]
        }"#;
        let g = from_json(json).unwrap();
        let op = g
            .node(g.value_by_name("y").unwrap().node)
            .op()
            .unwrap()
            .clone();
        assert_eq!(op.attrs.get("epsilon"), Some(&Attr::Float(1e-5)));
        let gemm = g
            .node(g.value_by_name("z").unwrap().node)
            .op()
            .unwrap()
            .clone();
        assert_eq!(gemm.attrs.get("alpha"), Some(&Attr::Float(2.0)));
        assert_eq!(gemm.attrs.get("beta"), Some(&Attr::Float(1.0)));
        assert_eq!(g.outputs().len(), 1);
        let again = to_json(&g);
        assert_eq!(to_json(&from_json(&again).unwrap()), again);
    }

    #[test]
    fn reports_errors() {
        let base = |nodes: &str, outputs: &str| {
            format!(
                r#"{{"inputs": [{{"name": "x", "dtype": "f32", "shape": [2, 3]}}],
                    "nodes": [{nodes}], "outputs": [{outputs}]}}"#
            )
        };
        let node = |op: &str, inputs: &str, outputs: &str| {
            format!(r#"{{"name": "n", "op": {op}, "inputs": [{inputs}], "outputs": [{outputs}]}}"#)
        };
        let y = |shape: &str| format!(r#"{{"name": "y", "dtype": "f32", "shape": {shape}}}"#);
        let relu = r#"{"kind": "Relu"}"#;
        let cases = [
            (base(&node(relu, r#""z""#, &y("[2, 3]")), ""), "node `n`: value `z` is not defined".to_string()),
            (base(&node(relu, r#""x""#, &y("[3, 2]")), ""), "node `n`: value `y` is declared f32[3, 2] but inferred f32[2, 3]".into()),
            (base(&node(relu, r#""x""#, &y(r#"[2, 3]}, {"name": "y", "dtype": "f32", "shape": [2, 3]"#)), ""), "node `n`: value `y` is defined twice".into()),
            (base(&node(relu, r#""x""#, r#"{"name": "x", "dtype": "f32", "shape": [2, 3]}"#), ""), "node `n`: value `x` is defined twice".into()),
            (base(&node(r#"{"kind": "Gather"}"#, r#""x""#, &y("[2, 3]")), ""), "node `n` (Gather): input 1 is missing".into()),
            (base("", r#"{"name": "o", "value": "nope"}"#), "output `o`: value `nope` is not defined".into()),
            (base(&node(r#"{"kind": "Frobnicate"}"#, r#""x""#, &y("[2, 3]")), ""), "invalid graph JSON: unknown variant `Frobnicate`".into()),
            (base(&node(r#"{"kind": "Relu", "attrs": {"a": {"Float": "x"}}}"#, r#""x""#, &y("[2, 3]")), ""), "invalid graph JSON: invalid value: string \"x\"".into()),
            (base(&node(relu, r#""x""#, &y(r#"["2*"]"#)), ""), "invalid graph JSON: dim expression ends early".into()),
            ("{\"inputs\": [}".into(), "invalid graph JSON: expected value".into()),
            (r#"{"inputz": []}"#.into(), "invalid graph JSON: unknown field `inputz`".into()),
            (
                r#"{"inputs": [{"name": "x", "dtype": "f32", "shape": []}, {"name": "x", "dtype": "f32", "shape": []}]}"#.into(),
                "input `x`: value `x` is defined twice".into(),
            ),
            (
                r#"{"constants": [{"name": "c", "data": {"dtype": "f32", "shape": [2], "data": "AAAA"}}]}"#.into(),
                "invalid graph JSON: 3 bytes of data for f32[2], which needs 8".into(),
            ),
        ];
        for (json, want) in cases {
            let e = from_json(&json).map(|_| ()).unwrap_err();
            assert!(e.starts_with(&want), "{json}\n got: {e}\nwant: {want}");
        }
    }
}
