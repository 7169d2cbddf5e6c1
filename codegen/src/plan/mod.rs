//! From a graph to a runnable [`Program`]: [`lowering`] turns the graph into a
//! [`kiln_rt::plan::Plan`] (kernel groups lowered by the templates, the rest on the
//! reference interpreter); [`compile`] compiles its kernels in memory (JIT) and
//! [`artifact`] ahead of time into an artefact directory that
//! [`kiln_rt::artifact::load`] runs without a compiler.
//!
//! ```
//! use kiln_codegen::plan::{compile, Options};
//! let graph = kiln_ir::text::parse(
//!     "kiln graph v1\ninput %x: f32[n]\n%y: f32[n] = Relu(%x)\noutput y = %y\n",
//! )
//! .unwrap();
//! let program = compile(&graph, &Options::default()).unwrap();
//! assert_eq!(program.stats().kernels, 1);
//! ```

pub mod artifact;
mod fold;
pub mod group;
mod legalize;
mod lower;
pub mod lowering;

use crate::Backend;
pub use fold::fold_constants;
use kiln_ir::Graph;
use kiln_rt::weights::Weights;
use kiln_rt::Program;
use std::time::Instant;

/// How to compile and run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Threads for parallel loops (1 = run on the calling thread).
    pub threads: usize,
    /// The code generator of the kernels.
    pub backend: Backend,
}

impl Default for Options {
    /// One thread, Cranelift.
    fn default() -> Options {
        Options {
            threads: 1,
            backend: Backend::default(),
        }
    }
}

/// Compiles `graph` into a program whose kernels are compiled in memory by
/// `options.backend`.
pub fn compile(graph: &Graph, options: &Options) -> Result<Program, String> {
    Ok(compile_entries(&[graph], options)?.remove(0))
}

