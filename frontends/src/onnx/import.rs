//! Import of an ONNX graph into the IR: inputs with symbolic dims, initializers as constants,
//! and each node mapped onto the IR op set with its opset-dependent form normalised
//! (axes given as inputs become attributes, variadic ops become chains, ...).

use super::proto::{
    attribute_proto::AttributeType, tensor_shape_proto::dimension, type_proto, AttributeProto,
    ModelProto, NodeProto, ValueInfoProto,
};
use super::schema;
use super::tensor::{dtype_from_onnx, tensor_from_proto, ExternalDataCache};
use kiln_ir::{Attr, Attrs, DType, Dim, Graph, Op, OpKind, Tensor, ValueId};
use std::collections::HashMap;
use std::path::Path;

/// The default-domain opsets kiln imports. Ops whose semantics changed in a way kiln does not
/// implement are rejected one by one (see `Importer::check_version`), not by whole opset.
pub const SUPPORTED_OPSETS: std::ops::RangeInclusive<i64> = 1..=28;

/// Largest dim accepted in a declared shape or initializer (a sanity bound, 2^40).
const MAX_DIM: i64 = 1 << 40;

type Res<T> = Result<T, String>;

/// Imports a decoded model; `dir` is where external data files are looked up.
pub fn import_model(model: &ModelProto, dir: &Path) -> Res<Graph> {
    let mut opset = None;
    for o in &model.opset_import {
        let domain = o.domain.as_deref().unwrap_or("");
        if domain.is_empty() || domain == "ai.onnx" {
            let version = o
                .version
                .ok_or("the default-domain (ai.onnx) opset_import has no version")?;
            match opset {
                Some(v) if v != version => {
                    return Err(format!(
                        "the model imports the default domain (ai.onnx) at two opsets, {v} and {version}"
                    ))
                }
                _ => opset = Some(version),
            }
        }
    }
    let opset = opset.ok_or("the model has no opset_import for the default domain (ai.onnx)")?;
    if !SUPPORTED_OPSETS.contains(&opset) {
        return Err(format!(
            "opset {opset} is not supported (kiln imports opsets {} to {})",
            SUPPORTED_OPSETS.start(),
            SUPPORTED_OPSETS.end()
        ));
    }
    let g = model.graph.as_ref().ok_or("the model has no graph")?;
    let mut imp = Importer {
        graph: Graph::new(),
        names: HashMap::new(),
        opset,
        external: ExternalDataCache::new(dir),
    };
    for init in &g.initializer {
        let name = init.name.clone().unwrap_or_default();
        let data = tensor_from_proto(init, &mut imp.external)?;
        let id = imp
            .graph
            .add_constant(&name, data)
            .map_err(|e| format!("initializer `{name}`: {e}"))?;
        imp.names.insert(name, id);
    }
    for vi in &g.input {
        let name = vi.name.clone().unwrap_or_default();
        if imp.names.contains_key(&name) {
            continue; // an initializer listed as an input (older exporters)
        }
        let (dtype, shape) = value_info_type(vi)?;
        let id = imp.graph.add_input(&name, dtype, shape)?;
        imp.names.insert(name, id);
    }
    for (i, node) in g.node.iter().enumerate() {
        imp.node(node, i)?;
    }
    let mut outputs = vec![];
    for vi in &g.output {
        let name = vi.name.clone().unwrap_or_default();
        let id = *imp
            .names
            .get(&name)
            .ok_or_else(|| format!("output `{name}` is not produced by any node"))?;
        outputs.push((name, id));
    }
    imp.graph.set_outputs(outputs);
    kiln_ir::fold::fold_shape_computations(&mut imp.graph);
    Ok(imp.graph)
}

