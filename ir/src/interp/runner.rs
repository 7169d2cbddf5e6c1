//! Runs a whole graph on the reference interpreter: binds symbolic dims from the inputs,
//! checks every input against its declared type, evaluates nodes in topological order and
//! frees each intermediate after its last use.

use super::{eval_op, Bindings};
use crate::graph::{Graph, NodeKind, ValueId};
use crate::infer::fmt_shape;
use crate::op::{Op, OpKind};
use crate::Tensor;
use std::collections::HashMap;
use std::fmt;

/// Why a run failed: one line naming the input or node and the problem.
#[derive(Debug, Clone, PartialEq)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

/// Checks the fed inputs against the graph's declared inputs (names, dtypes, ranks, fixed
/// dims) and binds every symbolic dim; a symbol bound to two different sizes is an error.
pub fn bind_symbols(graph: &Graph, feeds: &HashMap<String, Tensor>) -> Result<Bindings, RunError> {
    let inputs: Vec<&crate::Value> = graph.inputs().map(|v| graph.value(v)).collect();
    bind_input_symbols(&inputs, feeds)
}

/// [`bind_symbols`] for a model described by its declared inputs alone (a compiled plan keeps
/// no graph).
pub fn bind_input_symbols(
    inputs: &[&crate::Value],
    feeds: &HashMap<String, Tensor>,
) -> Result<Bindings, RunError> {
    let given = feeds
        .iter()
        .map(|(name, t)| (name.as_str(), (t.dtype(), t.shape())))
        .collect();
    bind_given_shapes(inputs, &given)
}

/// [`bind_input_symbols`] for inputs given as their dtype and shape (input name to both),
/// not as tensors: a run whose states are buffers the caller lends.
pub fn bind_given_shapes(
    inputs: &[&crate::Value],
    given: &HashMap<&str, (crate::DType, &[usize])>,
) -> Result<Bindings, RunError> {
    let mut bindings = Bindings::new();
    let mut bound_by: HashMap<String, String> = HashMap::new();
    let declared: Vec<&str> = inputs.iter().map(|v| v.name.as_str()).collect();
    if let Some(extra) = given.keys().find(|k| !declared.contains(k)) {
        return Err(RunError(format!(
            "input `{extra}` is not an input of the model (inputs: {})",
            declared.join(", ")
        )));
    }
    let mut deferred = vec![];
    for info in inputs {
        let name = &info.name;
        let &(dtype, shape) = given
            .get(name.as_str())
            .ok_or_else(|| RunError(format!("missing input `{name}`")))?;
        if dtype != info.ty.dtype {
            return Err(RunError(format!(
                "input `{name}` is {dtype} but the model expects {}",
                info.ty.dtype
            )));
        }
        let mismatch = || {
            RunError(format!(
                "input `{name}` has shape {shape:?} but the model expects {}",
                fmt_shape(&info.ty.shape)
            ))
        };
        if shape.len() != info.ty.shape.len() {
            return Err(mismatch());
        }
        for (dim, &actual) in info.ty.shape.iter().zip(shape) {
            let actual = actual as i64;
            match (dim.as_known(), dim.symbols().as_slice()) {
                (Some(k), _) if k != actual => return Err(mismatch()),
                (Some(_), _) => {}
                (None, [sym]) if *dim == crate::Dim::sym(sym) => {
                    if *sym == "?" {
                        continue;
                    }
                    match bindings.get(*sym) {
                        Some(&prev) if prev != actual => {
                            return Err(RunError(format!(
                                "input `{name}` binds `{sym}` to {actual} but input `{}` bound it to {prev}",
                                bound_by[*sym]
                            )))
                        }
                        _ => {
                            bindings.insert(sym.to_string(), actual);
                            bound_by.entry(sym.to_string()).or_insert_with(|| name.clone());
                        }
                    }
                }
                _ => deferred.push((name.clone(), dim.clone(), actual)),
            }
        }
    }
    // A symbol that only appears plus other, bound, symbols (`past` in a mask of `past+seq`
    // columns) is solved for.
    for (name, dim, actual) in &deferred {
        let unbound: Vec<&str> = dim
            .symbols()
            .into_iter()
            .filter(|s| !bindings.contains_key(*s))
            .collect();
        let [sym] = unbound[..] else { continue };
        let at = |x: i64| {
            let mut b = bindings.clone();
            b.insert(sym.to_string(), x);
            dim.eval(&b)
        };
        let (Some(base), Some(one), Some(two)) = (at(0), at(1), at(2)) else {
            continue;
        };
        if one - base == 1 && two - base == 2 {
            let value = actual - base;
            if value < 0 {
                return Err(RunError(format!(
                    "input `{name}`: dim `{dim}` is {actual}, which leaves `{sym}` negative"
                )));
            }
            bindings.insert(sym.to_string(), value);
        }
    }
    for (name, dim, actual) in deferred {
        if !dim.is_unknown() && dim.eval(&bindings).is_some_and(|v| v != actual) {
            return Err(RunError(format!(
                "input `{name}`: dim `{dim}` should be {} but is {actual}",
                dim.eval(&bindings).unwrap_or(0)
            )));
        }
    }
    Ok(bindings)
}

