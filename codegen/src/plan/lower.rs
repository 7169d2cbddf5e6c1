//! Lowering: turns a kernel group into a template instance ([`Built`]) with the graph values
//! bound to the kernel's inputs and outputs. An error says why no template takes the group;
//! the group then runs on the interpreter and `kiln explain` shows the reason.

use super::group::{Group, GroupKind};
use crate::templates::attention::{self, AttentionSpec};
use crate::templates::decode_attention;
use crate::templates::elementwise::{self, Expr};
use crate::templates::gemm::{self, Bias, ConstantB, Epilogue, MatMulSpec};
use crate::templates::rows::{self, ReduceKind, RowInput, RowOp, RowSpec};
use crate::templates::Built;
use crate::templates::{indices, movement};
use crate::Schedule;
use kiln_ir::infer::norm_axis;
use kiln_ir::{DType, Dim, Graph, Node, NodeKind, OpKind, Value, ValueId, ValueType};
use kiln_rt::plan::Phrase;

/// A group lowered to a kernel.
#[derive(Clone, Debug)]
pub(super) struct Lowered {
    /// The template instance.
    pub built: Built,
    /// The graph values bound to the template's inputs, in its order (`None`: not bound).
    pub inputs: Vec<Option<ValueId>>,
    /// The graph values bound to its outputs (`None`: an output the graph does not read).
    pub outputs: Vec<Option<ValueId>>,
    /// For kernels that index with an i64 input: which input, and the range its elements
    /// must lie in.
    pub index_check: Option<IndexRange>,
    /// `(output, input)`: the kernel's output is the input's buffer, updated in place.
    pub in_place: Option<(usize, usize)>,
    /// For a kernel besides the group's main one: its kind and what it does, as reported
    /// (`kiln explain`); `None` for the main kernel.
    pub helper: Option<(GroupKind, &'static str)>,
    /// Values this kernel writes for the group's next kernels that the graph does not have
    /// (decode attention's partials), numbered as outputs of the group's node after its own.
    pub temps: Vec<(ValueId, Value)>,
}

/// The ranges `low..high` the elements of an i64 input must lie in, and what they address.
#[derive(Clone, Debug)]
pub(super) struct IndexRange {
    /// The input, in the template's order.
    pub input: usize,
    /// `(low, high)`: element `i` must lie in `ranges[i % ranges.len()]`
    /// ([`kiln_rt::plan::IndexCheck::ranges`]).
    pub ranges: Vec<(Dim, Dim)>,
    /// What the indices address, for the error (`a table of 50257 rows`).
    pub what: Vec<Phrase>,
}

/// Lowers `group` with the template for its kind: usually one kernel; attention with a KV
/// cache is three (the present key and value as concatenations, then the attention).
/// `schedule` is the group's schedule, resolved by its template's space (for templates
/// without one, it sets `lanes` only, the backend's widest vector).
pub(super) fn lower(
    graph: &Graph,
    group: &Group,
    schedule: &Schedule,
) -> Result<Vec<Lowered>, String> {
    for &v in group.inputs.iter().chain(&group.outputs) {
        let value = graph.value(v);
        if value.ty.shape.iter().any(Dim::is_unknown) {
            return Err(format!(
                "the shape of `{}` is only known at run time",
                value.name
            ));
        }
    }
    let one = match group.kind {
        GroupKind::MatMul => lower_matmul(graph, group, schedule),
        GroupKind::Rows => lower_rows(graph, group, schedule),
        GroupKind::Elementwise => lower_elementwise(graph, group, schedule),
        GroupKind::Movement
            if sole_node(graph, group).op().map(|o| o.kind) == Some(OpKind::TensorScatter) =>
        {
            return lower_scatter(graph, group, schedule)
        }
        GroupKind::Movement => lower_movement(graph, group, schedule),
        GroupKind::Attention => return lower_attention(graph, group, schedule),
        other => Err(format!("no {} template yet", other.name())),
    };
    one.map(|l| vec![l])
}

/// `` `name` of shape [d0, d1, ..] `` with the dims' sizes of the run.
fn shape_phrase(name: &str, dims: &[Dim]) -> Vec<Phrase> {
    let mut what = vec![text(format!("`{name}` of shape ["))];
    for (i, d) in dims.iter().enumerate() {
        if i > 0 {
            what.push(text(", "));
        }
        what.push(Phrase::Size(d.clone()));
    }
    what.push(text("]"));
    what
}

/// Words of a description.
fn text(words: impl Into<String>) -> Phrase {
    Phrase::Text(words.into())
}

/// The node of a single-node group.
fn sole_node<'g>(graph: &'g Graph, group: &Group) -> &'g Node {
    graph.node(group.nodes[0])
}

