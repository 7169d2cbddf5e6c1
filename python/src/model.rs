//! `kiln.compile`, `kiln.load` and [`Model`]: a compiled model run from numpy arrays.

use crate::arrays::{array_bytes, fed, numpy_name, state_array, to_numpy, Fed};
use crate::errors::{input_error, model_error};
use kiln::cache::PlanCache;
use kiln::pipeline::{load_model, Entry, Options, Pipeline};
use kiln_ir::Value;
use kiln_rt::{Input, Program, StateBuffer};
use numpy::{PyUntypedArray, PyUntypedArrayMethods};
use pyo3::exceptions::PyNotImplementedError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The name, dtype and (possibly symbolic) shape of a model's input or output.
#[pyclass(frozen, module = "kiln._kiln", name = "TensorInfo")]
pub struct TensorInfo {
    /// The name runs are fed or return it by.
    #[pyo3(get)]
    name: String,
    /// Its numpy dtype name (`float32`, `int64`, ...).
    #[pyo3(get)]
    dtype: &'static str,
    /// Each dim: an int when fixed, else its symbol (`batch`, `seq`, `past+1`).
    dims: Vec<Result<i64, String>>,
}

#[pymethods]
impl TensorInfo {
    /// The shape: a tuple of ints (fixed dims) and strings (symbolic ones).
    #[getter]
    fn shape<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items: Vec<Bound<'py, PyAny>> = self
            .dims
            .iter()
            .map(|d| match d {
                Ok(n) => n.into_pyobject(py).map(|o| o.into_any()),
                Err(s) => Ok(PyString::new(py, s).into_any()),
            })
            .collect::<Result<_, std::convert::Infallible>>()
            .expect("ints and strings convert");
        PyTuple::new(py, items)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "TensorInfo(name={:?}, dtype={:?}, shape={})",
            self.name,
            self.dtype,
            self.shape(py)?.repr()?
        ))
    }
}

impl TensorInfo {
    fn of(name: &str, value: &Value) -> TensorInfo {
        TensorInfo {
            name: name.to_string(),
            dtype: numpy_name(value.ty.dtype),
            dims: value
                .ty
                .shape
                .iter()
                .map(|d| d.as_known().ok_or_else(|| d.to_string()))
                .collect(),
        }
    }
}

/// Where a model came from, for `Model.compile_to`.
enum Origin {
    /// A model file, or an entry point of a checkpoint, compiled by this pipeline.
    Compiled(PathBuf, Pipeline, Entry),
    /// An artefact directory of `kiln compile`, loaded.
    Artifact(PathBuf),
}

/// A compiled model: its kernels, plan and weights, ready to run on numpy arrays. Runs may
/// come from several Python threads at once; kiln releases the GIL while its kernels run.
#[pyclass(frozen, module = "kiln._kiln", name = "Model")]
pub struct Model {
    program: Program,
    origin: Origin,
}