/// Runs `graph` on `feeds` (input name to value) and returns the outputs in declaration order.
pub fn run(
    graph: &Graph,
    feeds: &HashMap<String, Tensor>,
) -> Result<Vec<(String, Tensor)>, RunError> {
    let bindings = bind_symbols(graph, feeds)?;
    let order = graph.topo_order();
    // How many more reads each value has, so intermediates can be dropped early.
    let mut remaining: HashMap<ValueId, usize> = HashMap::new();
    for &n in &order {
        for v in graph.node(n).inputs.iter().flatten() {
            *remaining.entry(*v).or_insert(0) += 1;
        }
    }
    for (_, v) in graph.outputs() {
        *remaining.entry(*v).or_insert(0) += 1;
    }
    let mut values: HashMap<ValueId, Tensor> = HashMap::new();
    for n in order {
        let node = graph.node(n);
        let results = match &node.kind {
            NodeKind::Input => vec![feeds[&node.outputs[0].name].clone()],
            NodeKind::Constant(data) => vec![Tensor::from_data(data)],
            NodeKind::Op(op) => {
                let args: Vec<Option<&Tensor>> = node
                    .inputs
                    .iter()
                    .map(|i| i.and_then(|v| values.get(&v)))
                    .collect();
                check_outputs_fit(node, &bindings)?;
                let mut out = match eval_op(op, &args, &bindings) {
                    Err(e) if op.kind == OpKind::Reshape => {
                        open_empty_reshape(op, &args, &node.outputs[0], &bindings).ok_or(e)
                    }
                    result => result,
                }
                .map_err(|e| RunError(format!("node `{}` ({}): {e}", node.name, op.kind)))?;
                if out.len() < node.outputs.len() {
                    return Err(RunError(format!(
                        "node `{}` ({}): produced {} outputs, {} declared",
                        node.name,
                        op.kind,
                        out.len(),
                        node.outputs.len()
                    )));
                }
                out.truncate(node.outputs.len());
                for (t, declared) in out.iter().zip(&node.outputs) {
                    check_declared(t, declared, &bindings).map_err(|e| {
                        RunError(format!(
                            "node `{}` ({}): output `{}` {e}",
                            node.name, op.kind, declared.name
                        ))
                    })?;
                }
                out
            }
        };
        for v in node.inputs.iter().flatten() {
            let left = remaining.get_mut(v).expect("counted above");
            *left -= 1;
            if *left == 0 {
                values.remove(v);
            }
        }
        for (output, t) in results.into_iter().enumerate() {
            let id = ValueId { node: n, output };
            if remaining.get(&id).copied().unwrap_or(0) > 0 {
                values.insert(id, t);
            }
        }
    }
    Ok(graph
        .outputs()
        .iter()
        .map(|(name, v)| (name.clone(), values[v].clone()))
        .collect())
}