/// The symbolic shape of a value.
fn shape(graph: &Graph, v: ValueId) -> Vec<Dim> {
    graph.value(v).ty.shape.clone()
}

/// The values of a constant f32 tensor, if `v` is one.
fn constant_f32(graph: &Graph, v: ValueId) -> Option<Vec<f32>> {
    match &graph.node(v.node).kind {
        NodeKind::Constant(data) if data.dtype() == DType::F32 => {
            Some(bytemuck::pod_collect_to_vec::<u8, f32>(data.bytes()))
        }
        _ => None,
    }
}

/// `v` as a constant B of a GEMM: a constant f32 matrix, or the transpose of one (torch's
/// `Linear` weight `[N, K]`, which imports as `Transpose(W)`), read as it is stored.
fn constant_b(graph: &Graph, v: ValueId) -> Option<ConstantB> {
    let (stored, transposed) = match super::fold::transposed_matrix(graph, v.node) {
        Some(matrix) => (matrix, true),
        None => (v, false),
    };
    match &graph.node(stored.node).kind {
        NodeKind::Constant(data) if data.dtype() == DType::F32 => Some(ConstantB {
            bytes: data.bytes().clone(),
            transposed,
        }),
        _ => None,
    }
}

/// Requires every input of `node` that is present to be f32.
fn require_f32(graph: &Graph, node: &Node) -> Result<(), String> {
    require_f32_values(graph, node.inputs.iter().flatten())
}

/// An error naming the first of `values` that is not f32.
fn require_f32_values<'a>(
    graph: &Graph,
    values: impl IntoIterator<Item = &'a ValueId>,
) -> Result<(), String> {
    for v in values {
        let value = graph.value(*v);
        if value.ty.dtype != DType::F32 {
            return Err(format!(
                "`{}` is {}, kernels take f32",
                value.name, value.ty.dtype
            ));
        }
    }
    Ok(())
}

/// The axis attribute normalised to `0..rank`.
fn axis(node: &Node, rank: usize) -> Result<usize, String> {
    let op = node.op().expect("an op node");
    let a = op.attrs.int("axis")?;
    let r = rank as i64;
    if a < -r || a >= r.max(1) {
        return Err(format!("axis {a} is out of range for rank {rank}"));
    }
    Ok(a.rem_euclid(r.max(1)) as usize)
}

/// Softmax, normalisations and reductions over trailing axes.
fn lower_rows(graph: &Graph, group: &Group, schedule: &Schedule) -> Result<Lowered, String> {
    let node = sole_node(graph, group);
    let op = node.op().expect("rows groups are op nodes");
    require_f32(graph, node)?;
    let x = node.inputs[0].ok_or("X is missing")?;
    let rank = shape(graph, x).len();
    let epsilon = || op.attrs.float("epsilon");
    let (row_op, axis) = match op.kind {
        OpKind::Softmax => (RowOp::Softmax, axis(node, rank)?),
        OpKind::LogSoftmax => (RowOp::LogSoftmax, axis(node, rank)?),
        OpKind::LayerNormalization => (
            RowOp::LayerNorm {
                epsilon: epsilon()?,
            },
            axis(node, rank)?,
        ),
        OpKind::RMSNormalization | OpKind::SimplifiedLayerNormalization => (
            RowOp::RmsNorm {
                epsilon: epsilon()?,
            },
            axis(node, rank)?,
        ),
        OpKind::SkipLayerNormalization | OpKind::SkipSimplifiedLayerNormalization => (
            RowOp::SkipLayerNorm {
                epsilon: epsilon()?,
                rms: op.kind == OpKind::SkipSimplifiedLayerNormalization,
            },
            rank.saturating_sub(1),
        ),
        OpKind::ReduceSum | OpKind::ReduceMean | OpKind::ReduceMax | OpKind::ReduceMin => {
            let kind = match op.kind {
                OpKind::ReduceSum => ReduceKind::Sum,
                OpKind::ReduceMean => ReduceKind::Mean,
                OpKind::ReduceMax => ReduceKind::Max,
                _ => ReduceKind::Min,
            };
            let (axis, kept) = reduced_block(node, rank)?;
            (RowOp::Reduce { kind, kept }, axis)
        }
        other => return Err(format!("{other} is not a row op")),
    };
    // Outputs beyond Y are only supported for the skip norms' sum (output 3).
    let read: Vec<usize> = group
        .outputs
        .iter()
        .filter(|v| v.node == node_id(group))
        .map(|v| v.output)
        .collect();
    let sum_output = read.contains(&3);
    if read.iter().any(|&o| o != 0 && o != 3)
        || (sum_output && !matches!(row_op, RowOp::SkipLayerNorm { .. }))
    {
        return Err("only output 0 (and a skip norm's sum) can come from a kernel".into());
    }
    let inputs: Vec<Option<RowInput>> = node
        .inputs
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.map(|v| match (i, constant_f32(graph, v)) {
                (1.., Some(values)) => RowInput::constant(shape(graph, v), values.into()),
                _ => RowInput::new(shape(graph, v)),
            })
        })
        .collect();
    let built = rows::rows(
        &RowSpec {
            op: row_op,
            inputs,
            axis,
            sum_output,
        },
        schedule,
    )?;
    let n = node_id(group);
    let outputs = (0..node.outputs.len())
        .map(|o| {
            let v = ValueId { node: n, output: o };
            (o == 0 || (o == 3 && sum_output)).then_some(v)
        })
        .collect();
    Ok(kernel(built, node.inputs.clone(), outputs))
}