/// The dtype and symbolic shape declared for a graph input.
fn value_info_type(vi: &ValueInfoProto) -> Res<(DType, Vec<Dim>)> {
    let name = vi.name.as_deref().unwrap_or("");
    let Some(type_proto::Value::TensorType(t)) = vi.r#type.as_ref().and_then(|t| t.value.as_ref())
    else {
        return Err(format!("input `{name}` is not a tensor"));
    };
    let dtype =
        dtype_from_onnx(t.elem_type.unwrap_or(0)).map_err(|e| format!("input `{name}`: {e}"))?;
    let dims = t.shape.as_ref().map(|s| s.dim.as_slice()).unwrap_or(&[]);
    let shape = dims
        .iter()
        .enumerate()
        .map(|(i, d)| match &d.value {
            Some(dimension::Value::DimValue(v)) if (0..=MAX_DIM).contains(v) => Ok(Dim::known(*v)),
            Some(dimension::Value::DimValue(v)) => Err(format!(
                "input `{name}`: dim {i} is {v}, which is not a valid size"
            )),
            Some(dimension::Value::DimParam(p)) if !p.is_empty() => Ok(Dim::sym(&symbol_name(p))),
            // An unnamed dynamic dim gets a symbol of its own, bound when the model runs.
            _ => Ok(Dim::sym(&symbol_name(&format!("{name}_dim{i}")))),
        })
        .collect::<Res<_>>()?;
    Ok((dtype, shape))
}

/// A dim_param made into an identifier (`batch size` becomes `batch_size`).
fn symbol_name(p: &str) -> String {
    let s: String = p
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        format!("d{s}")
    } else {
        s
    }
}

struct Importer {
    graph: Graph,
    names: HashMap<String, ValueId>,
    opset: i64,
    external: ExternalDataCache,
}

impl Importer {
    fn node(&mut self, node: &NodeProto, index: usize) -> Res<()> {
        let op_type = node.op_type.as_deref().unwrap_or("");
        let name = match node.name.as_deref() {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => format!("{op_type}_{index}"),
        };
        self.lower(node, &name, op_type).map_err(|e| {
            if e.starts_with("node `") {
                e
            } else {
                format!("node `{name}` ({op_type}): {e}")
            }
        })
    }

    fn value(&self, name: &str) -> Res<Option<ValueId>> {
        if name.is_empty() {
            return Ok(None);
        }
        self.names
            .get(name)
            .copied()
            .map(Some)
            .ok_or_else(|| format!("input `{name}` is not defined before this node"))
    }

    /// The constant integer values of an input, if it has them.
    fn const_values(&self, id: Option<ValueId>) -> Option<Vec<i64>> {
        let sym = self.graph.value(id?).ty.sym.as_ref()?;
        sym.iter().map(Dim::as_known).collect()
    }

    /// Constant integer values of an input, needed where kiln takes them as an attribute.
    fn const_ints(&self, id: Option<ValueId>, what: &str) -> Res<Option<Vec<i64>>> {
        let Some(id) = id else { return Ok(None) };
        let ty = &self.graph.value(id).ty;
        ty.sym
            .as_ref()
            .and_then(|s| s.iter().map(Dim::as_known).collect::<Option<Vec<i64>>>())
            .map(Some)
            .ok_or_else(|| format!("{what} must be a constant"))
    }

    fn emit(
        &mut self,
        name: &str,
        op: Op,
        inputs: Vec<Option<ValueId>>,
        outputs: &[String],
    ) -> Res<Vec<ValueId>> {
        let ids = self.graph.add_op(name, op, inputs, outputs)?;
        for (n, id) in outputs.iter().zip(&ids) {
            self.names.insert(n.clone(), *id);
        }
        Ok(ids)
    }