/// Compiles the entry points of one model (prefill and decode) into programs that hold each
/// constant they share once and whose equal kernels are compiled once.
pub fn compile_entries(graphs: &[&Graph], options: &Options) -> Result<Vec<Program>, String> {
    let start = Instant::now();
    let lowered = lowering::lower_entries(graphs, &options.backend, &crate::Heuristic)?;
    let (kernels, uses) = lowering::distinct_kernels(&lowered)?;
    let compiled = options.backend.compile_all(&kernels)?;
    let seconds = start.elapsed().as_secs_f64();
    lowered
        .into_iter()
        .zip(uses)
        .map(|(lowered, used)| {
            let weights =
                Weights::in_memory(lowered.constants.iter().map(|c| c.get().clone()).collect());
            let kernels = used.iter().map(|&i| compiled[i].clone()).collect();
            // SAFETY: the kernels were compiled from the plan's own KIR, in its order.
            unsafe { Program::new(lowered.plan, weights, kernels, options.threads, seconds) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::artifact::write_artifacts_with;
    use super::lowering::lower_graph;
    use super::*;
    use crate::{Heuristic, Schedule, ScheduleRequest, ScheduleSource};
    use kiln_ir::{text, Tensor};
    use std::collections::HashMap;

    /// A GEMM with a bias and a softmax after it.
    const GRAPH: &str = "kiln graph v1
input %x: f32[seq, 16]
input %w: f32[16, 24]
%y: f32[seq, 24] = MatMul(%x, %w)  @\"proj\"
%z: f32[seq, 24] = Softmax[axis=-1](%y)  @\"softmax\"
output z = %z
";

    /// Gives every GEMM the schedule it holds.
    struct Fixed(Schedule);

    impl ScheduleSource for Fixed {
        fn schedule(&self, request: &ScheduleRequest) -> Option<(Schedule, String)> {
            (request.template == "gemm").then(|| (self.0.clone(), "a test".into()))
        }
    }

    fn feeds() -> HashMap<String, Tensor> {
        let values =
            |n: usize, seed: f32| (0..n).map(|i| ((i as f32 + seed) * 0.37).sin()).collect();
        HashMap::from([
            (
                "x".to_string(),
                Tensor::from_vec(&[5, 16], values(80, 1.0)).unwrap(),
            ),
            (
                "w".to_string(),
                Tensor::from_vec(&[16, 24], values(384, 2.0)).unwrap(),
            ),
        ])
    }

    #[test]
    fn each_kernel_records_its_schedule_and_where_it_came_from() {
        let graph = text::parse(GRAPH).unwrap();
        let plan = lower_graph(&graph, &Backend::cranelift(), &Heuristic)
            .unwrap()
            .plan;
        let gemm = plan.kernels.iter().find(|k| k.template == "gemm").unwrap();
        assert_eq!(gemm.schedule["gemm.mr"], 12);
        assert_eq!(gemm.schedule["gemm.lanes"], 4);
        assert_eq!(gemm.schedule_source, "heuristic");
        let source = Fixed(Schedule::default().with("mr", 4).with("nr", 8));
        let plan = lower_graph(&graph, &Backend::cranelift(), &source)
            .unwrap()
            .plan;
        let gemm = plan.kernels.iter().find(|k| k.template == "gemm").unwrap();
        assert_eq!((gemm.schedule["gemm.mr"], gemm.schedule["gemm.nr"]), (4, 8));
        assert_eq!(gemm.schedule_source, "a test");
        let rows = plan.kernels.iter().find(|k| k.template == "rows").unwrap();
        assert_eq!(rows.schedule_source, "heuristic");
    }

    #[test]
    fn an_invalid_schedule_is_an_error_naming_the_parameter_and_the_kernel() {
        let graph = text::parse(GRAPH).unwrap();
        for (name, value, needle) in [("mr", 17, "gemm.mr = 17"), ("tile", 3, "`gemm.tile`")] {
            let source = Fixed(Schedule::default().with(name, value));
            let err = lower_graph(&graph, &Backend::cranelift(), &source)
                .err()
                .unwrap();
            assert!(err.contains(needle) && err.contains("proj"), "{err}");
            assert!(err.contains("a test"), "{err}");
        }
    }

    #[test]
    fn an_artifact_keeps_its_schedules_when_the_defaults_change() {
        let graph = text::parse(GRAPH).unwrap();
        let dir = std::env::temp_dir().join(format!("kiln-schedule-{}", std::process::id()));
        // The artefact is built with the schedules of "before" ...
        let before = Fixed(
            Schedule::default()
                .with("mr", 3)
                .with("nr", 8)
                .with("mc", 0),
        );
        write_artifacts_with(&[(&graph, "")], &dir, &Backend::cranelift(), &before).unwrap();
        let loaded = kiln_rt::artifact::load(&dir, 1).unwrap();
        let (first, _) = loaded.run(&feeds()).unwrap();
        // ... and this kiln now compiles the same graph with other defaults.
        let now = compile(&graph, &Options::default()).unwrap();
        let gemm = |p: &Program| {
            let k = p
                .plan()
                .kernels
                .iter()
                .find(|k| k.template == "gemm")
                .unwrap();
            (k.schedule["gemm.mr"], k.fingerprint.clone())
        };
        assert_ne!(gemm(&now), gemm(&loaded), "the schedules should differ");
        // Loading again lowers nothing: the artefact's own kernels run, bit for bit.
        let again = kiln_rt::artifact::load(&dir, 1).unwrap();
        assert_eq!(gemm(&again).0, 3);
        let (second, _) = again.run(&feeds()).unwrap();
        let bits = |out: &[(String, Tensor)]| -> Vec<u32> {
            out[0]
                .1
                .to_f32_array()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        assert_eq!(bits(&first), bits(&second));
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `x @ W^T` as torch's `Linear` exports it: `MatMul(x, Transpose(W))` with `W` a
    /// constant `[N, K]`, or `Gemm(x, W, transB = 1)`.
    fn linear(gemm: bool) -> Graph {
        use kiln_ir::{Attr, Attrs, DType, Dim, Op, OpKind};
        let mut g = Graph::new();
        let x = g
            .add_input("x", DType::F32, vec![Dim::known(5), Dim::known(16)])
            .unwrap();
        let values = (0..24 * 16).map(|i| (i as f32 * 0.37).sin()).collect();
        let w = Tensor::from_vec(&[24, 16], values).unwrap().to_data();
        let w = g.add_constant("w", w).unwrap();
        let perm = Attrs::from_pairs(&[("perm", Attr::Ints(vec![1, 0]))]);
        let y = if gemm {
            let trans = Attrs::from_pairs(&[("transB", Attr::Int(1))]);
            let op = Op::new(OpKind::Gemm, trans);
            g.add_op("proj", op, vec![Some(x), Some(w)], &["y".into()])
        } else {
            let t = Op::new(OpKind::Transpose, perm);
            let wt = g.add_op("wt", t, vec![Some(w)], &["wt".into()]).unwrap()[0];
            let op = Op::new(OpKind::MatMul, Attrs::default());
            g.add_op("proj", op, vec![Some(x), Some(wt)], &["y".into()])
        };
        g.set_outputs(vec![("y".into(), y.unwrap()[0])]);
        g
    }

    #[test]
    fn a_transposed_weight_is_packed_from_its_stored_layout_with_no_copy() {
        for gemm in [false, true] {
            let graph = linear(gemm);
            let lowered = lower_graph(&graph, &Backend::cranelift(), &Heuristic).unwrap();
            let plan = &lowered.plan;
            // One kernel, the GEMM: the transpose is neither folded nor run.
            assert_eq!((plan.stats.folded, plan.stats.kernels), (0, 1), "{gemm}");
            assert_eq!(plan.steps.len(), 1);
            // Its one constant is the packed weight, made only when its bytes are asked for.
            assert_eq!(plan.constants.len(), 1);
            assert!(plan.constants[0].layout.starts_with("gemm.b_panels"));
            assert!(lowered.constants[0].is_made());
            assert_eq!(lowered.constants[0].len(), 24 * 16 * 4);
            let x: Vec<f32> = (0..80).map(|i| (i as f32 * 0.11).cos()).collect();
            let feeds = HashMap::from([("x".to_string(), Tensor::from_vec(&[5, 16], x).unwrap())]);
            let want = kiln_ir::interp::run(&graph, &feeds).unwrap();
            let (got, _) = compile(&graph, &Options::default())
                .unwrap()
                .run(&feeds)
                .unwrap();
            let (got, want) = (got[0].1.to_f32_array(), want[0].1.to_f32_array());
            assert_eq!(got.shape(), [5, 24]);
            for (g, w) in got.iter().zip(want.iter()) {
                assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "{g} vs {w}");
            }
        }
    }

    #[test]
    fn the_entry_points_of_a_model_share_one_library_of_distinct_kernels() {
        let graph = text::parse(GRAPH).unwrap();
        let dir = std::env::temp_dir().join(format!("kiln-shared-lib-{}", std::process::id()));
        write_artifacts_with(
            &[(&graph, "one"), (&linear(false), "two")],
            &dir,
            &Backend::cranelift(),
            &Heuristic,
        )
        .unwrap();
        assert!(dir.join("kernels.so").is_file());
        assert!(!dir.join("one/kernels.so").exists());
        let one = kiln_rt::artifact::load(&dir.join("one"), 1).unwrap();
        let two = kiln_rt::artifact::load(&dir.join("two"), 1).unwrap();
        assert_eq!(one.run(&feeds()).unwrap().0[0].1.shape(), [5, 24]);
        let x = Tensor::from_vec(&[5, 16], vec![0.5; 80]).unwrap();
        let out = two.run(&HashMap::from([("x".to_string(), x)])).unwrap().0;
        assert_eq!(out[0].1.shape(), [5, 24]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
