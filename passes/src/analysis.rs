//! The e-class analysis: the static type (dtype, symbolic shape, symbolic integer values) of
//! every e-class, from the IR's shape inference, and the values of small constants, so rule
//! conditions can ask about shapes, dtypes and constant values.

use crate::lang::Node;
use egg::{Analysis, DidMerge, EGraph, Id};
use kiln_ir::infer::infer_outputs;
use kiln_ir::{Tensor, TensorData, ValueType};
use std::collections::HashMap;

/// Constants with at most this many elements have their values in the analysis.
pub const MAX_CONSTANT_VALUES: usize = 64;

/// The e-graph type used by kiln's passes.
pub type KilnEGraph = EGraph<Node, KilnAnalysis>;

/// Analysis state: the graph's constants and input types, which leaves refer to.
#[derive(Default, Debug)]
pub struct KilnAnalysis {
    /// Constant data by index (`Node::Const(i)`), held by reference.
    pub constants: Vec<(String, TensorData)>,
    /// Input types by name.
    pub inputs: HashMap<String, ValueType>,
    /// Constants made by folding, by op token and input classes, so a rule that applies again
    /// reuses its constant instead of adding a new one each time.
    pub folded: HashMap<(String, Vec<Id>), Id>,
}

/// What is known about one e-class.
#[derive(Clone, Debug, Default)]
pub struct ClassData {
    /// The types of the outputs of the class's op (output 0 is the class's own value);
    /// empty when the class is ill-typed or an absent input.
    pub types: Vec<ValueType>,
    /// Row-major values (as f64) of a small constant.
    pub value: Option<Vec<f64>>,
}

impl ClassData {
    /// The type of the class's value, if it is well typed.
    pub fn ty(&self) -> Option<&ValueType> {
        self.types.first()
    }
}

impl KilnAnalysis {
    /// Adds a constant and returns its e-node. A small constant (at most
    /// [`MAX_CONSTANT_VALUES`] elements) equal to one added before is that one's node, so
    /// that the many copies of `0`, `1` or `[-1]` an exporter writes (torch's legacy exporter
    /// gives every `Slice` its own `axes` and `steps`) are one class, as a pattern that names
    /// a value twice needs.
    pub fn add_constant(&mut self, name: &str, data: TensorData) -> Node {
        if data.len() <= MAX_CONSTANT_VALUES {
            if let Some(c) = self.constants.iter().position(|(_, d)| *d == data) {
                return Node::Const(c as u32);
            }
        }
        self.constants.push((name.to_string(), data));
        Node::Const(self.constants.len() as u32 - 1)
    }
}

impl Analysis<Node> for KilnAnalysis {
    type Data = ClassData;

    fn make(egraph: &mut KilnEGraph, enode: &Node, _id: Id) -> ClassData {
        match enode {
            Node::Input(name) => ClassData {
                types: egraph
                    .analysis
                    .inputs
                    .get(&**name)
                    .cloned()
                    .into_iter()
                    .collect(),
                value: None,
            },
            Node::Const(c) => {
                let data = &egraph.analysis.constants[*c as usize].1;
                let value = (data.len() <= MAX_CONSTANT_VALUES).then(|| {
                    Tensor::from_data(data)
                        .to_f64_array()
                        .iter()
                        .copied()
                        .collect()
                });
                ClassData {
                    types: vec![kiln_ir::infer::constant_type(data)],
                    value,
                }
            }
            Node::Absent => ClassData::default(),
            Node::Op(op, args) => {
                let child_types: Vec<Option<ValueType>> =
                    args.iter().map(|a| egraph[*a].data.ty().cloned()).collect();
                let refs: Vec<Option<&ValueType>> =
                    child_types.iter().map(Option::as_ref).collect();
                ClassData {
                    types: infer_outputs(&op.op, &refs).unwrap_or_default(),
                    value: None,
                }
            }
            Node::Get(i, [x]) => ClassData {
                types: egraph[*x]
                    .data
                    .types
                    .get(*i as usize)
                    .cloned()
                    .into_iter()
                    .collect(),
                value: None,
            },
        }
    }

    fn merge(&mut self, a: &mut ClassData, b: ClassData) -> DidMerge {
        let mut changed_a = false;
        if a.types.len() < b.types.len() {
            // A multi-output op joined the class: keep the longer list (output 0 agrees).
            a.types = b.types.clone();
            changed_a = true;
        }
        if a.value.is_none() && b.value.is_some() {
            a.value = b.value.clone();
            changed_a = true;
        }
        let changed_b = b.types.len() < a.types.len() || (b.value.is_none() && a.value.is_some());
        DidMerge(changed_a, changed_b)
    }
}

/// The e-class id of `id`'s canonical class and a reference to its data.
pub fn data(egraph: &KilnEGraph, id: Id) -> &ClassData {
    &egraph[id].data
}