/// Errors if the outputs `node` is about to compute (as their inferred shapes say, where the
/// bindings determine them) need more memory than is available: called before evaluating a
/// node, by this runner and by the compiled runtime's interpreter steps.
pub fn check_outputs_fit(node: &crate::Node, bindings: &Bindings) -> Result<(), RunError> {
    let what = match node.op() {
        Some(op) => format!("node `{}` ({})", node.name, op.kind),
        None => format!("node `{}`", node.name),
    };
    check_results_fit(&what, node.outputs.iter(), bindings)
}

/// [`check_outputs_fit`] for the declared `outputs` of the step `what` names.
pub fn check_results_fit<'a>(
    what: &str,
    outputs: impl Iterator<Item = &'a crate::Value>,
    bindings: &Bindings,
) -> Result<(), RunError> {
    let mut total = Some(0usize);
    for out in outputs {
        let shape: Option<Vec<usize>> = out
            .ty
            .shape
            .iter()
            .map(|d| d.eval(bindings).and_then(|v| usize::try_from(v).ok()))
            .collect();
        if let Some(shape) = shape {
            let bytes = crate::host::bytes_of(&shape, out.ty.dtype.size());
            total = total.zip(bytes).and_then(|(t, b)| t.checked_add(b));
        }
    }
    crate::host::check_fits(total, what).map_err(RunError)
}

/// The result of a Reshape that the concrete shapes leave open: an empty input and a target
/// with a -1 beside a 0 (`[1, 0, -1, 16]` of `[1, 0, 64]`), which any size fits. The -1 then
/// takes the size shape inference resolved from the symbolic shapes (`[batch, seq, -1, 16]` of
/// `[batch, seq, 64]` is `[batch, seq, 4, 16]`), as on the compiled path, provided every other
/// target dim agrees with the declared shape. `None` if the declared shape does not settle it.
fn open_empty_reshape(
    op: &Op,
    args: &[Option<&Tensor>],
    declared: &crate::Value,
    bindings: &Bindings,
) -> Option<Vec<Tensor>> {
    let x = args.first().copied().flatten()?;
    let target = args.get(1).copied().flatten()?.to_i64_vec();
    let shape: Vec<usize> = declared
        .ty
        .shape
        .iter()
        .map(|d| d.eval(bindings).and_then(|v| usize::try_from(v).ok()))
        .collect::<Option<_>>()?;
    let allowzero = op.attrs.int("allowzero").ok()? != 0;
    let agrees = target.iter().zip(&shape).enumerate().all(|(i, (&t, &s))| {
        t == -1
            || usize::try_from(t) == Ok(s)
            || (t == 0 && !allowzero && x.shape().get(i) == Some(&s))
    });
    let open = x.is_empty() && target.contains(&-1) && shape.iter().product::<usize>() == 0;
    if !open || !agrees || target.len() != shape.len() {
        return None;
    }
    x.reshape(&shape).ok().map(|t| vec![t])
}

/// Checks a computed value against its statically inferred dtype and shape (dims the
/// bindings determine must match; the error reads "is i64[1, 128] but was inferred as
/// i64[1, seq]").
pub fn check_declared(
    t: &Tensor,
    declared: &crate::Value,
    bindings: &Bindings,
) -> Result<(), String> {
    let ty = &declared.ty;
    let bad = || {
        format!(
            "is {}{:?} but was inferred as {}{}",
            t.dtype(),
            t.shape(),
            ty.dtype,
            fmt_shape(&ty.shape)
        )
    };
    if t.dtype() != ty.dtype || t.shape().len() != ty.shape.len() {
        return Err(bad());
    }
    for (d, &actual) in ty.shape.iter().zip(t.shape()) {
        if !d.is_unknown() && d.eval(bindings).is_some_and(|v| v != actual as i64) {
            return Err(bad());
        }
    }
    Ok(())
}