    fn lower(&mut self, node: &NodeProto, name: &str, op_type: &str) -> Res<()> {
        let domain = node.domain.as_deref().unwrap_or("");
        let inputs: Vec<Option<ValueId>> = node
            .input
            .iter()
            .map(|i| self.value(i))
            .collect::<Res<_>>()?;
        // Trailing unused outputs are dropped; an unused output in the middle gets a name.
        let mut outputs: Vec<String> = node.output.clone();
        while outputs.last().is_some_and(|o| o.is_empty()) {
            outputs.pop();
        }
        for (i, o) in outputs.iter_mut().enumerate() {
            if o.is_empty() {
                *o = format!("{name}:unused{i}");
            }
        }
        let mut attrs = Attrs::default();
        for a in &node.attribute {
            let key = a.name.clone().unwrap_or_default();
            if attrs.get(&key).is_some() {
                return Err(format!("attribute `{key}` is given twice"));
            }
            attrs.set(
                &key,
                self.attr(a)
                    .map_err(|e| format!("attribute `{key}`: {e}"))?,
            );
        }
        let n_inputs = node
            .input
            .iter()
            .rposition(|i| !i.is_empty())
            .map_or(0, |last| last + 1);
        schema::check_node(domain, op_type, self.opset, n_inputs, &attrs)?;
        let kind = match (domain, op_type) {
            ("" | "ai.onnx", "Constant") => return self.constant(name, &attrs, &outputs),
            ("" | "ai.onnx", "CastLike") => {
                let to = self
                    .graph
                    .value(
                        inputs
                            .get(1)
                            .copied()
                            .flatten()
                            .ok_or("input 1 is missing")?,
                    )
                    .ty
                    .dtype;
                let op = Op::new(
                    OpKind::Cast,
                    Attrs::from_pairs(&[("to", Attr::Str(to.name().into()))]),
                );
                return self.emit(name, op, vec![inputs[0]], &outputs).map(drop);
            }
            ("" | "ai.onnx", "Max" | "Min") if inputs.len() != 2 => {
                let kind: OpKind = op_type.parse()?;
                return self.chain(name, kind, inputs, &outputs);
            }
            ("" | "ai.onnx", "Sum") => return self.chain(name, OpKind::Add, inputs, &outputs),
            ("" | "ai.onnx", "ReduceSumSquare" | "ReduceL2") => {
                let root = op_type == "ReduceL2";
                return self.sum_of_squares(name, root, attrs, inputs, &outputs);
            }
            ("com.microsoft", "Gelu") => OpKind::Gelu,
            ("com.microsoft", "FastGelu") => {
                attrs.set("approximate", Attr::Str("tanh".into()));
                if inputs.get(1).copied().flatten().is_some() {
                    let biased = self.emit(
                        &format!("{name}/bias"),
                        Op::plain(OpKind::Add),
                        inputs[..2].to_vec(),
                        &[format!("{name}:biased")],
                    )?;
                    let op = Op::new(OpKind::Gelu, attrs);
                    return self
                        .emit(name, op, vec![Some(biased[0])], &outputs)
                        .map(drop);
                }
                OpKind::Gelu
            }
            ("com.microsoft", "SkipLayerNormalization" | "SkipSimplifiedLayerNormalization")
            | ("" | "ai.onnx" | "com.microsoft", "SimplifiedLayerNormalization") => {
                op_type.parse()?
            }
            ("" | "ai.onnx", _) => match op_type.parse::<OpKind>() {
                Ok(k)
                    if !k.is_kiln_internal()
                        && !matches!(
                            k,
                            OpKind::SkipLayerNormalization
                                | OpKind::SkipSimplifiedLayerNormalization
                        ) =>
                {
                    k
                }
                _ => return Err(self.unsupported(domain, op_type)),
            },
            _ => return Err(self.unsupported(domain, op_type)),
        };
        self.check_version(kind)?;
        let inputs = self.normalise(kind, &mut attrs, inputs, outputs.len())?;
        let op = Op::new(kind, attrs);
        self.emit(name, op, inputs, &outputs).map(drop)
    }

    /// `ReduceSumSquare` as `ReduceSum(x · x)` and, with `root`, `ReduceL2` as its square
    /// root: ONNX's definitions, written with the ops the rules and kernels know (the L2
    /// normalisation sentence-transformers exports ends in a `ReduceL2`).
    fn sum_of_squares(
        &mut self,
        name: &str,
        root: bool,
        mut attrs: Attrs,
        mut inputs: Vec<Option<ValueId>>,
        outputs: &[String],
    ) -> Res<()> {
        let x = inputs
            .first()
            .copied()
            .flatten()
            .ok_or("input 0 is missing")?;
        let square = self.emit(
            &format!("{name}/square"),
            Op::plain(OpKind::Mul),
            vec![Some(x), Some(x)],
            &[format!("{name}:square")],
        )?;
        inputs[0] = Some(square[0]);
        let inputs = self.normalise(OpKind::ReduceSum, &mut attrs, inputs, 1)?;
        let sum = Op::new(OpKind::ReduceSum, attrs);
        if !root {
            return self.emit(name, sum, inputs, outputs).map(drop);
        }
        let sum_name = format!("{name}:sum_of_squares");
        let total = self.emit(&format!("{name}/sum"), sum, inputs, &[sum_name])?;
        let sqrt = Op::plain(OpKind::Sqrt);
        self.emit(name, sqrt, vec![Some(total[0])], outputs)
            .map(drop)
    }