/// The threads a run uses: `threads`, or every core when 0.
fn thread_count(threads: usize) -> usize {
    match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// Compiles the model at `model` (an .onnx file, or a Hugging Face checkpoint directory whose
/// `entry` point — `"prefill"`, the default, or `"decode"` for causal models — is compiled;
/// an artefact directory is loaded as it is) with `backend` on `threads` threads (0: every
/// core). Compiled plans are kept in the user's plan cache unless `cache` is false; `fuse`
/// false compiles the graph as exported, without the rewrite rules.
#[pyfunction]
#[pyo3(signature = (model, backend = "llvm", threads = 0, db = None, quantize = None, cache = true, fuse = true, entry = None))]
#[allow(clippy::too_many_arguments)] // Python's keyword arguments
pub fn compile(
    py: Python<'_>,
    model: PathBuf,
    backend: &str,
    threads: usize,
    db: Option<PathBuf>,
    quantize: Option<String>,
    cache: bool,
    fuse: bool,
    entry: Option<&str>,
) -> PyResult<Model> {
    if db.is_some() {
        return Err(PyNotImplementedError::new_err(
            "db=: kiln has no tuning database yet (the autotuner is not built); every kernel runs its template's default schedule",
        ));
    }
    if let Some(q) = quantize {
        return Err(PyNotImplementedError::new_err(format!(
            "quantize={q:?}: kiln has no quantized weight layouts yet"
        )));
    }
    let entry = match entry {
        None | Some("prefill") => Entry::Prefill,
        Some("decode") => Entry::Decode,
        Some(other) => {
            return Err(input_error(format!(
                "entry={other:?}: a checkpoint's entry points are \"prefill\" and \"decode\""
            )))
        }
    };
    if kiln_rt::artifact::is_artifact(&model) {
        return load(py, model, threads);
    }
    if entry == Entry::Decode && !model.is_dir() {
        return Err(input_error(format!(
            "{}: entry=\"decode\" applies to Hugging Face checkpoint directories",
            model.display()
        )));
    }
    let backend = kiln_codegen::backend(backend).map_err(input_error)?;
    let options = Options {
        threads: thread_count(threads),
        backend,
    };
    let cache = if cache { PlanCache::user() } else { None };
    let pipeline = Pipeline::new(options).fused(fuse).cached(cache);
    let program = py
        .allow_threads(|| match model.is_dir() {
            true => Ok(pipeline.compile_checkpoint(&model, &[entry])?.remove(0)),
            false => pipeline.open(&model),
        })
        .map_err(model_error)?;
    Ok(Model {
        program,
        origin: Origin::Compiled(model, pipeline, entry),
    })
}

/// Loads an artefact directory written by `kiln compile` or `Model.compile_to`, to run on
/// `threads` threads (0: every core).
#[pyfunction]
#[pyo3(signature = (artifact, threads = 0))]
pub fn load(py: Python<'_>, artifact: PathBuf, threads: usize) -> PyResult<Model> {
    let threads = thread_count(threads);
    let program = py
        .allow_threads(|| kiln_rt::artifact::load(&artifact, threads))
        .map_err(|e| model_error(format!("{}: {e}", artifact.display())))?;
    Ok(Model {
        program,
        origin: Origin::Artifact(artifact),
    })
}

#[pymethods]
impl Model {
    /// The model's inputs, in declaration order.
    #[getter]
    fn inputs(&self) -> Vec<TensorInfo> {
        self.program
            .inputs()
            .map(|v| TensorInfo::of(&v.name, v))
            .collect()
    }

    /// The model's outputs, in declaration order.
    #[getter]
    fn outputs(&self) -> Vec<TensorInfo> {
        self.program
            .outputs()
            .map(|(name, v)| TensorInfo::of(name, v))
            .collect()
    }

    /// The code generator that compiled the kernels (`llvm`, `cranelift`).
    #[getter]
    fn backend(&self) -> String {
        self.program.plan().target.backend.clone()
    }

    /// Figures of the compilation: kernels, distinct kernels, views, steps left on the
    /// interpreter, ops folded, and the seconds it took to compile (or load).
    #[getter]
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.program.stats();
        let d = PyDict::new(py);
        d.set_item("kernels", s.kernels)?;
        d.set_item("distinct_kernels", s.distinct_kernels)?;
        d.set_item("views", s.views)?;
        d.set_item("interpreted", s.interpreted)?;
        d.set_item("folded", s.folded)?;
        d.set_item("seconds", s.seconds)?;
        Ok(d)
    }

    /// Runs the model on `feeds` (input name to numpy array of the declared dtype) and
    /// returns `{output name: array}` in declaration order, or only the outputs named in
    /// `outputs`. A state input (a KV cache) is read from `feeds` and its new value returned
    /// under its name; `Model.run_in_place` updates it in place instead.
    #[pyo3(signature = (feeds, outputs = None))]
    fn run<'py>(
        &self,
        py: Python<'py>,
        feeds: &Bound<'py, PyDict>,
        outputs: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let fed = self.fed(feeds, &[])?;
        let inputs = inputs_of(&fed);
        let wanted = self.wanted(outputs, true)?;
        let (results, _) = py
            .allow_threads(|| self.program.run_inputs(&inputs))
            .map_err(|e| input_error(e.0))?;
        results_dict(py, results, wanted.as_deref())
    }

    /// Runs the model with each state input (a KV cache) in a caller's array that the run
    /// overwrites with the state's new value, in place: `states` maps each state's name to a
    /// writable, C-contiguous array of its dtype; `feeds` holds the other inputs. Returns the
    /// other outputs as `Model.run` does.
    #[pyo3(signature = (feeds, states, outputs = None))]
    fn run_in_place<'py>(
        &self,
        py: Python<'py>,
        feeds: &Bound<'py, PyDict>,
        states: &Bound<'py, PyDict>,
        outputs: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let state_values = self.state_inputs();
        let state_names: Vec<&str> = state_values.iter().map(|v| v.name.as_str()).collect();
        let fed = self.fed(feeds, &state_names)?;
        let inputs = inputs_of(&fed);
        for key in states.keys() {
            let key: String = key.extract()?;
            if !state_names.contains(&key.as_str()) {
                return Err(input_error(format!(
                    "`{key}` is not a state of the model (its states: {})",
                    list(&state_names)
                )));
            }
        }
        let mut arrays: Vec<(&Value, Bound<'py, PyUntypedArray>)> = vec![];
        for value in &state_values {
            let object = states.get_item(&value.name)?.ok_or_else(|| {
                input_error(format!("missing the array of state `{}`", value.name))
            })?;
            let array = state_array(value, &object)?;
            for (other, seen) in &arrays {
                if seen.as_ptr() == array.as_ptr() || shares_memory(seen, &array)? {
                    return Err(input_error(format!(
                        "states `{}` and `{}` share memory; each needs its own array",
                        other.name, value.name
                    )));
                }
            }
            for (name, given) in &fed {
                if let Fed::InPlace(input, _) = given {
                    if shares_memory(input, &array)? {
                        return Err(input_error(format!(
                            "state `{}` shares memory with input `{name}`, which the run reads while it writes the state",
                            value.name
                        )));
                    }
                }
            }
            arrays.push((value, array));
        }
        let mut lent: HashMap<String, StateBuffer> = HashMap::new();
        for (value, array) in &arrays {
            // SAFETY: the caller lends the array to this run; no two states share memory.
            let bytes = unsafe { array_bytes(array) };
            let buffer = StateBuffer::new(value.ty.dtype, array.shape().to_vec(), bytes)
                .map_err(|e| input_error(format!("state `{}`: {e}", value.name)))?;
            lent.insert(value.name.clone(), buffer);
        }
        let wanted = self.wanted(outputs, false)?;
        let (results, _) = py
            .allow_threads(|| self.program.run_inputs_in_place(&inputs, &mut lent))
            .map_err(|e| input_error(e.0))?;
        drop(lent);
        results_dict(py, results, wanted.as_deref())
    }

    /// Writes the model as an artefact directory (plan, kernels, weights) that
    /// `kiln.load` and the C API load without compiling.
    fn compile_to(&self, py: Python<'_>, directory: PathBuf) -> PyResult<()> {
        match &self.origin {
            Origin::Compiled(path, pipeline, entry) => py.allow_threads(|| {
                let graph = match path.is_dir() {
                    true => kiln_frontends::hf::HfModel::open(path)?.graph(*entry)?,
                    false => load_model(path)?,
                };
                pipeline.write_artifacts(&[(&graph, "")], &directory)?;
                Ok::<(), String>(())
            }),
            Origin::Artifact(from) => copy_tree(from, &directory),
        }
        .map_err(model_error)
    }

    fn __repr__(&self) -> String {
        let names = |it: Vec<TensorInfo>| -> String {
            let n: Vec<String> = it.into_iter().map(|t| t.name).collect();
            n.join(", ")
        };
        format!(
            "kiln.Model(inputs=[{}], outputs=[{}], backend={:?}, kernels={})",
            names(self.inputs()),
            names(self.outputs()),
            self.backend(),
            self.program.stats().kernels
        )
    }
}