fn node_id(group: &Group) -> kiln_ir::NodeId {
    group.nodes[0]
}

/// The first reduced axis of a reduction over one block of adjacent axes, and the number of
/// dims after the block (`keepdims` either way).
fn reduced_block(node: &Node, rank: usize) -> Result<(usize, usize), String> {
    let op = node.op().expect("an op node");
    if node.inputs.get(1).is_some_and(|v| v.is_some()) {
        return Err("axes given at run time".into());
    }
    let mut axes: Vec<usize> = match op.attrs.get("axes") {
        Some(_) => op
            .attrs
            .ints("axes")?
            .iter()
            .map(|&a| a.rem_euclid(rank.max(1) as i64) as usize)
            .collect(),
        None if op.attrs.int("noop_with_empty_axes")? == 0 => (0..rank).collect(),
        None => return Err("an empty reduction is a copy".into()),
    };
    axes.sort_unstable();
    axes.dedup();
    let (first, last) = match (axes.first(), axes.last()) {
        (Some(&first), Some(&last)) => (first, last),
        _ => return Err("no axes".into()),
    };
    if axes != (first..=last).collect::<Vec<_>>() {
        return Err(format!("axes {axes:?} are not one block of adjacent axes"));
    }
    Ok((first, rank - 1 - last))
}

/// A lowering with the node's own inputs and first output.
fn simple(built: Built, inputs: Vec<ValueId>, output: ValueId) -> Lowered {
    kernel(
        built,
        inputs.into_iter().map(Some).collect(),
        vec![Some(output)],
    )
}

/// The main kernel of a group with its inputs and outputs bound: no index check, nothing
/// updated in place, no values of its own.
fn kernel(built: Built, inputs: Vec<Option<ValueId>>, outputs: Vec<Option<ValueId>>) -> Lowered {
    Lowered {
        built,
        inputs,
        outputs,
        index_check: None,
        in_place: None,
        helper: None,
        temps: vec![],
    }
}

/// The value of a scalar f32 constant, if `v` is one.
fn scalar_constant(graph: &Graph, v: ValueId) -> Option<f32> {
    let value = graph.value(v);
    let one = value.ty.shape.iter().all(|d| d.is(1));
    match constant_f32(graph, v) {
        Some(data) if one && data.len() == 1 => Some(data[0]),
        _ => None,
    }
}

/// A tree of elementwise ops as one expression; the last node is the root.
fn lower_elementwise(graph: &Graph, group: &Group, schedule: &Schedule) -> Result<Lowered, String> {
    let root = *group.nodes.last().expect("groups are not empty");
    let mut inputs: Vec<ValueId> = vec![];
    let expr = expression(graph, group, root, &mut inputs)?;
    let shapes: Vec<Vec<Dim>> = inputs.iter().map(|&v| shape(graph, v)).collect();
    let dtypes: Vec<DType> = inputs.iter().map(|&v| graph.value(v).ty.dtype).collect();
    let out = ValueId {
        node: root,
        output: 0,
    };
    let built = elementwise::typed_elementwise(
        "elementwise",
        &expr,
        &shapes,
        &dtypes,
        &shape(graph, out),
        graph.value(out).ty.dtype,
        schedule,
    )?;
    Ok(simple(built, inputs, out))
}

