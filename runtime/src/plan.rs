//! [`Plan`]: a compiled model as data — the values it computes, the constants it reads, the
//! kernels it calls and the steps that call them. Code generation makes a plan; an artefact
//! stores it (`plan.json`); [`crate::Program`] runs it. Nothing in a plan refers to a graph,
//! a template or a code generator: loading one is reading it, never lowering again.
//!
//! Values are numbered (a [`ValueIndex`] indexes [`Plan::values`]); each is a model input, a
//! constant, or the result of exactly one step. Sizes that depend on the model's symbolic
//! dims (batch, sequence) are [`Dim`] polynomials, evaluated from the bound symbols at each
//! run, so one plan serves every length.
//!
//! ```
//! use kiln_rt::plan::{Plan, FORMAT_VERSION};
//! let plan = Plan::default();
//! assert_eq!(plan.format, FORMAT_VERSION);
//! let text = plan.to_json();
//! assert_eq!(Plan::from_json(&text).unwrap().format, FORMAT_VERSION);
//! ```

use kiln_ir::{DType, Dim, Op, Value};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The plan format this kiln reads and writes; bumped whenever the meaning of a field changes.
pub const FORMAT_VERSION: u32 = 4;

/// The index of a value in [`Plan::values`].
pub type ValueIndex = usize;

/// A compiled model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT_VERSION`] of the kiln that wrote it.
    pub format: u32,
    /// The code generator of the kernels and the CPU features their code needs.
    pub target: Target,
    /// Every value a step reads or writes, with its declared dtype and (symbolic) shape.
    pub values: Vec<Value>,
    /// The model's inputs, in declaration order.
    pub inputs: Vec<ValueIndex>,
    /// The model's outputs (name, value), in declaration order. An output named like an
    /// input is that input's new value: a state (a KV cache) that [`crate::Program`] updates
    /// in place ([`Plan::states`]).
    pub outputs: Vec<(String, ValueIndex)>,
    /// The constants steps read: weights in the layout their kernel reads them, and the
    /// graph's own constants that steps read as values.
    pub constants: Vec<Constant>,
    /// The distinct kernels, in the order their code is looked up.
    pub kernels: Vec<KernelInfo>,
    /// What a run does, in order.
    pub steps: Vec<Step>,
    /// How each step was compiled, for `kiln explain` and profiles (one per step).
    pub reports: Vec<Report>,
    /// Figures of the compilation.
    pub stats: CompileStats,
}

impl Default for Plan {
    /// An empty plan of this format.
    fn default() -> Plan {
        Plan {
            format: FORMAT_VERSION,
            target: Target::default(),
            values: vec![],
            inputs: vec![],
            outputs: vec![],
            constants: vec![],
            kernels: vec![],
            steps: vec![],
            reports: vec![],
            stats: CompileStats::default(),
        }
    }
}

/// Where a plan's kernels run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Target {
    /// The code generator (`cranelift`, `llvm`).
    pub backend: String,
    /// The CPU level or model the code was compiled for (`x86-64-v4`; empty when the
    /// backend compiles for the host as it is).
    pub cpu: String,
    /// The CPU features the code needs, as [`crate::cpu`] names them (`avx2`, `avx512f`).
    pub features: Vec<String>,
}

/// One constant: its bytes live in the program's weights (a memory-mapped `weights.bin`, or
/// memory the compiler filled), exactly as the kernels read them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constant {
    /// Element type of the stored bytes.
    pub dtype: DType,
    /// The stored shape (for a packed layout, the logical shape it packs).
    pub shape: Vec<usize>,
    /// How the bytes are arranged: [`DENSE`] for row-major, else the name of the packing
    /// (`gemm.b_panels.nr16`), owned by the template that reads it.
    pub layout: String,
    /// The value of the plan this constant is, when steps read it as a value (dense only).
    pub value: Option<ValueIndex>,
    /// Byte offset in the weights file (64-byte aligned).
    pub offset: u64,
    /// Byte length.
    pub bytes: u64,
}

/// The layout tag of a dense row-major constant.
pub const DENSE: &str = "dense";

/// A distinct kernel: the symbol its code is found under and how it was made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// The exported symbol.
    pub symbol: String,
    /// The template that built it (`gemm`, `attention`).
    pub template: String,
    /// The template's version when it built the kernel.
    pub template_version: u32,
    /// Buffer pointers the kernel takes.
    pub buffers: usize,
    /// Size arguments the kernel takes (the parallel range included).
    pub sizes: usize,
    /// The schedule it was built with, every parameter of the template by its namespaced name
    /// (`gemm.mr`).
    pub schedule: BTreeMap<String, i64>,
    /// Where the schedule came from (`heuristic`, a tuning database).
    pub schedule_source: String,
    /// A hash of the kernel's code (its KIR), in hex.
    pub fingerprint: String,
}

