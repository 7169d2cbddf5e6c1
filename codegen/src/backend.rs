//! The code generators: [`CodeGenerator`] is what lowering and compilation need of one (the
//! widest vector the templates may use, JIT and object compilation, the target a plan
//! records), [`Backend`] the cheap handle to one that the rest of kiln passes around, and
//! [`backends`] / [`backend`] the registry of the ones this build has. A backend is one
//! module implementing [`CodeGenerator`] plus one line in `REGISTRY`.

use crate::kir::Kernel;
use kiln_rt::native::NativeKernel;
use kiln_rt::plan::Target;
use std::fmt::Debug;
use std::ops::Deref;
use std::sync::Arc;

/// A code generator: turns a program's KIR kernels into machine code, and says what that
/// means for the templates (the widest vector they may use) and for the CPUs that can run
/// the result.
pub trait CodeGenerator: Send + Sync + Debug {
    /// The backend's name as the command line spells it (`cranelift`, `llvm`).
    fn name(&self) -> &'static str;

    /// One line on the backend for `--help`.
    fn description(&self) -> &'static str;

    /// The widest vector, in f32 lanes, that templates may use for this backend.
    fn lanes(&self) -> u8;

    /// Compiles kernels for this CPU into memory (their names must differ).
    fn compile_all(&self, kernels: &[Kernel]) -> Result<Vec<NativeKernel>, String>;

    /// Compiles kernels into position-independent objects that together export each under
    /// its name, for linking into one shared library (`kernels.so`); a generator that
    /// compiles on several threads returns one object per thread.
    fn emit_objects(&self, kernels: &[Kernel]) -> Result<Vec<Vec<u8>>, String>;

    /// Where the compiled code runs, as a plan records it: the backend's name, the CPU level
    /// (empty if none), and the CPU features the code needs, as [`kiln_rt::cpu`] names them.
    fn target(&self) -> Result<Target, String>;
}

/// The code generator of a program's kernels: a shared handle to a [`CodeGenerator`], cheap
/// to clone; its methods are the generator's (through [`Deref`]).
#[derive(Clone, Debug)]
pub struct Backend(Arc<dyn CodeGenerator>);

impl Backend {
    /// The handle of `generator`.
    pub fn new(generator: impl CodeGenerator + 'static) -> Backend {
        Backend(Arc::new(generator))
    }

    /// Cranelift.
    pub fn cranelift() -> Backend {
        Backend::new(crate::cranelift::Cranelift)
    }

    /// LLVM for the highest level this CPU has.
    #[cfg(feature = "llvm")]
    pub fn llvm() -> Backend {
        Backend::llvm_at(CpuLevel::host())
    }

    /// LLVM for the CPUs of `level`.
    #[cfg(feature = "llvm")]
    pub fn llvm_at(level: CpuLevel) -> Backend {
        Backend::new(crate::llvm::Llvm { level })
    }
}

impl Default for Backend {
    /// The first backend of the registry: Cranelift.
    fn default() -> Backend {
        REGISTRY[0]()
    }
}

impl Deref for Backend {
    type Target = dyn CodeGenerator;

    fn deref(&self) -> &(dyn CodeGenerator + 'static) {
        &*self.0
    }
}

/// The backends of this build, as their constructors, in the order `--help` lists them (the
/// first is the default). A new backend is one line here.
const REGISTRY: &[fn() -> Backend] = &[
    Backend::cranelift,
    #[cfg(feature = "llvm")]
    Backend::llvm,
];

/// Every backend this build has (LLVM only with the `llvm` feature), the default first.
pub fn backends() -> Vec<Backend> {
    REGISTRY.iter().map(|make| make()).collect()
}

/// The backend named `name` (as [`CodeGenerator::name`] gives it); the error lists the
/// backends this build has.
pub fn backend(name: &str) -> Result<Backend, String> {
    let all = backends();
    if let Some(found) = all.iter().find(|b| b.name() == name) {
        return Ok(found.clone());
    }
    let names: Vec<&str> = all.iter().map(|b| b.name()).collect();
    Err(format!(
        "unknown backend `{name}` (this build has: {})",
        names.join(", ")
    ))
}

/// An x86-64 micro-architecture level: the instruction set LLVM code is compiled for, so that
/// an artefact runs on every CPU of that level (tuning still follows the compiling CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum CpuLevel {
    /// SSE4.2 and POPCNT: 128-bit vectors.
    V2,
    /// AVX2, FMA and BMI: 256-bit vectors.
    V3,
    /// AVX-512 F, BW, CD, DQ and VL: 512-bit vectors.
    V4,
}

impl CpuLevel {
    /// Every level, lowest first.
    pub const ALL: [CpuLevel; 3] = [CpuLevel::V2, CpuLevel::V3, CpuLevel::V4];

    /// The highest level this CPU has.
    pub fn host() -> CpuLevel {
        CpuLevel::ALL
            .into_iter()
            .rev()
            .find(|l| l.supported())
            .unwrap_or(CpuLevel::V2)
    }

    /// Whether this CPU has every feature of the level.
    pub fn supported(self) -> bool {
        kiln_rt::cpu::check(&self.features()).is_ok()
    }

    /// The CPU features the level promises, as [`kiln_rt::cpu`] names them.
    pub fn features(self) -> Vec<String> {
        let v2 = ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"];
        let v3 = ["avx", "avx2", "fma", "bmi1", "bmi2", "lzcnt", "f16c"];
        let v4 = ["avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"];
        let levels: &[&[&str]] = match self {
            CpuLevel::V2 => &[&v2],
            CpuLevel::V3 => &[&v2, &v3],
            CpuLevel::V4 => &[&v2, &v3, &v4],
        };
        levels
            .iter()
            .flat_map(|l| l.iter())
            .map(|f| f.to_string())
            .collect()
    }

    /// LLVM's name of the level's CPU (`x86-64-v4`).
    pub fn name(self) -> &'static str {
        match self {
            CpuLevel::V2 => "x86-64-v2",
            CpuLevel::V3 => "x86-64-v3",
            CpuLevel::V4 => "x86-64-v4",
        }
    }

    /// The level named `name` (as [`CpuLevel::name`] gives it).
    pub fn parse(name: &str) -> Option<CpuLevel> {
        CpuLevel::ALL.into_iter().find(|l| l.name() == name)
    }

    /// f32 lanes of the level's widest vector.
    pub fn lanes(self) -> u8 {
        match self {
            CpuLevel::V2 => 4,
            CpuLevel::V3 => 8,
            CpuLevel::V4 => 16,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_lists_this_builds_backends() {
        let names: Vec<&str> = backends().iter().map(|b| b.name()).collect();
        let expected: &[&str] = match cfg!(feature = "llvm") {
            true => &["cranelift", "llvm"],
            false => &["cranelift"],
        };
        assert_eq!(names, expected);
        assert_eq!(Backend::default().name(), "cranelift");
    }

    #[test]
    fn every_name_round_trips_through_the_registry() {
        for b in backends() {
            let found = backend(b.name()).unwrap();
            assert_eq!(found.name(), b.name());
            assert_eq!(found.lanes(), b.lanes());
            assert_eq!(found.target().unwrap().backend, b.name());
            assert!(!b.description().is_empty() && !b.description().contains('\n'));
        }
    }

    #[test]
    fn an_unknown_name_errors_naming_the_known_ones() {
        let err = backend("frobnicate").unwrap_err();
        assert!(err.contains("`frobnicate`"), "{err}");
        for b in backends() {
            assert!(err.contains(b.name()), "{err}");
        }
    }
}