/// The expression computing `node`'s output from the group's inputs (collected in `inputs`).
fn expression(
    graph: &Graph,
    group: &Group,
    node: kiln_ir::NodeId,
    inputs: &mut Vec<ValueId>,
) -> Result<Expr, String> {
    let n = graph.node(node);
    let op = n.op().expect("elementwise nodes are ops");
    let mut args = vec![];
    for (port, v) in n.inputs.iter().enumerate() {
        let arg = match v {
            None if op.kind == OpKind::Clip => Expr::Const(if port == 1 {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            }),
            None => return Err(format!("{} input {port} is absent", op.kind)),
            Some(v) if group.nodes.contains(&v.node) => expression(graph, group, v.node, inputs)?,
            Some(v) => match scalar_constant(graph, *v) {
                Some(c) => Expr::Const(c),
                None => {
                    let i = inputs.iter().position(|x| x == v).unwrap_or_else(|| {
                        inputs.push(*v);
                        inputs.len() - 1
                    });
                    Expr::Input(i)
                }
            },
        };
        args.push(arg);
    }
    Ok(Expr::Op(op.clone(), args))
}

/// The i64 values of a constant integer tensor.
fn constant_ints(graph: &Graph, v: Option<ValueId>) -> Result<Option<Vec<i64>>, String> {
    let Some(v) = v else { return Ok(None) };
    match &graph.node(v.node).kind {
        NodeKind::Constant(data) if data.dtype().is_int() => {
            Ok(Some(kiln_ir::Tensor::from_data(data).to_i64_vec()))
        }
        _ => Err(format!(
            "`{}` is only known at run time",
            graph.value(v).name
        )),
    }
}

/// The values of an integer vector known when compiling: a constant's, or the dims of a
/// `SymbolicDims` (polynomials of the model's symbols, bound at run time).
fn dims_of(graph: &Graph, v: ValueId) -> Result<Vec<Dim>, String> {
    if let NodeKind::Op(op) = &graph.node(v.node).kind {
        if op.kind == OpKind::SymbolicDims {
            return Ok(op.attrs.dims("dims")?.to_vec());
        }
    }
    let ints = constant_ints(graph, Some(v))?.expect("a value is given");
    Ok(ints.into_iter().map(Dim::known).collect())
}

/// TensorScatter, a cache write: one kernel writing the update into the cache's buffer in
/// place when the cache is a state (a graph input that only this node reads, whose new value
/// is the output of the same name), else a copy of the cache and then that kernel on the
/// copy.
fn lower_scatter(
    graph: &Graph,
    group: &Group,
    schedule: &Schedule,
) -> Result<Vec<Lowered>, String> {
    let node = sole_node(graph, group);
    let op = node.op().expect("movement groups are op nodes");
    let [Some(cache), Some(update)] = node.inputs[..2] else {
        return Err("TensorScatter takes a cache and an update".into());
    };
    require_f32_values(graph, [&cache, &update])?;
    let indices = node.inputs.get(2).copied().flatten();
    if indices.is_some_and(|i| graph.value(i).ty.dtype != DType::I64) {
        return Err("write indices must be i64".into());
    }
    let (cache_shape, update_shape) = (shape(graph, cache), shape(graph, update));
    let axis = kiln_ir::infer::scatter_axis(&op.attrs, cache_shape.len())?;
    let mode = match op.attrs.str("mode")? {
        "linear" => movement::ScatterMode::Linear,
        "circular" => movement::ScatterMode::Circular,
        other => return Err(format!("mode `{other}`")),
    };
    let out = ValueId {
        node: node_id(group),
        output: 0,
    };
    let name = op.kind.name();
    let built = movement::tensor_scatter(
        name,
        &cache_shape,
        &update_shape,
        axis,
        indices.is_some(),
        mode,
        schedule,
    )?;
    let (capacity, rows) = (&cache_shape[axis], &update_shape[axis]);
    let index_check = indices.map(|_| IndexRange {
        input: 2,
        ranges: vec![(
            Dim::known(0),
            match mode {
                movement::ScatterMode::Linear => &(capacity - rows) + &Dim::known(1),
                movement::ScatterMode::Circular => Dim::known(i64::MAX),
            },
        )],
        what: vec![
            text(format!("writing `{}` (", graph.value(update).name)),
            Phrase::Size(rows.clone()),
            text(format!(
                " rows) into the cache `{}` (",
                graph.value(cache).name
            )),
            Phrase::Size(capacity.clone()),
            text(" rows)"),
        ],
    });
    let graph_name = &graph.value(cache).name;
    let is_state = matches!(graph.node(cache.node).kind, NodeKind::Input)
        && graph
            .outputs()
            .iter()
            .any(|(n, v)| n == graph_name && *v == out)
        && graph.users(cache.node).len() == 1;
    let target = if is_state { cache } else { out };
    let write = Lowered {
        index_check,
        in_place: Some((0, 0)),
        ..kernel(
            built,
            vec![Some(target), Some(update), indices],
            vec![Some(out)],
        )
    };
    if is_state {
        return Ok(vec![write]);
    }
    let copy = movement::concat("Copy", &[cache_shape], 0, DType::F32, schedule)?;
    Ok(vec![simple(copy, vec![cache], out), write])
}