    fn unsupported(&self, domain: &str, op_type: &str) -> String {
        let domain = if domain.is_empty() { "ai.onnx" } else { domain };
        format!(
            "op `{op_type}` (domain {domain}, opset {}) is not supported by kiln",
            self.opset
        )
    }

    /// Rejects op versions older than the forms kiln implements (legacy attributes, such as
    /// opset 6's `broadcast`, are rejected by [`schema::check_node`]).
    fn check_version(&self, kind: OpKind) -> Res<()> {
        let since = match kind {
            // Before opset 13 these flattened the input to 2-D at `axis` instead of working along it.
            OpKind::Softmax | OpKind::LogSoftmax => 13,
            _ => return Ok(()),
        };
        if self.opset < since {
            return Err(format!("{kind} before opset {since} has different semantics and is not supported (model opset {})", self.opset));
        }
        Ok(())
    }

    /// Rewrites opset-dependent forms into the IR's single form; returns the inputs to keep.
    fn normalise(
        &self,
        kind: OpKind,
        attrs: &mut Attrs,
        mut inputs: Vec<Option<ValueId>>,
        n_outputs: usize,
    ) -> Res<Vec<Option<ValueId>>> {
        use OpKind::*;
        let input1 = inputs.get(1).copied().flatten();
        match kind {
            Cast => {
                let to = dtype_from_onnx(attrs.int("to")? as i32)?;
                attrs.set("to", Attr::Str(to.name().into()));
                attrs.0.remove("saturate");
            }
            QuantizeLinear if attrs.get("output_dtype").is_some() => {
                let code = attrs.int("output_dtype")? as i32;
                if code == 0 {
                    attrs.0.remove("output_dtype");
                } else {
                    attrs.set(
                        "output_dtype",
                        Attr::Str(dtype_from_onnx(code)?.name().into()),
                    );
                }
            }
            _ if kind.list_input_attr().is_some() => {
                // Reduce* before opset 18 (ReduceSum before 13) took axes as an attribute only.
                let attr_only =
                    matches!(kind, ReduceMean | ReduceMax | ReduceMin) && self.opset < 18;
                let key = kind.list_input_attr().expect("matched above");
                if let (false, Some(values)) = (attr_only, self.const_values(input1)) {
                    attrs.set(key, Attr::Ints(values));
                    inputs.truncate(1);
                }
                if kind == Split && attrs.get("split").is_none() && inputs.len() < 2 {
                    attrs.set_default("num_outputs", Attr::Int(n_outputs as i64));
                }
            }
            Dropout => {
                if self
                    .const_ints(inputs.get(2).copied().flatten(), "training_mode")?
                    .is_some_and(|v| v.iter().any(|&x| x != 0))
                {
                    return Err("training-mode dropout is not supported".into());
                }
                attrs.0.remove("seed");
                inputs.truncate(1);
            }
            LayerNormalization | SimplifiedLayerNormalization => {
                attrs.0.remove("stash_type");
            }
            _ => {}
        }
        Ok(inputs)
    }

    /// A variadic Max, Min or Sum as a chain of binary ops (one input is an identity).
    fn chain(
        &mut self,
        name: &str,
        kind: OpKind,
        inputs: Vec<Option<ValueId>>,
        outputs: &[String],
    ) -> Res<()> {
        let mut acc = inputs
            .first()
            .copied()
            .flatten()
            .ok_or("needs at least one input")?;
        if inputs.len() == 1 {
            return self
                .emit(name, Op::plain(OpKind::Identity), vec![Some(acc)], outputs)
                .map(drop);
        }
        for (i, next) in inputs.iter().enumerate().skip(1) {
            let last = i == inputs.len() - 1;
            let out = if last {
                outputs[0].clone()
            } else {
                format!("{name}:partial{i}")
            };
            let node = if last {
                name.to_string()
            } else {
                format!("{name}/{i}")
            };
            acc = self.emit(&node, Op::plain(kind), vec![Some(acc), *next], &[out])?[0];
        }
        Ok(())
    }