impl Model {
    /// The state inputs (KV caches), in [`kiln_rt::plan::Plan::states`] order.
    fn state_inputs(&self) -> Vec<&Value> {
        let inputs: Vec<&Value> = self.program.inputs().collect();
        let states = self.program.plan().states();
        states.iter().map(|&(i, _)| inputs[i]).collect()
    }

    /// The feeds, each checked against its input's declaration; every input but those in
    /// `skip` (states lent separately) must be given, and nothing else.
    fn fed<'py>(
        &self,
        feeds: &Bound<'py, PyDict>,
        skip: &[&str],
    ) -> PyResult<Vec<(String, Fed<'py>)>> {
        let inputs: Vec<&Value> = self.program.inputs().collect();
        let mut given: Vec<(String, Fed<'py>)> = Vec::with_capacity(inputs.len());
        for (key, object) in feeds.iter() {
            let key: String = key
                .extract()
                .map_err(|_| input_error(format!("feed key {key}: not a str")))?;
            let value = inputs
                .iter()
                .find(|v| v.name == key && !skip.contains(&key.as_str()))
                .ok_or_else(|| {
                    let names: Vec<&str> = inputs
                        .iter()
                        .map(|v| v.name.as_str())
                        .filter(|n| !skip.contains(n))
                        .collect();
                    input_error(format!(
                        "unknown input `{key}` (the model's inputs: {})",
                        list(&names)
                    ))
                })?;
            given.push((key, fed(value, &object)?));
        }
        for value in &inputs {
            let name = value.name.as_str();
            if !skip.contains(&name) && !given.iter().any(|(n, _)| n == name) {
                return Err(input_error(format!("missing input `{name}`")));
            }
        }
        Ok(given)
    }

    /// The outputs a run returns: `outputs` checked against the model's (and its states'
    /// new values, when `with_states`), or None for all.
    fn wanted(
        &self,
        outputs: Option<Vec<String>>,
        with_states: bool,
    ) -> PyResult<Option<Vec<String>>> {
        let Some(outputs) = outputs else {
            return Ok(None);
        };
        let mut known: Vec<&str> = self.program.outputs().map(|(n, _)| n).collect();
        if with_states {
            known.extend(self.state_inputs().iter().map(|v| v.name.as_str()));
        }
        for name in &outputs {
            if !known.contains(&name.as_str()) {
                return Err(input_error(format!(
                    "unknown output `{name}` (the model's outputs: {})",
                    list(&known)
                )));
            }
        }
        Ok(Some(outputs))
    }
}

