//! `kiln.optimize`, `kiln.explain` and `kiln.rules_check`: the rewrite passes from Python, for
//! prototyping fusion rules in a notebook.

use crate::errors::{model_error, KilnError};
use kiln::pipeline::load_model;
use kiln_codegen::Heuristic;
use kiln_passes::check::{check_rules, CheckOutcome};
use kiln_passes::optimize::{optimize as run_passes, Limits, Report};
use kiln_passes::rules::{builtin_rules, load_rule_file, parse_rules, Rule};
use kiln_rt::plan::Plan;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};
use std::path::PathBuf;

/// A rule source from Python: a path (`os.PathLike`, or a `str` naming an existing file) is a
/// rule file; any other `str` is the text of rules (named `<rules[i]>` in errors).
fn read_rules(sources: &[Bound<'_, PyAny>]) -> PyResult<Vec<Rule>> {
    let mut rules = vec![];
    for (i, source) in sources.iter().enumerate() {
        let file: Option<PathBuf> = match source.downcast::<PyString>() {
            Ok(s) => {
                let path = PathBuf::from(s.to_str()?);
                path.is_file().then_some(path)
            }
            Err(_) => Some(source.extract::<PathBuf>().map_err(|_| {
                KilnError::new_err(format!(
                    "rules[{i}]: a rule file path or rule text, not {source}"
                ))
            })?),
        };
        rules.extend(match file {
            Some(path) => load_rule_file(&path).map_err(KilnError::new_err)?,
            None => parse_rules(&format!("<rules[{i}]>"), source.extract::<&str>()?)
                .map_err(|e| KilnError::new_err(e.to_string()))?,
        });
    }
    Ok(rules)
}

/// What the passes made of a model.
#[pyclass(frozen, module = "kiln._kiln", name = "Optimized")]
pub struct Optimized {
    /// The optimised graph in the IR's text form (`kiln optimize -o`'s output).
    #[pyo3(get)]
    graph: String,
    report: Report,
}

#[pymethods]
impl Optimized {
    /// Each rule that fired, with how many times.
    #[getter]
    fn rules_fired<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counts(
            py,
            self.report
                .rules_fired
                .iter()
                .map(|(k, v)| (k.as_str(), *v)),
        )
    }

    /// Each op kind with its count before the passes.
    #[getter]
    fn ops_before<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counts(
            py,
            self.report.ops_before.iter().map(|(k, v)| (k.name(), *v)),
        )
    }

    /// Each op kind with its count after the passes.
    #[getter]
    fn ops_after<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        counts(
            py,
            self.report.ops_after.iter().map(|(k, v)| (k.name(), *v)),
        )
    }

    /// The cost model's estimate of the graph before the passes, in seconds.
    #[getter]
    fn cost_before(&self) -> f64 {
        self.report.cost_before
    }

    /// The cost model's estimate of the optimised graph, in seconds.
    #[getter]
    fn cost_after(&self) -> f64 {
        self.report.cost_after
    }

    fn __str__(&self) -> String {
        self.graph.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "kiln.Optimized({} rules fired, {} -> {} ops, estimated {:.3} -> {:.3} ms)",
            self.report.rules_fired.values().sum::<usize>(),
            self.report.ops_before.values().sum::<usize>(),
            self.report.ops_after.values().sum::<usize>(),
            self.report.cost_before * 1e3,
            self.report.cost_after * 1e3
        )
    }
}