/// Gathers, transpose, concat, split, slice, rotary embedding and the integer sequences.
fn lower_movement(graph: &Graph, group: &Group, schedule: &Schedule) -> Result<Lowered, String> {
    let node = sole_node(graph, group);
    let op = node.op().expect("movement groups are op nodes");
    let id = node_id(group);
    let out = ValueId {
        node: id,
        output: 0,
    };
    let name = op.kind.name();
    match op.kind {
        OpKind::SymbolicDims => {
            let built = indices::symbolic_dims(name, op.attrs.dims("dims")?);
            return Ok(kernel(built, vec![], vec![Some(out)]));
        }
        OpKind::Range => {
            let len = &shape(graph, out)[0];
            let built = indices::range(name, len, graph.value(out).ty.dtype)?;
            return Ok(kernel(built, node.inputs.clone(), vec![Some(out)]));
        }
        _ => {}
    }
    let present: Vec<ValueId> = node.inputs.iter().flatten().copied().collect();
    let data = present.first().copied().ok_or("no input")?;
    let dtype = graph.value(out).ty.dtype;
    if graph.value(data).ty.dtype != dtype {
        return Err(format!(
            "`{}` is {}, its output {dtype}",
            graph.value(data).name,
            graph.value(data).ty.dtype
        ));
    }
    match op.kind {
        OpKind::GatherElements | OpKind::GatherND => {
            let indices = node.inputs[1].ok_or("indices are missing")?;
            if graph.value(indices).ty.dtype != DType::I64 {
                return Err("gather indices must be i64".into());
            }
            let (data_shape, index_shape) = (shape(graph, data), shape(graph, indices));
            let (built, axes) = match op.kind {
                OpKind::GatherND => {
                    if op.attrs.int("batch_dims")? != 0 {
                        return Err("GatherND with batch_dims".into());
                    }
                    let built =
                        movement::gather_nd(name, &data_shape, &index_shape, dtype, schedule)?;
                    let k = index_shape.last().and_then(Dim::as_known).unwrap_or(0) as usize;
                    (built, data_shape[..k].to_vec())
                }
                _ => {
                    let axis = op.attrs.int("axis")?;
                    let built = movement::gather_elements(
                        name,
                        &data_shape,
                        &index_shape,
                        axis,
                        dtype,
                        schedule,
                    )?;
                    let a = norm_axis(axis, data_shape.len())?;
                    (built, vec![data_shape[a].clone()])
                }
            };
            let ranges = axes
                .iter()
                .map(|d| (&Dim::known(0) - d, d.clone()))
                .collect();
            Ok(Lowered {
                index_check: Some(IndexRange {
                    input: 1,
                    ranges,
                    what: shape_phrase(&graph.value(data).name, &data_shape),
                }),
                ..simple(built, vec![data, indices], out)
            })
        }
        OpKind::Gather => {
            let indices = node.inputs[1].ok_or("indices are missing")?;
            if graph.value(indices).ty.dtype != DType::I64 {
                return Err("gather indices must be i64".into());
            }
            let axis = op.attrs.int("axis")?;
            let data_shape = shape(graph, data);
            let built = movement::gather(
                name,
                &data_shape,
                &shape(graph, indices),
                axis,
                dtype,
                schedule,
            )?;
            let rows = data_shape
                .get(axis.rem_euclid(data_shape.len().max(1) as i64) as usize)
                .and_then(Dim::as_known)
                .ok_or("the gathered axis must have a known size")?;
            Ok(Lowered {
                index_check: Some(IndexRange {
                    input: 1,
                    ranges: vec![(Dim::known(-rows), Dim::known(rows))],
                    what: vec![text(format!("a table of {rows} rows"))],
                }),
                ..simple(built, vec![data, indices], out)
            })
        }
        OpKind::Transpose => {
            let rank = shape(graph, data).len();
            let perm: Vec<usize> = match op.attrs.get("perm") {
                Some(_) => op.attrs.ints("perm")?.iter().map(|&p| p as usize).collect(),
                None => (0..rank).rev().collect(),
            };
            let built = movement::transpose(name, &shape(graph, data), &perm, dtype, schedule)?;
            Ok(simple(built, vec![data], out))
        }
        OpKind::Expand => {
            let built = movement::expand(
                name,
                &shape(graph, data),
                &shape(graph, out),
                dtype,
                schedule,
            )?;
            Ok(simple(built, vec![data], out))
        }
        OpKind::Concat => {
            if let Some(v) = present.iter().find(|v| graph.value(**v).ty.dtype != dtype) {
                return Err(format!("`{}` is not {dtype}", graph.value(*v).name));
            }
            let shapes: Vec<Vec<Dim>> = present.iter().map(|&v| shape(graph, v)).collect();
            let built = movement::concat(name, &shapes, op.attrs.int("axis")?, dtype, schedule)?;
            Ok(simple(built, present, out))
        }
        OpKind::Split => {
            let axis = op.attrs.int("axis")?;
            let x = shape(graph, data);
            let a = axis.rem_euclid(x.len().max(1) as i64) as usize;
            let parts: Vec<Dim> = node.outputs.iter().map(|v| v.ty.shape[a].clone()).collect();
            let built = movement::split(name, &x, axis, &parts, dtype, schedule)?;
            let outputs = (0..node.outputs.len())
                .map(|output| Some(ValueId { node: id, output }))
                .collect();
            Ok(kernel(built, vec![Some(data)], outputs))
        }
        OpKind::Slice => {
            let starts = constant_ints(graph, node.inputs[1])?.ok_or("starts are missing")?;
            let ends_value = node
                .inputs
                .get(2)
                .copied()
                .flatten()
                .ok_or("ends are missing")?;
            let ends = dims_of(graph, ends_value)?;
            let axes = constant_ints(graph, node.inputs.get(3).copied().flatten())?;
            let steps = constant_ints(graph, node.inputs.get(4).copied().flatten())?;
            let bounds = movement::SliceBounds {
                starts: &starts,
                ends: &ends,
                axes: axes.as_deref(),
                steps: steps.as_deref(),
            };
            let data_shape = shape(graph, data);
            let built = movement::slice(name, &data_shape, bounds, dtype, schedule)?;
            if ends.iter().all(|e| e.as_known().is_some()) {
                return Ok(simple(built, vec![data], out));
            }
            // A symbolic end must lie between its axis's start and dim, which the runtime
            // checks on the ends' values before the kernel reads (element k is end k).
            let ranges = movement::slice_end_ranges(&data_shape, bounds)?;
            let mut what = vec![text("slicing ")];
            what.extend(shape_phrase(&graph.value(data).name, &data_shape));
            Ok(Lowered {
                index_check: Some(IndexRange {
                    input: 1,
                    ranges,
                    what,
                }),
                ..kernel(built, vec![Some(data), Some(ends_value)], vec![Some(out)])
            })
        }
        OpKind::RopeRotateHalf => {
            require_f32(graph, node)?;
            let [Some(x), Some(cos), Some(sin)] = node.inputs[..] else {
                return Err("RopeRotateHalf takes x, cos and sin".into());
            };
            let built = elementwise::rope_rotate_half(
                name,
                &shape(graph, x),
                &shape(graph, cos),
                &shape(graph, sin),
                schedule,
            )?;
            Ok(simple(built, vec![x, cos, sin], out))
        }
        other => Err(format!("{other} has no movement template")),
    }
}