    fn constant(&mut self, name: &str, attrs: &Attrs, outputs: &[String]) -> Res<()> {
        let out = outputs.first().ok_or("Constant has no output")?;
        if attrs.0.len() > 1 {
            let names: Vec<&str> = attrs.0.keys().map(String::as_str).collect();
            return Err(format!(
                "Constant has {} value attributes ({}) but takes exactly one",
                names.len(),
                names.join(", ")
            ));
        }
        let (key, value) = attrs
            .0
            .iter()
            .next()
            .ok_or("Constant has no value attribute")?;
        let tensor = match (key.as_str(), value) {
            ("value", Attr::Tensor(t)) => t.clone(),
            ("value_float", Attr::Float(v)) => Tensor::scalar(*v).to_data(),
            ("value_floats", Attr::Floats(v)) => Tensor::from_vec(&[v.len()], v.clone())?.to_data(),
            ("value_int", Attr::Int(v)) => Tensor::scalar(*v).to_data(),
            ("value_ints", Attr::Ints(v)) => Tensor::from_vec(&[v.len()], v.clone())?.to_data(),
            (k, _) => return Err(format!("Constant attribute `{k}` is not supported")),
        };
        let id = self
            .graph
            .add_constant(out, tensor)
            .map_err(|e| format!("node `{name}`: {e}"))?;
        self.names.insert(out.clone(), id);
        Ok(())
    }

    fn attr(&mut self, a: &AttributeProto) -> Res<Attr> {
        let ty = AttributeType::try_from(a.r#type.unwrap_or(0)).unwrap_or(AttributeType::Undefined);
        let text =
            |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string());
        Ok(match ty {
            AttributeType::Float => Attr::Float(a.f.unwrap_or(0.0)),
            AttributeType::Int => Attr::Int(a.i.unwrap_or(0)),
            AttributeType::String => Attr::Str(text(a.s.as_deref().unwrap_or(&[]))?),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Tensor => Attr::Tensor(tensor_from_proto(
                a.t.as_ref().ok_or("tensor attribute has no tensor")?,
                &mut self.external,
            )?),
            other => {
                return Err(format!(
                    "attributes of type {} are not supported",
                    other.as_str_name()
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::{
        tensor_shape_proto, type_proto, GraphProto, OperatorSetIdProto, TensorShapeProto, TypeProto,
    };
    use super::*;

    fn value(name: &str, dims: &[i64]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&d| tensor_shape_proto::Dimension {
                value: Some(dimension::Value::DimValue(d)),
                ..Default::default()
            })
            .collect();
        ValueInfoProto {
            name: Some(name.into()),
            r#type: Some(TypeProto {
                value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                    elem_type: Some(1),
                    shape: Some(TensorShapeProto { dim }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn node(op: &str, inputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto {
            name: Some("n".into()),
            op_type: Some(op.into()),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec!["y".into()],
            attribute: attrs,
            ..Default::default()
        }
    }

    fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Int as i32),
            i: Some(v),
            ..Default::default()
        }
    }

    fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::Float as i32),
            f: Some(v),
            ..Default::default()
        }
    }

    fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: Some(name.into()),
            r#type: Some(AttributeType::String as i32),
            s: Some(prost::bytes::Bytes::copy_from_slice(v.as_bytes())),
            ..Default::default()
        }
    }