/// `(name, count)` pairs as a dict.
fn counts<'py, 'a>(
    py: Python<'py>,
    items: impl Iterator<Item = (&'a str, usize)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in items {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// The model at `model` and its optimised graph with the passes' report.
fn run(
    py: Python<'_>,
    model: &std::path::Path,
    rules: Vec<Bound<'_, PyAny>>,
    builtin: bool,
) -> PyResult<(kiln_ir::Graph, Report)> {
    let rules =
        kiln::rule_set::rule_set(builtin, read_rules(&rules)?).map_err(KilnError::new_err)?;
    py.allow_threads(|| {
        let graph = load_model(model)?;
        run_passes(&graph, &rules, &Limits::default())
            .map_err(|e| format!("{}: {e}", model.display()))
    })
    .map_err(model_error)
}

/// Optimises the model at `model` with the built-in rules (unless `builtin` is false) and
/// `rules` (rule files or rule text), returning the optimised graph and what fired.
#[pyfunction]
#[pyo3(signature = (model, rules = vec![], builtin = true))]
pub fn optimize(
    py: Python<'_>,
    model: PathBuf,
    rules: Vec<Bound<'_, PyAny>>,
    builtin: bool,
) -> PyResult<Optimized> {
    let (graph, report) = run(py, &model, rules, builtin)?;
    Ok(Optimized {
        graph: kiln_ir::text::print(&graph),
        report,
    })
}

/// What `kiln explain` prints, as a dict: the rules fired, op counts before and after, the
/// e-graph and extraction figures, the cost estimates and the plan's steps for `backend`
/// (each kernel with its template symbol and schedule, each interpreter fallback with its
/// reason). For an artefact directory, its plan's steps only.
#[pyfunction]
#[pyo3(signature = (model, rules = vec![], builtin = true, backend = "llvm"))]
pub fn explain<'py>(
    py: Python<'py>,
    model: PathBuf,
    rules: Vec<Bound<'py, PyAny>>,
    builtin: bool,
    backend: &str,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    if kiln_rt::artifact::is_artifact(&model) {
        let program = kiln_rt::artifact::load(&model, 1)
            .map_err(|e| model_error(format!("{}: {e}", model.display())))?;
        d.set_item("steps", steps(py, program.plan())?)?;
        return Ok(d);
    }
    let backend = kiln_codegen::backend(backend).map_err(crate::errors::input_error)?;
    let (graph, report) = run(py, &model, rules, builtin)?;
    let plan = py
        .allow_threads(|| kiln_codegen::plan::lowering::lower_graph(&graph, &backend, &Heuristic))
        .map_err(model_error)?
        .plan;
    let fired = report.rules_fired.iter().map(|(k, v)| (k.as_str(), *v));
    d.set_item("rules_fired", counts(py, fired)?)?;
    let before = report.ops_before.iter().map(|(k, v)| (k.name(), *v));
    d.set_item("ops_before", counts(py, before)?)?;
    let after = report.ops_after.iter().map(|(k, v)| (k.name(), *v));
    d.set_item("ops_after", counts(py, after)?)?;
    let egraph = PyDict::new(py);
    egraph.set_item("nodes", report.egraph_nodes)?;
    egraph.set_item("classes", report.egraph_classes)?;
    egraph.set_item("iterations", report.iterations)?;
    egraph.set_item("stop_reason", &report.stop_reason)?;
    egraph.set_item("saturation_seconds", report.saturate_time.as_secs_f64())?;
    egraph.set_item("extraction_seconds", report.extract_time.as_secs_f64())?;
    d.set_item("egraph", egraph)?;
    let cost = PyDict::new(py);
    cost.set_item("before", report.cost_before)?;
    cost.set_item("greedy", report.cost_greedy)?;
    cost.set_item("after", report.cost_after)?;
    cost.set_item("extraction_moves", report.extraction_moves)?;
    d.set_item("cost_seconds", cost)?;
    d.set_item("steps", steps(py, &plan)?)?;
    Ok(d)
}

/// A plan's steps as dicts: `kind`, `nodes`, and either `fallback` (why no template took it)
/// or, for a kernel, `symbol`, `template`, `schedule` and `schedule_source`.
fn steps<'py>(py: Python<'py>, plan: &Plan) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for r in &plan.reports {
        let step = PyDict::new(py);
        step.set_item("kind", &r.kind)?;
        step.set_item("nodes", &r.nodes)?;
        if let Some(why) = &r.fallback {
            step.set_item("fallback", why)?;
        }
        if let Some(k) = r.kernel.map(|k| &plan.kernels[k]) {
            step.set_item("symbol", &k.symbol)?;
            step.set_item("template", &k.template)?;
            step.set_item("schedule", k.schedule.clone())?;
            step.set_item("schedule_source", &k.schedule_source)?;
        }
        list.append(step)?;
    }
    Ok(list)
}

/// Checks every exact rule of `rules` (rule files or rule text; None: the built-in rules) on
/// `trials` random instances evaluated by the reference interpreter, as `kiln rules check`
/// does. Returns `{"passed": [names], "unchecked": {name: reason}, "wrong": {name:
/// counterexample}}`.
#[pyfunction]
#[pyo3(signature = (rules = None, trials = 5, seed = 0x5eed))]
pub fn rules_check<'py>(
    py: Python<'py>,
    rules: Option<Vec<Bound<'py, PyAny>>>,
    trials: usize,
    seed: u64,
) -> PyResult<Bound<'py, PyDict>> {
    let rules = match rules {
        Some(sources) => read_rules(&sources)?,
        None => builtin_rules(),
    };
    let outcomes = py.allow_threads(|| check_rules(&rules, seed, trials));
    let (passed, unchecked, wrong) = (PyList::empty(py), PyDict::new(py), PyDict::new(py));
    for (name, outcome) in outcomes {
        match outcome {
            CheckOutcome::Passed { .. } => passed.append(name)?,
            CheckOutcome::Unchecked { reason } => unchecked.set_item(name, reason)?,
            CheckOutcome::Failed { counterexample } => wrong.set_item(name, counterexample)?,
        }
    }
    let d = PyDict::new(py);
    d.set_item("passed", passed)?;
    d.set_item("unchecked", unchecked)?;
    d.set_item("wrong", wrong)?;
    Ok(d)
}