/// One step of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Step {
    /// A call of a compiled kernel.
    Kernel(KernelStep),
    /// A reshape: `output` is `input`'s buffer under another shape.
    View {
        /// The value reshaped.
        input: ValueIndex,
        /// The view.
        output: ValueIndex,
        /// The node, named in errors.
        node: String,
    },
    /// A node no kernel covers, run by the reference interpreter.
    Interp(InterpStep),
}

/// A kernel call: which kernel, what each buffer is bound to, and its sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelStep {
    /// The kernel, an index into [`Plan::kernels`].
    pub kernel: usize,
    /// What each kernel buffer is bound to, in buffer order.
    pub args: Vec<Binding>,
    /// Size arguments 2.. of the kernel, as polynomials in the model's symbols.
    pub sizes: Vec<Dim>,
    /// Extent of the parallel axis: size arguments 0 and 1 are a sub-range of it.
    pub parallel: Dim,
    /// For kernels that read i64 indices (gathers, cache writes, cache lengths): the range
    /// every index must lie in, checked before the call.
    pub index_check: Option<IndexCheck>,
    /// The node the step computes, named in errors.
    pub node: String,
}

/// The ranges `low..high` (polynomials in the model's symbols) that the elements of an i64
/// value a kernel indexes with must lie in, so that no index reaches outside a buffer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IndexCheck {
    /// The value holding the indices.
    pub value: ValueIndex,
    /// `(low, high)`: element `i` must lie in `ranges[i % ranges.len()]` (one range for most
    /// kernels; one per component of the index tuples along the last axis for GatherND).
    pub ranges: Vec<(Dim, Dim)>,
    /// What the indices address, named in the error (`a table of 50257 rows`), its sizes
    /// evaluated for the run.
    pub what: Vec<Phrase>,
}

/// A piece of a description that names sizes: text, or a size written as its value for the
/// run (`capacity` as `129`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Phrase {
    /// Words.
    Text(String),
    /// A size, evaluated with the run's bindings (written as it is where a symbol is unbound).
    Size(Dim),
}

/// `phrases` written out with the sizes of `bindings`.
///
/// ```
/// use kiln_ir::Dim;
/// use kiln_rt::plan::{describe, Phrase};
/// let what = [Phrase::Text("a cache of ".into()), Phrase::Size(Dim::sym("capacity"))];
/// let bindings = [("capacity".to_string(), 129)].into_iter().collect();
/// assert_eq!(describe(&what, &bindings), "a cache of 129");
/// ```
pub fn describe(phrases: &[Phrase], bindings: &kiln_ir::interp::Bindings) -> String {
    phrases
        .iter()
        .map(|p| match p {
            Phrase::Text(t) => t.clone(),
            Phrase::Size(d) => d
                .eval(bindings)
                .map_or_else(|| d.to_string(), |v| v.to_string()),
        })
        .collect()
}

/// What a kernel buffer is bound to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Binding {
    /// A value the kernel reads.
    Read(ValueIndex),
    /// A value the kernel writes (placed in the arena).
    Write(ValueIndex),
    /// A constant, an index into [`Plan::constants`].
    Constant(usize),
    /// Zeroed scratch space of this many f32 elements, private to one call.
    Scratch(Dim),
    /// A buffer the kernel updates in place: the buffer of `input` (a state the caller
    /// lends, or an intermediate of the arena no later step reads as it was), which is from
    /// then on the value `output` (`output` may be `input` itself).
    Update {
        /// The value whose buffer is written.
        input: ValueIndex,
        /// The value the buffer holds after the step.
        output: ValueIndex,
    },
}

/// A node run by the reference interpreter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InterpStep {
    /// The node's name.
    pub node: String,
    /// What it computes.
    pub op: Op,
    /// Its inputs (`None`: an optional input left out).
    pub inputs: Vec<Option<ValueIndex>>,
    /// Its outputs.
    pub outputs: Vec<ValueIndex>,
}

/// How one step was compiled.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// What kind of step it is (`gemm`, `attention`, `view`, `interp`).
    pub kind: String,
    /// The nodes it covers, as `name (Op)`.
    pub nodes: Vec<String>,
    /// Why it runs on the interpreter instead of a kernel (None for kernels and views).
    pub fallback: Option<String>,
    /// The kernel it calls, an index into [`Plan::kernels`].
    pub kernel: Option<usize>,
}