/// FusedAttention, and ONNX Attention on 4-D inputs. With a KV cache, the present key and
/// value (the cache concatenated with the new keys and values along the sequence) are
/// kernels of their own, and the attention reads them, causal after the cache's length.
fn lower_attention(
    graph: &Graph,
    group: &Group,
    schedule: &Schedule,
) -> Result<Vec<Lowered>, String> {
    let node = sole_node(graph, group);
    let id = node_id(group);
    let op = node.op().expect("attention groups are op nodes");
    // All but nonpad_kv_seqlen (input 6, the i64 key counts).
    require_f32_values(graph, node.inputs.iter().take(6).flatten())?;
    let past = match node.inputs.get(4..6) {
        None | Some([None, None]) => None,
        Some(&[Some(pk), Some(pv)]) if node.outputs.len() == 3 => Some((pk, pv)),
        _ => return Err("a KV cache without both present outputs".into()),
    };
    let lengths = node.inputs.get(6).copied().flatten();
    if let Some(l) = lengths {
        if past.is_some() {
            return Err("nonpad_kv_seqlen with a past key and value".into());
        }
        if graph.value(l).ty.dtype != DType::I64 {
            return Err("nonpad_kv_seqlen must be i64".into());
        }
    }
    let window = |name: &str| match op.kind {
        OpKind::Attention => op.attrs.int(name).unwrap_or(-1),
        _ => -1,
    };
    let causal = op.attrs.int("is_causal")? != 0;
    if window("right_window_size") != -1 || (window("left_window_size") != -1 && !causal) {
        return Err(
            "attention with a right window, or a left window without causal masking".into(),
        );
    }
    let window = usize::try_from(window("left_window_size")).ok();
    if past.is_none() && group.outputs.iter().any(|v| v.output != 0) {
        return Err("attention outputs beyond Y are read".into());
    }
    if op.kind == OpKind::Attention
        && (op.attrs.int("qk_matmul_output_mode").unwrap_or(0) != 0
            || op.attrs.float("softcap").unwrap_or(0.0) != 0.0)
    {
        return Err("attention with softcap or a qk output".into());
    }
    let [Some(q), Some(k), Some(v)] = node.inputs[..3] else {
        return Err("Q, K and V are required".into());
    };
    let mask = node.inputs.get(3).copied().flatten();
    // The cache copies take the movement template's defaults at the attention's lanes.
    let cache_copy = movement::space().defaults(schedule.value("lanes") as u8)?;
    let scale = match op.attrs.get("scale") {
        Some(_) => Some(op.attrs.float("scale")?),
        None => None,
    };
    let mut steps = vec![];
    let (keys, values, cached) = match past {
        None => (k, v, Dim::known(0)),
        Some((pk, pv)) => {
            let present = |output| ValueId { node: id, output };
            for (output, cache, new) in [(1, pk, k), (2, pv, v)] {
                let shapes = [shape(graph, cache), shape(graph, new)];
                if shapes.iter().any(|s| s.len() != 4) {
                    return Err("a KV cache of rank other than 4".into());
                }
                let built = movement::concat("Concat", &shapes, 2, DType::F32, &cache_copy)?;
                steps.push(Lowered {
                    helper: Some((GroupKind::Movement, "cache concatenation")),
                    ..simple(built, vec![cache, new], present(output))
                });
            }
            (present(1), present(2), shape(graph, pk)[2].clone())
        }
    };
    let spec = AttentionSpec {
        q: shape(graph, q),
        k: shape(graph, keys),
        v: shape(graph, values),
        mask: mask.map(|m| shape(graph, m)),
        scale,
        causal: causal.then_some(cached),
        window,
        lengths: lengths.is_some(),
    };
    let skv = shape(graph, keys)[2].clone();
    let index_check = lengths.map(|_| IndexRange {
        input: 4,
        ranges: vec![(Dim::known(0), &skv + &Dim::known(1))],
        what: vec![
            text(format!(
                "the lengths of the cache `{}` (",
                graph.value(keys).name
            )),
            Phrase::Size(skv.clone()),
            text(" keys)"),
        ],
    });
    let y = ValueId {
        node: id,
        output: 0,
    };
    let inputs = vec![Some(q), Some(keys), Some(values), mask, lengths];
    if !decodes(graph, group) {
        let built = attention::attention(&spec, schedule)?;
        steps.push(Lowered {
            index_check,
            ..kernel(built, inputs, vec![Some(y)])
        });
        return Ok(steps);
    }
    let kernels = decode_attention::decode_attention(&spec, schedule)?;
    let partials = ValueId {
        node: id,
        output: node.outputs.len(),
    };
    let temp = Value {
        name: format!("{}.partials", node.name),
        ty: ValueType {
            dtype: DType::F32,
            shape: kernels.partials,
            sym: None,
        },
    };
    steps.push(Lowered {
        index_check,
        temps: vec![(partials, temp)],
        ..kernel(kernels.partial, inputs, vec![Some(partials)])
    });
    steps.push(Lowered {
        helper: Some((GroupKind::Attention, "combine of the key splits")),
        ..simple(kernels.combine, vec![partials], y)
    });
    Ok(steps)
}

