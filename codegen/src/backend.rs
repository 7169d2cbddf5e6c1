//! [`Backend`]: which code generator turns a program's KIR into machine code, and what that
//! means for the templates (the widest vector they may use) and for the CPUs that can run
//! the result.

use crate::kir::Kernel;
use kiln_rt::native::NativeKernel;
use kiln_rt::plan::Target;

/// The code generator of a program's kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Cranelift: fast compilation, f32x4 vectors (its x86-64 vectors are 128-bit).
    Cranelift,
    /// LLVM: slower compilation, vectors as wide as the CPU level allows.
    Llvm(CpuLevel),
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

impl Backend {
    /// LLVM for the highest level this CPU has.
    pub fn llvm() -> Backend {
        Backend::Llvm(CpuLevel::host())
    }

    /// The backend's name as the command line spells it (`cranelift`, `llvm`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cranelift => "cranelift",
            Backend::Llvm(_) => "llvm",
        }
    }

    /// The widest vector, in f32 lanes, that templates may use for this backend.
    pub fn lanes(self) -> u8 {
        match self {
            Backend::Cranelift => 4,
            Backend::Llvm(level) => level.lanes(),
        }
    }

    /// Compiles kernels for this CPU into memory (their names must differ).
    pub fn compile_all(self, kernels: &[Kernel]) -> Result<Vec<NativeKernel>, String> {
        match self {
            Backend::Cranelift => crate::cranelift::compile_all(kernels),
            #[cfg(feature = "llvm")]
            Backend::Llvm(level) => crate::llvm::compile_all(kernels, level.name()),
            #[cfg(not(feature = "llvm"))]
            Backend::Llvm(_) => Err(NO_LLVM.into()),
        }
    }

    /// Compiles kernels into a position-independent object exporting each under its name,
    /// for linking into a shared library.
    pub fn emit_object(self, kernels: &[Kernel]) -> Result<Vec<u8>, String> {
        match self {
            Backend::Cranelift => crate::cranelift::emit_object(kernels),
            #[cfg(feature = "llvm")]
            Backend::Llvm(level) => crate::llvm::emit_object(kernels, level.name()),
            #[cfg(not(feature = "llvm"))]
            Backend::Llvm(_) => Err(NO_LLVM.into()),
        }
    }

    /// Where the compiled code runs, as a plan records it: the backend, the CPU level, and
    /// the CPU features the code needs (Cranelift's ISA flags of this CPU, or the LLVM
    /// level's features), as [`kiln_rt::cpu`] names them.
    pub fn target(self) -> Result<Target, String> {
        Ok(match self {
            Backend::Cranelift => Target {
                backend: self.name().into(),
                cpu: String::new(),
                features: crate::cranelift::host_features()?,
            },
            Backend::Llvm(level) => Target {
                backend: self.name().into(),
                cpu: level.name().into(),
                features: level.features(),
            },
        })
    }
}

/// The error of compiling with LLVM in a build without it.
#[cfg(not(feature = "llvm"))]
const NO_LLVM: &str = "this build of kiln has no LLVM backend (cargo feature `llvm`)";