/// Figures of a compilation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompileStats {
    /// Kernel steps.
    pub kernels: usize,
    /// Distinct kernels compiled for them (groups of equal shapes share one).
    pub distinct_kernels: usize,
    /// Nodes run by the reference interpreter.
    pub interpreted: usize,
    /// Reshapes turned into views.
    pub views: usize,
    /// Ops on constants evaluated at compile time.
    pub folded: usize,
    /// Wall time of making the program: compiling it, or loading its artefact, in seconds.
    #[serde(skip)]
    pub seconds: f64,
}

impl Plan {
    /// The plan as JSON, as an artefact stores it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plans serialise")
    }

    /// A plan read from JSON; an error for unreadable text or a plan of another format.
    pub fn from_json(text: &str) -> Result<Plan, String> {
        #[derive(Deserialize)]
        struct Version {
            format: u32,
        }
        let version: Version = serde_json::from_str(text)
            .map_err(|e| format!("not a kiln plan (no format version): {e}"))?;
        if version.format != FORMAT_VERSION {
            return Err(format!(
                "a plan of format {}, but this kiln reads format {FORMAT_VERSION}; run `kiln compile` again",
                version.format
            ));
        }
        let plan: Plan = serde_json::from_str(text).map_err(|e| format!("unreadable plan: {e}"))?;
        plan.validate()?;
        Ok(plan)
    }

    /// The states: `(input, output)` positions in [`Plan::inputs`] and [`Plan::outputs`] of
    /// each output named like an input, the new value of that input.
    pub fn states(&self) -> Vec<(usize, usize)> {
        self.outputs
            .iter()
            .enumerate()
            .filter_map(|(o, (name, _))| {
                let i = self
                    .inputs
                    .iter()
                    .position(|&v| self.values[v].name == *name)?;
                Some((i, o))
            })
            .collect()
    }

    /// Checks that every index in the plan points at something, so that a damaged plan is an
    /// error at load and never an out-of-bounds access at run time.
    pub fn validate(&self) -> Result<(), String> {
        let values = self.values.len();
        let value = |v: ValueIndex, what: &str| match v < values {
            true => Ok(()),
            false => Err(format!(
                "{what} refers to value {v}, but the plan has {values}"
            )),
        };
        for &v in &self.inputs {
            value(v, "an input")?;
        }
        for (name, v) in &self.outputs {
            value(*v, &format!("output `{name}`"))?;
        }
        for (i, c) in self.constants.iter().enumerate() {
            if let Some(v) = c.value {
                value(v, &format!("constant {i}"))?;
            }
            let elements = c
                .shape
                .iter()
                .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
            if c.layout == DENSE
                && elements.and_then(|n| n.checked_mul(c.dtype.size() as u64)) != Some(c.bytes)
            {
                return Err(format!(
                    "constant {i}: {} bytes for {}{:?}",
                    c.bytes, c.dtype, c.shape
                ));
            }
        }
        if self.reports.len() != self.steps.len() {
            return Err(format!(
                "{} reports for {} steps",
                self.reports.len(),
                self.steps.len()
            ));
        }
        for (s, step) in self.steps.iter().enumerate() {
            let what = format!("step {s}");
            match step {
                Step::Kernel(k) => {
                    let Some(info) = self.kernels.get(k.kernel) else {
                        return Err(format!(
                            "{what} calls kernel {}, which is not listed",
                            k.kernel
                        ));
                    };
                    if info.buffers != k.args.len() || info.sizes != k.sizes.len() + 2 {
                        return Err(format!(
                            "{what} binds {} buffers and {} sizes to kernel `{}`, which takes {} and {}",
                            k.args.len(),
                            k.sizes.len() + 2,
                            info.symbol,
                            info.buffers,
                            info.sizes
                        ));
                    }
                    for arg in &k.args {
                        match arg {
                            Binding::Read(v) | Binding::Write(v) => value(*v, &what)?,
                            Binding::Update { input, output } => {
                                value(*input, &what)?;
                                value(*output, &what)?;
                            }
                            Binding::Constant(c) if *c >= self.constants.len() => {
                                return Err(format!(
                                    "{what} reads constant {c}, which is not listed"
                                ))
                            }
                            _ => {}
                        }
                    }
                    if let Some(check) = &k.index_check {
                        value(check.value, &what)?;
                        if check.ranges.is_empty() {
                            return Err(format!("{what} checks its indices against no range"));
                        }
                    }
                }
                Step::View { input, output, .. } => {
                    value(*input, &what)?;
                    value(*output, &what)?;
                }
                Step::Interp(i) => {
                    for v in i.inputs.iter().flatten().chain(&i.outputs) {
                        value(*v, &what)?;
                    }
                }
            }
        }
        Ok(())
    }
}