/// Whether an attention group lowers to the decode template ([`decode_attention::suits`]:
/// few queries, or a cache read to its filled lengths) rather than the flash kernel.
pub(super) fn decodes(graph: &Graph, group: &Group) -> bool {
    let node = sole_node(graph, group);
    let lengths = node.inputs.get(6).copied().flatten().is_some();
    match node.inputs.first().copied().flatten() {
        Some(q) => shape(graph, q)
            .get(2)
            .is_some_and(|queries| decode_attention::suits(queries, lengths)),
        None => false,
    }
}

/// A GEMM and the bias add, activation and residual add grouped after it.
fn lower_matmul(graph: &Graph, group: &Group, schedule: &Schedule) -> Result<Lowered, String> {
    let head = graph.node(group.nodes[0]);
    let op = head.op().expect("gemm groups start with an op");
    require_f32(graph, head)?;
    let a = head.inputs[0].ok_or("A is missing")?;
    let b = head
        .inputs
        .get(1)
        .copied()
        .flatten()
        .ok_or("B is missing")?;
    let (a_shape, mut b_shape) = (shape(graph, a), shape(graph, b));
    let mut b_constant = constant_b(graph, b);
    let mut epilogue = Epilogue {
        alpha: 1.0,
        bias: None,
        activation: kiln_ir::Activation::None,
        residual: false,
    };
    let mut bias_input = None;
    let bias_of = |v: ValueId, bias_input: &mut Option<ValueId>| match constant_f32(graph, v) {
        Some(values) => Bias::Constant(values),
        None => {
            *bias_input = Some(v);
            Bias::Input
        }
    };
    match op.kind {
        OpKind::MatMul => {}
        OpKind::FusedMatMul => {
            if let Some(bias) = head.inputs.get(2).copied().flatten() {
                epilogue.bias = Some(bias_of(bias, &mut bias_input));
            }
            epilogue.activation = kiln_ir::Activation::parse(op.attrs.str("activation")?)?;
        }
        OpKind::Gemm => {
            if op.attrs.int("transA")? != 0 {
                return Err("Gemm with transA".into());
            }
            if op.attrs.int("transB")? != 0 {
                let b = b_constant
                    .as_mut()
                    .ok_or("Gemm with transB on a run-time B")?;
                b.transposed = !b.transposed;
                b_shape.swap(0, 1);
            }
            epilogue.alpha = op.attrs.float("alpha")?;
            if let Some(c) = head.inputs.get(2).copied().flatten() {
                let n = b_shape.last().cloned();
                if op.attrs.float("beta")? != 1.0
                    || shape(graph, c).last().cloned() != n
                    || shape(graph, c).iter().rev().skip(1).any(|d| !d.is(1))
                {
                    return Err("Gemm's C is not a bias vector with beta 1".into());
                }
                epilogue.bias = Some(bias_of(c, &mut bias_input));
            }
        }
        other => return Err(format!("{other} is not a GEMM")),
    }
    let mut prev = ValueId {
        node: group.nodes[0],
        output: 0,
    };
    let mut residual = None;
    for &n in &group.nodes[1..] {
        let node = graph.node(n);
        let op = node.op().expect("epilogue nodes are ops");
        let other = node.inputs.iter().flatten().find(|v| **v != prev).copied();
        match op.kind {
            OpKind::Add
                if epilogue.bias.is_none()
                    && epilogue.activation == kiln_ir::Activation::None
                    && residual.is_none()
                    && other.is_some_and(|v| {
                        matches!(graph.node(v.node).kind, NodeKind::Constant(_))
                            && shape(graph, v).len() == 1
                    }) =>
            {
                epilogue.bias = Some(bias_of(other.expect("checked"), &mut bias_input));
            }
            OpKind::Add => {
                let r = other.ok_or("a residual add of a value to itself")?;
                epilogue.residual = true;
                residual = Some(r);
            }
            other => {
                epilogue.activation = kiln_ir::Activation::of_op(op)?
                    .ok_or_else(|| format!("{other} cannot be a GEMM epilogue"))?;
            }
        }
        prev = ValueId { node: n, output: 0 };
    }
    if residual.is_some_and(|r| graph.value(r).ty.dtype != DType::F32) {
        return Err("the residual is not f32".into());
    }
    let b_is_constant = b_constant.is_some();
    let built = gemm::matmul(
        &MatMulSpec {
            a: a_shape,
            b: b_shape,
            b_constant,
            epilogue,
        },
        schedule,
    )?;
    // A constant B is packed into the kernel and not read from the graph.
    let mut inputs = vec![Some(a), (!b_is_constant).then_some(b)];
    if let Some(v) = bias_input {
        inputs.push(Some(v));
    }
    if let Some(r) = residual {
        inputs.push(Some(r));
    }
    Ok(kernel(built, inputs, vec![Some(prev)]))
}