/// A run's inputs over the fed arrays.
fn inputs_of<'a>(fed: &'a [(String, Fed<'_>)]) -> HashMap<&'a str, Input<'a>> {
    fed.iter()
        .map(|(name, f)| (name.as_str(), f.input()))
        .collect()
}

/// `names` as `a, b, c` (or `none`).
fn list(names: &[&str]) -> String {
    match names.is_empty() {
        true => "none".to_string(),
        false => names.join(", "),
    }
}

/// A run's results as `{name: array}`: all, in declaration order, or those `wanted`, in its
/// order.
fn results_dict<'py>(
    py: Python<'py>,
    results: Vec<(String, kiln_ir::Tensor)>,
    wanted: Option<&[String]>,
) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    match wanted {
        None => {
            for (name, tensor) in results {
                dict.set_item(name, to_numpy(py, tensor))?;
            }
        }
        Some(wanted) => {
            let mut by_name: HashMap<String, kiln_ir::Tensor> = results.into_iter().collect();
            for name in wanted {
                if dict.contains(name)? {
                    continue; // named twice: the one array, under its name
                }
                if let Some(tensor) = by_name.remove(name) {
                    dict.set_item(name, to_numpy(py, tensor))?;
                }
            }
        }
    }
    Ok(dict)
}

/// True if numpy says two arrays may overlap in memory.
fn shares_memory(a: &Bound<'_, PyUntypedArray>, b: &Bound<'_, PyUntypedArray>) -> PyResult<bool> {
    let numpy = a.py().import("numpy")?;
    numpy.call_method1("shares_memory", (a, b))?.extract()
}

/// Copies the directory tree `from` to `to` (an artefact written elsewhere).
fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::create_dir_all(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let entries = std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("{}: {e}", from.display()))?;
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        if source.is_dir() {
            copy_tree(&source, &target)?;
        } else {
            std::fs::copy(&source, &target).map_err(|e| format!("{}: {e}", target.display()))?;
        }
    }
    Ok(())
}