    /// A model of one node over inputs `a` and `b` (f32[2, 3]) at `opset` (none if `None`).
    fn model(n: NodeProto, opset: Option<i64>) -> ModelProto {
        ModelProto {
            opset_import: opset
                .map(|v| OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(v),
                })
                .into_iter()
                .collect(),
            graph: Some(GraphProto {
                node: vec![n],
                input: vec![value("a", &[2, 3]), value("b", &[2, 3])],
                output: vec![value("y", &[])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn import(n: NodeProto, opset: Option<i64>) -> Res<Graph> {
        import_model(&model(n, opset), Path::new("."))
    }

    #[test]
    fn well_formed_nodes_import() {
        import(node("Add", &["a", "b"], vec![]), Some(18)).unwrap();
        import(node("Concat", &["a", "b"], vec![int("axis", 1)]), Some(18)).unwrap();
        // A trailing empty name is an absent optional input, not an extra one.
        import(node("Relu", &["a", ""], vec![]), Some(18)).unwrap();
    }

    #[test]
    fn extra_inputs_are_an_error_naming_the_node() {
        let e = import(node("Add", &["a", "b", "a"], vec![]), Some(18)).unwrap_err();
        assert_eq!(e, "node `n` (Add): has 3 inputs but Add takes 2 (opset 18)");
        let e = import(node("Relu", &["a", "b"], vec![]), Some(18)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Relu): has 2 inputs but Relu takes 1 (opset 18)"
        );
        // Squeeze's axes input only exists from opset 13.
        let e = import(node("Squeeze", &["a", "b"], vec![]), Some(11)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Squeeze): has 2 inputs but Squeeze takes 1 (opset 11)"
        );
    }

    #[test]
    fn duplicate_attributes_are_an_error() {
        let n = node("Concat", &["a", "b"], vec![int("axis", 0), int("axis", 1)]);
        let e = import(n, Some(18)).unwrap_err();
        assert_eq!(e, "node `n` (Concat): attribute `axis` is given twice");
    }

    #[test]
    fn a_model_without_a_default_opset_is_an_error() {
        let e = import(node("Add", &["a", "b"], vec![]), None).unwrap_err();
        assert_eq!(
            e,
            "the model has no opset_import for the default domain (ai.onnx)"
        );
    }

    #[test]
    fn attributes_of_the_wrong_type_are_an_error() {
        let n = node("Concat", &["a", "b"], vec![float("axis", 1.0)]);
        let e = import(n, Some(18)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Concat): attribute `axis` is FLOAT but must be INT"
        );
        let n = node("Softmax", &["a"], vec![string("axis", "1")]);
        let e = import(n, Some(18)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Softmax): attribute `axis` is STRING but must be INT"
        );
        let n = node("Gemm", &["a", "b"], vec![int("alpha", 2), int("transB", 1)]);
        let e = import(n, Some(18)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Gemm): attribute `alpha` is INT but must be FLOAT"
        );
    }

    #[test]
    fn missing_required_and_unknown_attributes_are_errors() {
        let e = import(node("Concat", &["a", "b"], vec![]), Some(18)).unwrap_err();
        assert_eq!(e, "node `n` (Concat): required attribute `axis` is missing");
        let e = import(node("Cast", &["a"], vec![]), Some(18)).unwrap_err();
        assert_eq!(e, "node `n` (Cast): required attribute `to` is missing");
        // Opset 6's Clip took its bounds as attributes, which kiln would ignore.
        let n = node("Clip", &["a"], vec![float("min", 0.0), float("max", 1.0)]);
        let e = import(n, Some(6)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Clip): attribute `max` is not one kiln's Clip takes at opset 6"
        );
        let n = node("Add", &["a", "b"], vec![int("broadcast", 1)]);
        assert!(import(n, Some(6)).unwrap_err().contains("`broadcast`"));
    }

    #[test]
    fn a_constant_takes_one_value_and_no_inputs() {
        let mut n = node(
            "Constant",
            &[],
            vec![float("value_float", 1.0), int("value_int", 2)],
        );
        let e = import(n.clone(), Some(18)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Constant): Constant has 2 value attributes (value_float, value_int) but takes exactly one"
        );
        n.attribute.pop();
        n.input = vec!["a".into()];
        let e = import(n, Some(18)).unwrap_err();
        assert_eq!(
            e,
            "node `n` (Constant): has 1 inputs but Constant takes 0 (opset 18)"
        );
    }
}
