//! The LLVM backend ([`Llvm`]): lowers KIR [`Kernel`]s to native code for an x86-64 CPU level through
//! LLVM 19, with vectors of 4, 8 or 16 f32 lanes (16 lanes = one 512-bit AVX-512 register).
//!
//! It is the twin of [`crate::cranelift`]: the same kernel ABI ([`crate::native`]), the same
//! intrinsics code ([`crate::intrinsics`]) and no fast-math flags, so that the two backends
//! agree bit for bit on 4-lane kernels. Kernels go into a position-independent object
//! ([`emit_object`]); [`compile_all`] links it into a shared library and loads it.

use crate::intrinsics::{self, Math};
use crate::kir::{self, Binary, Compare, Index, Int, Kernel, Stmt, Unary, Value};
use crate::native;
use crate::{CodeGenerator, CpuLevel};
use inkwell::attributes::{Attribute, AttributeLoc};
use inkwell::builder::{Builder, BuilderError};
use inkwell::context::Context;
use inkwell::intrinsics::Intrinsic;
use inkwell::module::Module;
use inkwell::passes::PassBuilderOptions;
use inkwell::targets::{
    CodeModel, FileType, InitializationConfig, RelocMode, Target, TargetMachine,
};
use inkwell::types::{BasicTypeEnum, IntType, VectorType};
use inkwell::values::{
    BasicMetadataValueEnum, BasicValue, BasicValueEnum, FloatMathValue, FunctionValue,
    InstructionValue, InstructionValueError, IntValue, MetadataValue, PointerValue, ValueKind,
    VectorValue,
};
use inkwell::{AddressSpace, FloatPredicate, IntPredicate, OptimizationLevel};
use kiln_rt::native::NativeKernel;
use kiln_rt::plan;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{SystemTime, UNIX_EPOCH};

/// An LLVM value: an `f32`, an `<n x float>`, an `i64` or an `i32` bit pattern.
type V<'ctx> = BasicValueEnum<'ctx>;

/// The LLVM [`CodeGenerator`] for the CPUs of one x86-64 level: slower compilation, vectors
/// as wide as the level has.
#[derive(Clone, Copy, Debug)]
pub struct Llvm {
    /// The instruction set the code is compiled for (tuning follows the compiling CPU).
    pub level: CpuLevel,
}

impl CodeGenerator for Llvm {
    fn name(&self) -> &'static str {
        "llvm"
    }

    fn description(&self) -> &'static str {
        "Compiles slower; vectors as wide as this CPU has (512-bit with AVX-512)"
    }

    fn lanes(&self) -> u8 {
        self.level.lanes()
    }

    fn compile_all(&self, kernels: &[Kernel]) -> Result<Vec<NativeKernel>, String> {
        compile_all(kernels, self.level.name())
    }

    fn emit_objects(&self, kernels: &[Kernel]) -> Result<Vec<Vec<u8>>, String> {
        emit_objects(kernels, self.level.name())
    }

    /// The level's CPU and features.
    fn target(&self) -> Result<plan::Target, String> {
        Ok(plan::Target {
            backend: self.name().into(),
            cpu: self.level.name().into(),
            features: self.level.features(),
        })
    }
}

/// JIT-compiles kernels: emits objects for `cpu` ([`emit_objects`]), links them into a shared
/// library in a fresh temporary directory with `crate::native::link_shared`, loads it with
/// `crate::native::load_kernels`, then removes the directory (the mapping stays valid).
pub fn compile_all(kernels: &[Kernel], cpu: &str) -> Result<Vec<NativeKernel>, String> {
    if kernels.is_empty() {
        return Ok(vec![]);
    }
    let dir = TempDir::new()?;
    let library_path = dir.0.join("libkernels.so");
    native::link_shared(emit_objects(kernels, cpu)?, &dir.0, &library_path)?;
    // SAFETY: the library was just linked from `emit_objects(kernels)` alone: it exports each
    // kernel under its name with the kernel ABI and has no initialisers.
    unsafe { native::load_kernels(&library_path, kernels) }
}

/// One kernel (for tests and tools).
pub fn compile(kernel: &Kernel, cpu: &str) -> Result<NativeKernel, String> {
    compile_all(std::slice::from_ref(kernel), cpu)?
        .pop()
        .ok_or_else(|| format!("kernel `{}`: not compiled", kernel.name))
}

/// Position-independent ELF objects that together export each kernel under its name
/// (KernelFn ABI), compiled on as many threads as this machine has cores (one object each;
/// the kernels are dealt out by size so that the threads finish together).
pub fn emit_objects(kernels: &[Kernel], cpu: &str) -> Result<Vec<Vec<u8>>, String> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut parts: Vec<(usize, Vec<Kernel>)> = vec![(0, vec![]); threads.min(kernels.len()).max(1)];
    let mut by_size: Vec<(usize, &Kernel)> = kernels
        .iter()
        .map(|k| (format!("{:?}", k.body).len(), k))
        .collect();
    by_size.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    for (size, kernel) in by_size {
        let part = parts
            .iter_mut()
            .min_by_key(|(load, _)| *load)
            .expect("at least one part");
        part.0 += size;
        part.1.push(kernel.clone());
    }
    std::thread::scope(|scope| {
        let jobs: Vec<_> = parts
            .iter()
            .map(|(_, part)| scope.spawn(move || emit_object(part, cpu)))
            .collect();
        jobs.into_iter()
            .map(|job| {
                job.join()
                    .map_err(|_| "LLVM: a compiling thread panicked".to_string())?
            })
            .collect()
    })
}

/// A position-independent ELF object exporting each kernel under its name (KernelFn ABI).
pub fn emit_object(kernels: &[Kernel], cpu: &str) -> Result<Vec<u8>, String> {
    emit(kernels, cpu, FileType::Object)
}

/// Compiles kernels for `cpu` (tuned for the host) into an object file or assembly text.
fn emit(kernels: &[Kernel], cpu: &str, file_type: FileType) -> Result<Vec<u8>, String> {
    let machine = target_machine(cpu)?;
    let context = Context::create();
    let module = context.create_module("kiln_kernels");
    module.set_triple(&machine.get_triple());
    module.set_data_layout(&machine.get_target_data().get_data_layout());
    let tune = TargetMachine::get_host_cpu_name().to_string();
    for kernel in kernels {
        define(&context, &module, kernel, &tune)
            .map_err(|Error(e)| format!("kernel `{}`: {e}", kernel.name))?;
    }
    module
        .verify()
        .map_err(|e| format!("LLVM: invalid module: {e}"))?;
    module
        .run_passes("default<O3>", &machine, PassBuilderOptions::create())
        .map_err(|e| format!("LLVM: optimising: {e}"))?;
    let buffer = machine
        .write_to_memory_buffer(&module, file_type)
        .map_err(|e| format!("LLVM: emitting code: {e}"))?;
    Ok(buffer.as_slice().to_vec())
}

/// A target machine for `cpu` with that CPU's own features: PIC code, optimised aggressively.
fn target_machine(cpu: &str) -> Result<TargetMachine, String> {
    static INIT: Once = Once::new();
    INIT.call_once(|| Target::initialize_x86(&InitializationConfig::default()));
    let triple = TargetMachine::get_default_triple();
    let target = Target::from_triple(&triple).map_err(|e| format!("LLVM: {e}"))?;
    target
        .create_target_machine(
            &triple,
            cpu,
            "",
            OptimizationLevel::Aggressive,
            RelocMode::PIC,
            CodeModel::Default,
        )
        .ok_or_else(|| format!("LLVM: no target machine for CPU `{cpu}`"))
}

/// A fresh directory under the system's temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir, String> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let counter = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let pid = std::process::id();
        let path = std::env::temp_dir().join(format!("kiln-llvm-{pid}-{counter}-{nanos}"));
        std::fs::create_dir(&path)
            .map_err(|e| format!("{}: cannot create: {e}", path.display()))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Best effort: a leftover temporary directory is harmless.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Why a kernel could not be lowered (reported with the kernel's name).
struct Error(String);

type Lowered<T> = Result<T, Error>;

impl From<String> for Error {
    fn from(e: String) -> Error {
        Error(e)
    }
}

impl From<&str> for Error {
    fn from(e: &str) -> Error {
        Error(e.into())
    }
}

impl From<BuilderError> for Error {
    fn from(e: BuilderError) -> Error {
        Error(format!("LLVM builder: {e}"))
    }
}

impl From<InstructionValueError> for Error {
    fn from(e: InstructionValueError) -> Error {
        Error(format!("LLVM instruction: {e}"))
    }
}

/// An error for operands of unexpected LLVM types (a bug in the lowering, not in the kernel).
/// The signed integer predicate of a comparison.
fn int_predicate(cmp: Compare) -> IntPredicate {
    match cmp {
        Compare::Lt => IntPredicate::SLT,
        Compare::Le => IntPredicate::SLE,
        Compare::Eq => IntPredicate::EQ,
    }
}

fn mismatch(what: &str) -> Error {
    Error(format!("internal error: {what} of unexpected LLVM type"))
}

/// `v` as the LLVM value type `T` it has by construction.
fn typed<'ctx, T: TryFrom<V<'ctx>>>(v: V<'ctx>, what: &str) -> Lowered<T> {
    T::try_from(v).map_err(|_| mismatch(what))
}

/// Declares `kernel` in `module` under its name and lowers its body.
fn define<'ctx>(
    cx: &'ctx Context,
    module: &Module<'ctx>,
    kernel: &Kernel,
    tune: &str,
) -> Lowered<()> {
    if module.get_function(&kernel.name).is_some() {
        return Err("defined twice in one module".into());
    }
    let ptr = cx.ptr_type(AddressSpace::default());
    let signature = cx.void_type().fn_type(&[ptr.into(), ptr.into()], false);
    let function = module.add_function(&kernel.name, signature, None);
    add_attributes(cx, function, tune);
    let builder = cx.create_builder();
    builder.position_at_end(cx.append_basic_block(function, "entry"));
    let mut lower = Lower::new(cx, module, builder, function, kernel)?;
    lower.stmts(&kernel.body)?;
    lower.b.build_return(None)?;
    if !function.verify(false) {
        let why = module.verify().err().map(|e| e.to_string());
        return Err(format!("LLVM rejected the function: {}", why.unwrap_or_default()).into());
    }
    Ok(())
}

/// `nounwind`, 512-bit vectors kept whole (not split into 256-bit halves), host tuning.
fn add_attributes(cx: &Context, function: FunctionValue, tune: &str) {
    let nounwind = Attribute::get_named_enum_kind_id("nounwind");
    function.add_attribute(
        AttributeLoc::Function,
        cx.create_enum_attribute(nounwind, 0),
    );
    for (key, value) in [
        ("min-legal-vector-width", "512"),
        ("prefer-vector-width", "512"),
        ("tune-cpu", tune),
    ] {
        function.add_attribute(
            AttributeLoc::Function,
            cx.create_string_attribute(key, value),
        );
    }
}

/// Alias information for the loads and stores of one kernel. Buffers the kernel never
/// stores to are read-only during a call (outputs do not alias inputs, by the template
/// contract): their loads are `!invariant.load` and each is in its own alias scope, which
/// every store is declared not to alias, so LLVM may hoist, merge and reorder them freely.
struct Aliasing<'ctx> {
    invariant_kind: u32,
    scope_kind: u32,
    noalias_kind: u32,
    empty: MetadataValue<'ctx>,
    /// The alias-scope list of each read-only buffer (`None` for stored buffers).
    scopes: Vec<Option<MetadataValue<'ctx>>>,
    /// Every read-only buffer's scope, for the stores' `!noalias`.
    read_only: MetadataValue<'ctx>,
}

impl<'ctx> Aliasing<'ctx> {
    fn new(cx: &'ctx Context, stored: &[bool]) -> Aliasing<'ctx> {
        let domain = cx.metadata_node(&[cx.metadata_string("kiln buffers").into()]);
        let scope = |b: usize| {
            let name = cx.metadata_string(&format!("kiln buffer {b}"));
            cx.metadata_node(&[name.into(), domain.into()])
        };
        let read_only: Vec<BasicMetadataValueEnum> = (0..stored.len())
            .filter(|&b| !stored[b])
            .map(|b| scope(b).into())
            .collect();
        Aliasing {
            invariant_kind: cx.get_kind_id("invariant.load"),
            scope_kind: cx.get_kind_id("alias.scope"),
            noalias_kind: cx.get_kind_id("noalias"),
            empty: cx.metadata_node(&[]),
            scopes: (0..stored.len())
                .map(|b| (!stored[b]).then(|| cx.metadata_node(&[scope(b).into()])))
                .collect(),
            read_only: cx.metadata_node(&read_only),
        }
    }

    fn tag_load(&self, load: InstructionValue<'ctx>, buffer: usize) -> Lowered<()> {
        if let Some(Some(scope)) = self.scopes.get(buffer) {
            load.set_metadata(self.empty, self.invariant_kind)?;
            load.set_metadata(*scope, self.scope_kind)?;
        }
        Ok(())
    }

    fn tag_store(&self, store: InstructionValue<'ctx>) -> Lowered<()> {
        Ok(store.set_metadata(self.read_only, self.noalias_kind)?)
    }
}

/// The LLVM type of `lanes` f32s.
fn float_type(cx: &Context, lanes: u8) -> Lowered<BasicTypeEnum<'_>> {
    match lanes {
        1 => Ok(cx.f32_type().into()),
        n if kir::LANES.contains(&n) => Ok(cx.f32_type().vec_type(n.into()).into()),
        n => Err(format!("vector width {n} is not one of {:?}", kir::LANES).into()),
    }
}

/// The lowering state of one kernel.
struct Lower<'a, 'ctx> {
    cx: &'ctx Context,
    module: &'a Module<'ctx>,
    b: Builder<'ctx>,
    function: FunctionValue<'ctx>,
    buffers: Vec<PointerValue<'ctx>>,
    sizes: Vec<IntValue<'ctx>>,
    /// Each variable's stack slot and lanes.
    vars: Vec<(PointerValue<'ctx>, u8)>,
    /// The counters of the enclosing loops, outermost first.
    loops: Vec<IntValue<'ctx>>,
    aliasing: Aliasing<'ctx>,
    /// The first error inside an intrinsic expansion (the [`Math`] methods cannot fail).
    failed: Option<Error>,
}

impl<'a, 'ctx> Lower<'a, 'ctx> {
    /// Loads the buffer pointers and sizes and makes the variables (zeroed) in the entry block.
    fn new(
        cx: &'ctx Context,
        module: &'a Module<'ctx>,
        b: Builder<'ctx>,
        function: FunctionValue<'ctx>,
        kernel: &Kernel,
    ) -> Lowered<Lower<'a, 'ctx>> {
        let param = |i| {
            let p = function
                .get_nth_param(i)
                .ok_or_else(|| mismatch("parameter"))?;
            typed::<PointerValue>(p, "parameter")
        };
        let (buffer_array, size_array) = (param(0)?, param(1)?);
        let ptr = cx.ptr_type(AddressSpace::default());
        let i64t = cx.i64_type();
        let stored = kernel.stored_buffers();
        let mut lower = Lower {
            cx,
            module,
            b,
            function,
            buffers: vec![],
            sizes: vec![],
            vars: vec![],
            loops: vec![],
            aliasing: Aliasing::new(cx, &stored),
            failed: None,
        };
        for i in 0..kernel.buffers {
            let p = lower.argument(ptr.into(), buffer_array, i)?;
            lower.buffers.push(typed(p, "buffer pointer")?);
        }
        for i in 0..kernel.sizes {
            let s = lower.argument(i64t.into(), size_array, i)?;
            lower.sizes.push(typed(s, "size")?);
        }
        for &lanes in &kernel.vars {
            let ty = float_type(cx, lanes)?;
            let slot = lower.b.build_alloca(ty, "var")?;
            lower.b.build_store(slot, ty.const_zero())?;
            lower.vars.push((slot, lanes));
        }
        Ok(lower)
    }

    /// Element `i` of an argument array of `ty`s.
    fn argument(
        &self,
        ty: BasicTypeEnum<'ctx>,
        array: PointerValue<'ctx>,
        i: usize,
    ) -> Lowered<V<'ctx>> {
        let i = self.cx.i64_type().const_int(i as u64, false);
        // SAFETY: the caller passes arrays of the kernel's buffer and size counts
        // (`NativeKernel::call` checks them).
        let at = unsafe { self.b.build_in_bounds_gep(ty, array, &[i], "")? };
        Ok(self.b.build_load(ty, at, "")?)
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Lowered<()> {
        for s in stmts {
            match s {
                Stmt::Loop { start, end, body } => self.counted_loop(start, end, body)?,
                Stmt::Store {
                    buffer,
                    index,
                    value,
                    lanes,
                } => self.store(*buffer, index, value, *lanes)?,
                Stmt::StoreInt {
                    int,
                    buffer,
                    index,
                    value,
                } => self.store_int(*int, *buffer, index, value)?,
                Stmt::Set { var, value } => {
                    let (slot, lanes) = self.var(*var)?;
                    let v = self.value(value, lanes)?;
                    self.b.build_store(slot, v)?;
                }
                Stmt::If {
                    lhs,
                    cmp,
                    rhs,
                    then,
                    otherwise,
                } => self.branch(lhs, *cmp, rhs, then, otherwise)?,
                Stmt::Prefetch { buffer, index } => self.prefetch(*buffer, index)?,
            }
        }
        Ok(())
    }

    /// `llvm.prefetch` (read, high locality, data cache) of the address of `buffer[index]`,
    /// computed without `inbounds` as it may lie outside the buffer.
    fn prefetch(&mut self, buffer: usize, index: &Index) -> Lowered<()> {
        let base = *self
            .buffers
            .get(buffer)
            .ok_or_else(|| format!("buffer {buffer} does not exist"))?;
        let i = self.index(index)?;
        // SAFETY: the address is only a hint to the prefetch, never dereferenced.
        let at = unsafe { self.b.build_gep(self.cx.f32_type(), base, &[i], "")? };
        let ptr = self.cx.ptr_type(AddressSpace::default());
        let function = Intrinsic::find("llvm.prefetch")
            .and_then(|i| i.get_declaration(self.module, &[ptr.into()]))
            .ok_or("LLVM has no intrinsic llvm.prefetch")?;
        let i32t = self.cx.i32_type();
        let args = [
            at.into(),
            i32t.const_int(0, false).into(),
            i32t.const_int(3, false).into(),
            i32t.const_int(1, false).into(),
        ];
        self.b.build_call(function, &args, "")?;
        Ok(())
    }

    /// `buffer[index..index + lanes] = value`.
    fn store(&mut self, buffer: usize, index: &Index, value: &Value, lanes: u8) -> Lowered<()> {
        float_type(self.cx, lanes)?;
        let v = self.value(value, lanes)?;
        let at = self.element(buffer, index, self.cx.f32_type().into())?;
        let store = self.b.build_store(at, v)?;
        store.set_alignment(4)?;
        self.aliasing.tag_store(store)
    }

    /// `buffer[index] = value` truncated to `int`.
    fn store_int(&mut self, int: Int, buffer: usize, index: &Index, value: &Index) -> Lowered<()> {
        let v = self.index(value)?;
        let ty = self.int_type(int);
        let v = self.b.build_int_truncate_or_bit_cast(v, ty, "")?;
        let at = self.element(buffer, index, ty.into())?;
        let store = self.b.build_store(at, v)?;
        store.set_alignment(int.bytes() as u32)?;
        self.aliasing.tag_store(store)
    }

    /// The LLVM type of `int` elements.
    fn int_type(&self, int: Int) -> IntType<'ctx> {
        match int {
            Int::I64 => self.cx.i64_type(),
            Int::I32 => self.cx.i32_type(),
            Int::I16 => self.cx.i16_type(),
            Int::I8 | Int::U8 => self.cx.i8_type(),
        }
    }

    /// `if lhs <cmp> rhs { then } else { otherwise }`.
    fn branch(
        &mut self,
        lhs: &Index,
        cmp: Compare,
        rhs: &Index,
        then: &[Stmt],
        otherwise: &[Stmt],
    ) -> Lowered<()> {
        let (l, r) = (self.index(lhs)?, self.index(rhs)?);
        let c = self.b.build_int_compare(int_predicate(cmp), l, r, "")?;
        let then_block = self.cx.append_basic_block(self.function, "then");
        let else_block = self.cx.append_basic_block(self.function, "else");
        let join = self.cx.append_basic_block(self.function, "join");
        self.b.build_conditional_branch(c, then_block, else_block)?;
        for (block, body) in [(then_block, then), (else_block, otherwise)] {
            self.b.position_at_end(block);
            self.stmts(body)?;
            self.b.build_unconditional_branch(join)?;
        }
        self.b.position_at_end(join);
        Ok(())
    }

    /// A counted loop: the header's phi is the counter, tested (signed) against `end`.
    fn counted_loop(&mut self, start: &Index, end: &Index, body: &[Stmt]) -> Lowered<()> {
        let first = self.index(start)?;
        let n = self.index(end)?;
        let before = self.current_block()?;
        let header = self.cx.append_basic_block(self.function, "loop");
        let inner = self.cx.append_basic_block(self.function, "body");
        let exit = self.cx.append_basic_block(self.function, "exit");
        self.b.build_unconditional_branch(header)?;
        self.b.position_at_end(header);
        let phi = self.b.build_phi(self.cx.i64_type(), "i")?;
        let counter: IntValue = typed(phi.as_basic_value(), "loop counter")?;
        let more = self
            .b
            .build_int_compare(IntPredicate::SLT, counter, n, "")?;
        self.b.build_conditional_branch(more, inner, exit)?;
        self.b.position_at_end(inner);
        self.loops.push(counter);
        self.stmts(body)?;
        self.loops.pop();
        let one = self.cx.i64_type().const_int(1, false);
        // No overflow: counter < end <= i64::MAX.
        let next = self.b.build_int_nsw_add(counter, one, "")?;
        let latch = self.current_block()?;
        self.b.build_unconditional_branch(header)?;
        phi.add_incoming(&[(&first, before), (&next, latch)]);
        self.b.position_at_end(exit);
        Ok(())
    }

    fn current_block(&self) -> Lowered<inkwell::basic_block::BasicBlock<'ctx>> {
        self.b
            .get_insert_block()
            .ok_or_else(|| mismatch("insertion point"))
    }

    fn var(&self, var: usize) -> Lowered<(PointerValue<'ctx>, u8)> {
        self.vars
            .get(var)
            .copied()
            .ok_or_else(|| format!("variable {var} is not declared").into())
    }

    fn index(&mut self, i: &Index) -> Lowered<IntValue<'ctx>> {
        let i64t = self.cx.i64_type();
        Ok(match i {
            Index::Const(c) => i64t.const_int(*c as u64, true),
            Index::Size(s) => *self
                .sizes
                .get(*s)
                .ok_or_else(|| format!("size parameter {s} does not exist"))?,
            Index::Loop(d) => *self
                .loops
                .get(*d)
                .ok_or_else(|| format!("loop {d} is not enclosing"))?,
            Index::Add(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.build_int_add(x, y, "")?
            }
            Index::Sub(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.build_int_sub(x, y, "")?
            }
            Index::Mul(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.build_int_mul(x, y, "")?
            }
            Index::Div(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.build_int_signed_div(x, y, "")?
            }
            Index::Rem(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.build_int_signed_rem(x, y, "")?
            }
            Index::Min(x, y) => self.index_extremum(IntPredicate::SLT, x, y)?,
            Index::Max(x, y) => self.index_extremum(IntPredicate::SGT, x, y)?,
            Index::Load(int, buffer, index) => {
                let ty = self.int_type(*int);
                let v = self.load(ty.into(), ty.into(), *buffer, index, int.bytes() as u32)?;
                let v: IntValue = typed(v, "integer load")?;
                match int {
                    Int::I64 => v,
                    Int::U8 => self.b.build_int_z_extend(v, i64t, "")?,
                    _ => self.b.build_int_s_extend(v, i64t, "")?,
                }
            }
            Index::Select(cmp, operands) => {
                let [a, b, then, otherwise] = &**operands;
                let (a, b) = (self.index(a)?, self.index(b)?);
                let c = self.b.build_int_compare(int_predicate(*cmp), a, b, "")?;
                let (then, otherwise) = (self.index(then)?, self.index(otherwise)?);
                typed(self.b.build_select(c, then, otherwise, "")?, "select")?
            }
        })
    }

    /// `x <predicate> y ? x : y` (signed min or max).
    fn index_extremum(&mut self, p: IntPredicate, x: &Index, y: &Index) -> Lowered<IntValue<'ctx>> {
        let (x, y) = (self.index(x)?, self.index(y)?);
        let c = self.b.build_int_compare(p, x, y, "")?;
        typed(self.b.build_select(c, x, y, "")?, "select")
    }

    /// The address of element `index` of `buffer`, with elements of type `element`.
    fn element(
        &mut self,
        buffer: usize,
        index: &Index,
        element: BasicTypeEnum<'ctx>,
    ) -> Lowered<PointerValue<'ctx>> {
        let base = *self
            .buffers
            .get(buffer)
            .ok_or_else(|| format!("buffer {buffer} does not exist"))?;
        let i = self.index(index)?;
        // SAFETY: kernels only address elements inside their buffers (the contract of
        // `NativeKernel::call`), which is what `inbounds` promises.
        Ok(unsafe { self.b.build_in_bounds_gep(element, base, &[i], "")? })
    }

    /// A load of a `ty` at element `index` of `buffer` (elements of type `element`).
    fn load(
        &mut self,
        ty: BasicTypeEnum<'ctx>,
        element: BasicTypeEnum<'ctx>,
        buffer: usize,
        index: &Index,
        align: u32,
    ) -> Lowered<V<'ctx>> {
        let at = self.element(buffer, index, element)?;
        let v = self.b.build_load(ty, at, "")?;
        let load = v.as_instruction_value().ok_or_else(|| mismatch("load"))?;
        load.set_alignment(align)?;
        self.aliasing.tag_load(load, buffer)?;
        Ok(v)
    }

    /// Lowers a value computed `lanes` lanes at a time.
    fn value(&mut self, v: &Value, lanes: u8) -> Lowered<V<'ctx>> {
        match v {
            Value::Const(c) => Ok(self.constant(*c, lanes)),
            Value::Load(buffer, index) => {
                let ty = float_type(self.cx, lanes)?;
                self.load(ty, self.cx.f32_type().into(), *buffer, index, 4)
            }
            Value::Var(var) => {
                let (slot, declared) = self.var(*var)?;
                if declared != lanes {
                    return Err(
                        format!("variable {var} has {declared} lanes, used at {lanes}").into(),
                    );
                }
                Ok(self.b.build_load(float_type(self.cx, lanes)?, slot, "")?)
            }
            Value::Splat(x) => {
                let x = self.value(x, 1)?;
                self.widen(x, lanes)
            }
            Value::Reduce(op, width, x) => {
                if lanes != 1 {
                    return Err("a horizontal reduction is a scalar".into());
                }
                self.reduce(*op, *width, x)
            }
            Value::FromIndex(i) => {
                let i = self.index(i)?;
                // Through f64, as the interpreter's Cast rounds (exact up to 2^53).
                let wide = self
                    .b
                    .build_signed_int_to_float(i, self.cx.f64_type(), "")?;
                let x = self.b.build_float_trunc(wide, self.cx.f32_type(), "")?;
                self.widen(x.into(), lanes)
            }
            Value::Unary(op, x) => {
                let x = self.value(x, lanes)?;
                self.unary(*op, x, lanes)
            }
            Value::Binary(op, x, y) => {
                let (x, y) = (self.value(x, lanes)?, self.value(y, lanes)?);
                self.binary(*op, x, y)
            }
            Value::Fma(a, b, c) => {
                let a = self.value(a, lanes)?;
                let (b, c) = (self.value(b, lanes)?, self.value(c, lanes)?);
                self.intrinsic("llvm.fma", &[a, b, c])
            }
            Value::Select(cmp, args) => {
                let [a, b, then, otherwise] = &**args;
                let (a, b) = (self.value(a, lanes)?, self.value(b, lanes)?);
                let (t, o) = (self.value(then, lanes)?, self.value(otherwise, lanes)?);
                let predicate = match cmp {
                    Compare::Lt => FloatPredicate::OLT,
                    Compare::Le => FloatPredicate::OLE,
                    Compare::Eq => FloatPredicate::OEQ,
                };
                self.compare_select(predicate, a, b, t, o)
            }
        }
    }

    /// `c` as an f32 (`lanes` = 1) or splatted to `lanes` lanes.
    fn constant(&self, c: f32, lanes: u8) -> V<'ctx> {
        let scalar = self.cx.f32_type().const_float(c.into());
        if lanes == 1 {
            scalar.into()
        } else {
            VectorType::const_vector(&vec![scalar; lanes.into()]).into()
        }
    }

    /// A scalar broadcast to `lanes` lanes.
    fn widen(&self, scalar: V<'ctx>, lanes: u8) -> Lowered<V<'ctx>> {
        if lanes == 1 {
            return Ok(scalar);
        }
        let ty = self.cx.f32_type().vec_type(lanes.into());
        let zero = self.cx.i32_type().const_zero();
        let v = self
            .b
            .build_insert_element(ty.get_poison(), scalar, zero, "")?;
        let mask = self.cx.i32_type().vec_type(lanes.into()).const_zero();
        Ok(self
            .b
            .build_shuffle_vector(v, ty.get_poison(), mask, "")?
            .into())
    }

    /// The lanes `picks` of `v`, as a vector.
    fn pick(&self, v: VectorValue<'ctx>, picks: impl Iterator<Item = u32>) -> Lowered<V<'ctx>> {
        let i32t = self.cx.i32_type();
        let mask: Vec<_> = picks.map(|p| i32t.const_int(p.into(), false)).collect();
        let mask = VectorType::const_vector(&mask);
        let poison = v.get_type().get_poison();
        Ok(self.b.build_shuffle_vector(v, poison, mask, "")?.into())
    }

    /// The horizontal `op` of `x` computed at `lanes` lanes: halves are combined down to four
    /// lanes, then `(l0 op l1) op (l2 op l3)` as in the Cranelift backend.
    fn reduce(&mut self, op: Binary, lanes: u8, x: &Value) -> Lowered<V<'ctx>> {
        if lanes == 1 {
            return Err("a reduction of 1 lane".into());
        }
        float_type(self.cx, lanes)?;
        let as_vector = |v: V<'ctx>| typed::<VectorValue>(v, "reduction");
        let mut v = as_vector(self.value(x, lanes)?)?;
        let mut n = u32::from(lanes);
        while n > 4 {
            let (lo, hi) = (self.pick(v, 0..n / 2)?, self.pick(v, n / 2..n)?);
            v = as_vector(self.binary(op, lo, hi)?)?;
            n /= 2;
        }
        let (even, odd) = (
            self.pick(v, [0, 2].into_iter())?,
            self.pick(v, [1, 3].into_iter())?,
        );
        let pairs = as_vector(self.binary(op, even, odd)?)?;
        let lane = |i: u64| self.cx.i32_type().const_int(i, false);
        let first = self.b.build_extract_element(pairs, lane(0), "")?;
        let second = self.b.build_extract_element(pairs, lane(1), "")?;
        self.binary(op, first, second)
    }

    fn unary(&mut self, op: Unary, x: V<'ctx>, lanes: u8) -> Lowered<V<'ctx>> {
        let mut m = Emit { l: self, lanes };
        let y = match op {
            Unary::Neg => return m.l.neg(x),
            Unary::Abs => return m.l.intrinsic("llvm.fabs", &[x]),
            Unary::Sqrt => return m.l.intrinsic("llvm.sqrt", &[x]),
            Unary::Floor => return m.l.intrinsic("llvm.floor", &[x]),
            Unary::Rsqrt => {
                let s = m.l.intrinsic("llvm.sqrt", &[x])?;
                return m.l.binary(Binary::Div, m.l.constant(1.0, lanes), s);
            }
            Unary::Exp => intrinsics::exp(&mut m, x),
            Unary::Erf => intrinsics::erf(&mut m, x),
            Unary::Tanh => intrinsics::tanh(&mut m, x),
            Unary::Sigmoid => intrinsics::sigmoid(&mut m, x),
        };
        match self.failed.take() {
            Some(e) => Err(e),
            None => Ok(y),
        }
    }

    fn neg(&self, x: V<'ctx>) -> Lowered<V<'ctx>> {
        fn at<'ctx, T: FloatMathValue<'ctx>>(b: &Builder<'ctx>, x: T) -> Lowered<V<'ctx>> {
            Ok(b.build_float_neg(x, "")?.as_basic_value_enum())
        }
        match x {
            BasicValueEnum::FloatValue(x) => at(&self.b, x),
            BasicValueEnum::VectorValue(x) => at(&self.b, x),
            _ => Err(mismatch("negation")),
        }
    }

    fn binary(&self, op: Binary, x: V<'ctx>, y: V<'ctx>) -> Lowered<V<'ctx>> {
        let name = match op {
            Binary::Max => "llvm.maximum",
            Binary::Min => "llvm.minimum",
            Binary::CopySign => "llvm.copysign",
            Binary::Add | Binary::Sub | Binary::Mul | Binary::Div => return self.arith(op, x, y),
        };
        self.intrinsic(name, &[x, y])
    }

    /// `x + y`, `x - y`, `x * y` or `x / y`, on scalars or vectors.
    fn arith(&self, op: Binary, x: V<'ctx>, y: V<'ctx>) -> Lowered<V<'ctx>> {
        fn at<'ctx, T: FloatMathValue<'ctx>>(
            b: &Builder<'ctx>,
            op: Binary,
            x: T,
            y: T,
        ) -> Lowered<V<'ctx>> {
            let v = match op {
                Binary::Add => b.build_float_add(x, y, "")?,
                Binary::Sub => b.build_float_sub(x, y, "")?,
                Binary::Mul => b.build_float_mul(x, y, "")?,
                Binary::Div => b.build_float_div(x, y, "")?,
                Binary::Max | Binary::Min | Binary::CopySign => return Err(mismatch("operation")),
            };
            Ok(v.as_basic_value_enum())
        }
        match (x, y) {
            (BasicValueEnum::FloatValue(x), BasicValueEnum::FloatValue(y)) => at(&self.b, op, x, y),
            (BasicValueEnum::VectorValue(x), BasicValueEnum::VectorValue(y)) => {
                at(&self.b, op, x, y)
            }
            _ => Err(mismatch("arithmetic")),
        }
    }

    /// `a <predicate> b ? then : otherwise` per lane (ordered: false when either is NaN).
    fn compare_select(
        &self,
        predicate: FloatPredicate,
        a: V<'ctx>,
        b: V<'ctx>,
        then: V<'ctx>,
        otherwise: V<'ctx>,
    ) -> Lowered<V<'ctx>> {
        fn at<'ctx, T: FloatMathValue<'ctx>>(
            builder: &Builder<'ctx>,
            predicate: FloatPredicate,
            (a, b): (T, T),
            then: V<'ctx>,
            otherwise: V<'ctx>,
        ) -> Lowered<V<'ctx>> {
            let c = builder.build_float_compare(predicate, a, b, "")?;
            Ok(builder.build_select(c, then, otherwise, "")?)
        }
        match (a, b) {
            (BasicValueEnum::FloatValue(a), BasicValueEnum::FloatValue(b)) => {
                at(&self.b, predicate, (a, b), then, otherwise)
            }
            (BasicValueEnum::VectorValue(a), BasicValueEnum::VectorValue(b)) => {
                at(&self.b, predicate, (a, b), then, otherwise)
            }
            _ => Err(mismatch("comparison")),
        }
    }

    /// A call of the LLVM intrinsic `name` overloaded on the type of the first argument.
    fn intrinsic(&self, name: &str, args: &[V<'ctx>]) -> Lowered<V<'ctx>> {
        let ty = args.first().ok_or_else(|| mismatch(name))?.get_type();
        let function = Intrinsic::find(name)
            .and_then(|i| i.get_declaration(self.module, &[ty]))
            .ok_or_else(|| format!("LLVM has no intrinsic {name} for {ty}"))?;
        let args: Vec<BasicMetadataValueEnum> = args.iter().map(|&a| a.into()).collect();
        match self.b.build_call(function, &args, "")?.try_as_basic_value() {
            ValueKind::Basic(v) => Ok(v),
            ValueKind::Instruction(_) => Err(mismatch(name)),
        }
    }

    /// The float whose bits are those of `a` shifted left by 23.
    fn exponent_from_low_bits(&self, a: V<'ctx>) -> Lowered<V<'ctx>> {
        let i32t = self.cx.i32_type();
        let shift = i32t.const_int(23, false);
        let shifted: V = match a {
            BasicValueEnum::FloatValue(_) => {
                let bits: IntValue = typed(self.b.build_bit_cast(a, i32t, "")?, "bits")?;
                self.b.build_left_shift(bits, shift, "")?.into()
            }
            BasicValueEnum::VectorValue(v) => {
                let ty = i32t.vec_type(v.get_type().get_size());
                let bits: VectorValue = typed(self.b.build_bit_cast(a, ty, "")?, "bits")?;
                let shift = VectorType::const_vector(&vec![shift; ty.get_size() as usize]);
                self.b.build_left_shift(bits, shift, "")?.into()
            }
            _ => return Err(mismatch("exponent")),
        };
        Ok(self.b.build_bit_cast(shifted, a.get_type(), "")?)
    }

    /// `r`'s value, or `fallback` after recording the error (reported once the intrinsic is
    /// expanded).
    fn keep(&mut self, r: Lowered<V<'ctx>>, fallback: V<'ctx>) -> V<'ctx> {
        r.unwrap_or_else(|e| {
            self.failed.get_or_insert(e);
            fallback
        })
    }
}

/// The intrinsics' arithmetic at one width.
struct Emit<'l, 'a, 'ctx> {
    l: &'l mut Lower<'a, 'ctx>,
    lanes: u8,
}

impl<'ctx> Math for Emit<'_, '_, 'ctx> {
    type V = V<'ctx>;
    fn constant(&mut self, c: f32) -> V<'ctx> {
        self.l.constant(c, self.lanes)
    }
    fn add(&mut self, a: V<'ctx>, b: V<'ctx>) -> V<'ctx> {
        let r = self.l.arith(Binary::Add, a, b);
        self.l.keep(r, a)
    }
    fn sub(&mut self, a: V<'ctx>, b: V<'ctx>) -> V<'ctx> {
        let r = self.l.arith(Binary::Sub, a, b);
        self.l.keep(r, a)
    }
    fn mul(&mut self, a: V<'ctx>, b: V<'ctx>) -> V<'ctx> {
        let r = self.l.arith(Binary::Mul, a, b);
        self.l.keep(r, a)
    }
    fn div(&mut self, a: V<'ctx>, b: V<'ctx>) -> V<'ctx> {
        let r = self.l.arith(Binary::Div, a, b);
        self.l.keep(r, a)
    }
    fn fma(&mut self, a: V<'ctx>, b: V<'ctx>, c: V<'ctx>) -> V<'ctx> {
        let r = self.l.intrinsic("llvm.fma", &[a, b, c]);
        self.l.keep(r, a)
    }
    fn clamp(&mut self, a: V<'ctx>, lo: V<'ctx>, hi: V<'ctx>) -> V<'ctx> {
        // `a < lo ? lo : a` then `hi < a ? hi : a` (NaN `a` passes through), as in Cranelift.
        let r = self
            .l
            .compare_select(FloatPredicate::OLT, a, lo, lo, a)
            .and_then(|a| self.l.compare_select(FloatPredicate::OLT, hi, a, hi, a));
        self.l.keep(r, a)
    }
    fn abs(&mut self, a: V<'ctx>) -> V<'ctx> {
        let r = self.l.intrinsic("llvm.fabs", &[a]);
        self.l.keep(r, a)
    }
    fn copysign(&mut self, a: V<'ctx>, b: V<'ctx>) -> V<'ctx> {
        let r = self.l.intrinsic("llvm.copysign", &[a, b]);
        self.l.keep(r, a)
    }
    fn floor(&mut self, a: V<'ctx>) -> V<'ctx> {
        let r = self.l.intrinsic("llvm.floor", &[a]);
        self.l.keep(r, a)
    }
    fn exponent_from_low_bits(&mut self, a: V<'ctx>) -> V<'ctx> {
        let r = self.l.exponent_from_low_bits(a);
        self.l.keep(r, a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intrinsics::Scalar;

    /// The CPU level the tests compile for: AVX-512 where the host has it.
    fn cpu() -> &'static str {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "x86-64-v4"
        } else {
            "x86-64-v3"
        }
    }

    /// Calls `k` on f32 and i64 buffers and sizes.
    fn run(k: &NativeKernel, buffers: &mut [&mut [f32]], ids: Option<&mut [i64]>, sizes: &[i64]) {
        let mut pointers: Vec<*mut u8> =
            buffers.iter_mut().map(|b| b.as_mut_ptr().cast()).collect();
        if let Some(ids) = ids {
            pointers.insert(1, ids.as_mut_ptr().cast());
        }
        // SAFETY: every test sizes its buffers for the accesses its kernel makes.
        unsafe { k.call(&pointers, sizes) }
    }

    /// Whether two results are the same bits (any NaN equals any NaN).
    fn same_bits(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// `out[i] = op(x[i])` for `n` elements (a multiple of `lanes`), `lanes` at a time.
    fn map_kernel(op: Unary, lanes: u8) -> Kernel {
        let at = Index::Loop(0) * Index::Const(lanes.into());
        Kernel {
            name: format!("map_{op:?}_{lanes}"),
            buffers: 2,
            sizes: 1,
            vars: vec![],
            body: vec![Stmt::for_range(
                0.into(),
                Index::Size(0) / Index::Const(lanes.into()),
                vec![Stmt::store(
                    1,
                    at.clone(),
                    Value::load(0, at).unary(op),
                    lanes,
                )],
            )],
        }
    }

    fn reference(op: Unary, x: f32) -> f32 {
        match op {
            Unary::Neg => -x,
            Unary::Abs => x.abs(),
            Unary::Sqrt => x.sqrt(),
            Unary::Rsqrt => 1.0 / x.sqrt(),
            Unary::Floor => x.floor(),
            Unary::Exp => intrinsics::exp(&mut Scalar, x),
            Unary::Erf => intrinsics::erf(&mut Scalar, x),
            Unary::Tanh => intrinsics::tanh(&mut Scalar, x),
            Unary::Sigmoid => intrinsics::sigmoid(&mut Scalar, x),
        }
    }

    #[test]
    fn intrinsics_match_the_reference_arithmetic_at_every_width() {
        let mut xs: Vec<f32> = (0..4000).map(|i| (i as f32 - 2000.0) / 37.0).collect();
        xs.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            100.0,
            -100.0,
            0.0,
            -0.0,
            1e-30,
        ]);
        xs.truncate(xs.len() / 16 * 16);
        let ops = [
            Unary::Exp,
            Unary::Erf,
            Unary::Tanh,
            Unary::Sigmoid,
            Unary::Rsqrt,
            Unary::Floor,
            Unary::Abs,
            Unary::Neg,
            Unary::Sqrt,
        ];
        let cases: Vec<(Unary, u8)> = ops
            .iter()
            .flat_map(|&op| [1, 4, 8, 16].map(|lanes| (op, lanes)))
            .collect();
        let kernels: Vec<Kernel> = cases.iter().map(|&(op, l)| map_kernel(op, l)).collect();
        let compiled = compile_all(&kernels, cpu()).unwrap();
        for (&(op, lanes), k) in cases.iter().zip(&compiled) {
            let mut x = xs.clone();
            let mut out = vec![0f32; x.len()];
            run(k, &mut [&mut x, &mut out], None, &[xs.len() as i64]);
            for (&xi, &got) in xs.iter().zip(&out) {
                let want = reference(op, xi);
                assert!(
                    same_bits(got, want) || (got - want).abs() <= 1e-7 * want.abs().max(1e-30),
                    "{op:?} lanes {lanes} at {xi}: {got} vs {want}"
                );
            }
        }
    }

    /// out[0..3] = the sum of relu(x) (select), max and min of x, through `lanes`-wide
    /// variables reduced horizontally (the sum starting from the zeroed variable); out[3 + j] =
    /// x[ids[j]] (an i64 gather).
    fn mixed_kernel(lanes: u8) -> Kernel {
        let x = || Value::load(0, Index::Loop(0) * Index::Const(lanes.into()));
        let var = |v: usize, op: Binary| Stmt::set(v, Value::Var(v).binary(op, x()));
        let relu = Value::select(Compare::Lt, x(), Value::Const(0.0), Value::Const(0.0), x());
        let reduced = |v: usize, op: Binary, at: i64| {
            Stmt::store(2, at.into(), Value::Var(v).reduce(op, lanes), 1)
        };
        Kernel {
            name: format!("mixed_{lanes}"),
            buffers: 3,
            sizes: 2,
            vars: vec![lanes; 3],
            body: vec![
                Stmt::set(1, Value::Const(f32::NEG_INFINITY)),
                Stmt::set(2, Value::Const(f32::INFINITY).splat()),
                Stmt::for_range(
                    0.into(),
                    Index::Size(0) / Index::Const(lanes.into()),
                    vec![
                        Stmt::set(0, Value::Var(0) + relu),
                        var(1, Binary::Max),
                        var(2, Binary::Min),
                    ],
                ),
                reduced(0, Binary::Add, 0),
                reduced(1, Binary::Max, 1),
                reduced(2, Binary::Min, 2),
                Stmt::for_range(
                    0.into(),
                    Index::Size(1),
                    vec![Stmt::store(
                        2,
                        Index::Loop(0) + Index::Const(3),
                        Value::load(0, Index::load(1, Index::Loop(0))),
                        1,
                    )],
                ),
            ],
        }
    }

    #[test]
    fn variables_reductions_selects_and_gathers_lower_correctly_at_4_and_16_lanes() {
        let n = 64;
        let kernels = [mixed_kernel(4), mixed_kernel(16)];
        for (kernel, k) in kernels.iter().zip(compile_all(&kernels, cpu()).unwrap()) {
            let mut x: Vec<f32> = (0..n).map(|i| ((i * 37) % n) as f32 - 31.5).collect();
            let mut ids: Vec<i64> = vec![3, 63, 0, 17];
            let mut out = vec![0f32; 7];
            run(&k, &mut [&mut x, &mut out], Some(&mut ids), &[n as i64, 4]);
            let relu_sum: f32 = x.iter().map(|v| v.max(0.0)).sum();
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let min = x.iter().copied().fold(f32::INFINITY, f32::min);
            let want = vec![relu_sum, max, min, x[3], x[63], x[0], x[17]];
            assert_eq!(out, want, "{}", kernel.name);
        }
    }

    /// Inputs with every special value and inexact products and sums.
    fn awkward_inputs(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        let mut xs: Vec<f32> = (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1 << 20) as f32 - 8.0
            })
            .collect();
        let special = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-30,
            1.0,
        ];
        for (i, s) in special.into_iter().enumerate() {
            xs[(i * 5 + seed as usize) % n] = s;
        }
        xs
    }

    /// Every binary op, Fma, the three selects, Exp and Tanh, elementwise `lanes` at a time into
    /// rows of `out`, then three horizontal reductions (4 lanes) of `a * b` per 4 elements.
    fn operations_kernel(lanes: u8) -> Kernel {
        let at = || Index::Loop(0) * Index::Const(lanes.into());
        let (a, b, c) = (
            || Value::load(0, at()),
            || Value::load(1, at()),
            || Value::load(2, at()),
        );
        let mut results: Vec<Value> = [
            Binary::Add,
            Binary::Sub,
            Binary::Mul,
            Binary::Div,
            Binary::Max,
            Binary::Min,
            Binary::CopySign,
        ]
        .into_iter()
        .map(|op| a().binary(op, b()))
        .collect();
        results.extend([
            a().fma(b(), c()),
            Value::select(Compare::Lt, a(), b(), c(), a()),
            Value::select(Compare::Le, a(), c(), b(), c()),
            Value::select(Compare::Eq, a(), a(), b(), c()),
            a().unary(Unary::Exp),
            b().unary(Unary::Tanh) * Value::FromIndex(Index::Loop(0)).splat(),
        ]);
        let row = |r: usize| Index::Size(0) * Index::Const(r as i64);
        let rows = results.len();
        let elementwise = results
            .into_iter()
            .enumerate()
            .map(|(r, v)| Stmt::store(3, row(r) + at(), v, lanes))
            .collect();
        let quad = || {
            Value::load(0, Index::Loop(0) * Index::Const(4))
                * Value::load(1, Index::Loop(0) * Index::Const(4))
        };
        let reductions = [Binary::Add, Binary::Max, Binary::Min]
            .into_iter()
            .enumerate()
            .map(|(r, op)| Stmt::store(3, row(rows + r) + Index::Loop(0), quad().reduce(op, 4), 1))
            .collect();
        Kernel {
            name: format!("operations_{lanes}"),
            buffers: 4,
            sizes: 1,
            vars: vec![],
            body: vec![
                Stmt::for_range(
                    0.into(),
                    Index::Size(0) / Index::Const(lanes.into()),
                    elementwise,
                ),
                Stmt::for_range(0.into(), Index::Size(0) / Index::Const(4), reductions),
            ],
        }
    }

    /// Nested loops (the inner one empty for some rows), an `If` in an `If`, and index
    /// arithmetic with Div, Rem, Min and Max, into a rows × cols matrix; a 4-lane splat of the
    /// row number into `rows × 4` more elements.
    fn indices_kernel() -> Kernel {
        let (i, j) = (|| Index::Loop(0), || Index::Loop(1));
        let cols = || Index::Size(1);
        let at = || i() * cols() + j();
        let f = Value::FromIndex;
        let store = |v: Value| Stmt::store(0, at(), v, 1);
        let inner = Stmt::If {
            lhs: j(),
            cmp: Compare::Lt,
            rhs: i(),
            then: vec![store(f(
                (i() * 7.into() + j()) / 3.into() % 5.into() + i().min(j())
            ))],
            otherwise: vec![Stmt::If {
                lhs: j(),
                cmp: Compare::Eq,
                rhs: i() + 1.into(),
                then: vec![store(f(i().max(j()) - (i() * j()) % 4.into()))],
                otherwise: vec![Stmt::If {
                    lhs: j(),
                    cmp: Compare::Le,
                    rhs: i() + 3.into(),
                    then: vec![store(f(j() / 2.into()) * Value::Const(0.5))],
                    otherwise: vec![],
                }],
            }],
        };
        let extra = Index::Size(0) * cols() + i() * 4.into();
        Kernel {
            name: "indices".into(),
            buffers: 1,
            sizes: 2,
            vars: vec![],
            body: vec![Stmt::for_range(
                0.into(),
                Index::Size(0),
                vec![
                    Stmt::for_range(i().min(2.into()), cols(), vec![inner]),
                    Stmt::for_range(
                        i(),
                        2.into(),
                        vec![Stmt::store(0, at(), Value::Const(-1.0), 1)],
                    ),
                    Stmt::store(0, extra, f(i()).splat() + Value::Const(0.25), 4),
                ],
            )],
        }
    }

    /// Runs `kernel` compiled by both backends on the same buffers and compares every bit.
    fn agree_with_cranelift(kernel: &Kernel, buffers: &[Vec<f32>], sizes: &[i64]) {
        let llvm = compile(kernel, cpu()).unwrap();
        let cranelift = crate::cranelift::compile(kernel).unwrap();
        let mut outputs = vec![];
        for k in [&llvm, &cranelift] {
            let mut bufs = buffers.to_vec();
            let mut refs: Vec<&mut [f32]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            run(k, &mut refs, None, sizes);
            outputs.push(bufs);
        }
        for (b, (l, c)) in outputs[0].iter().zip(&outputs[1]).enumerate() {
            for (e, (&l, &c)) in l.iter().zip(c).enumerate() {
                assert!(
                    same_bits(l, c),
                    "{}: buffer {b}[{e}]: LLVM {l} vs Cranelift {c}",
                    kernel.name
                );
            }
        }
    }

    #[test]
    fn four_lane_and_scalar_kernels_agree_bit_for_bit_with_cranelift() {
        let n = 64;
        for lanes in [1, 4] {
            let buffers = [
                awkward_inputs(n, 1),
                awkward_inputs(n, 2),
                awkward_inputs(n, 3),
                vec![0.0; n * 16],
            ];
            agree_with_cranelift(&operations_kernel(lanes), &buffers, &[n as i64]);
        }
        let (rows, cols) = (9, 7);
        agree_with_cranelift(
            &indices_kernel(),
            &[vec![7.0; rows * cols + rows * 4]],
            &[rows as i64, cols as i64],
        );
    }

    #[test]
    fn invalid_kernels_are_errors_naming_the_kernel() {
        let kernel = |name: &str, vars: Vec<u8>, body: Vec<Stmt>| Kernel {
            name: name.into(),
            buffers: 1,
            sizes: 0,
            vars,
            body,
        };
        let cases = [
            kernel(
                "three_lanes",
                vec![],
                vec![Stmt::store(0, 0.into(), Value::Const(1.0), 3)],
            ),
            kernel(
                "bad_var_width",
                vec![4],
                vec![Stmt::store(0, 0.into(), Value::Var(0), 8)],
            ),
            kernel("bad_var_lanes", vec![5], vec![]),
            kernel(
                "undeclared_var",
                vec![],
                vec![Stmt::set(0, Value::Const(1.0))],
            ),
            kernel(
                "one_lane_reduce",
                vec![],
                vec![Stmt::store(
                    0,
                    0.into(),
                    Value::load(0, 0.into()).reduce(Binary::Add, 1),
                    1,
                )],
            ),
            kernel(
                "vector_reduce",
                vec![],
                vec![Stmt::store(
                    0,
                    0.into(),
                    Value::load(0, 0.into()).reduce(Binary::Add, 4),
                    4,
                )],
            ),
            kernel(
                "no_buffer",
                vec![],
                vec![Stmt::store(1, 0.into(), Value::Const(1.0), 1)],
            ),
            kernel(
                "no_size",
                vec![],
                vec![Stmt::store(0, Index::Size(0), Value::Const(1.0), 1)],
            ),
            kernel(
                "no_loop",
                vec![],
                vec![Stmt::store(0, Index::Loop(0), Value::Const(1.0), 1)],
            ),
        ];
        for k in &cases {
            let e = emit_object(std::slice::from_ref(k), cpu()).err();
            let e = e.unwrap_or_else(|| panic!("{} compiled", k.name));
            assert!(e.contains(&format!("kernel `{}`", k.name)), "{e}");
        }
        let twice = [cases[0].clone(), cases[0].clone()];
        assert!(compile_all(&twice, cpu()).is_err());
    }

    #[test]
    fn objects_export_every_kernel_by_name() {
        let fill = |name: &str, c: f32| Kernel {
            name: name.into(),
            buffers: 1,
            sizes: 0,
            vars: vec![],
            body: vec![Stmt::store(0, 0.into(), Value::Const(c), 16)],
        };
        let kernels = [fill("kiln_first", 1.5), fill("kiln_second", -2.0)];
        let object = emit_object(&kernels, cpu()).unwrap();
        assert!(object.starts_with(b"\x7fELF"));
        for k in &kernels {
            assert!(object.windows(k.name.len()).any(|w| w == k.name.as_bytes()));
        }
        let compiled = compile_all(&kernels, cpu()).unwrap();
        for (k, c) in compiled.iter().zip([1.5, -2.0]) {
            let mut out = vec![0f32; 17];
            run(k, &mut [&mut out], None, &[]);
            assert_eq!(out[..16], [c; 16]);
            assert_eq!(out[16], 0.0);
        }
    }

    #[test]
    fn sixteen_lanes_use_512_bit_registers_on_x86_64_v4() {
        let kernels = [map_kernel(Unary::Exp, 16), mixed_kernel(16)];
        let assembly =
            |cpu| String::from_utf8(emit(&kernels, cpu, FileType::Assembly).unwrap()).unwrap();
        let v4 = assembly("x86-64-v4");
        assert!(v4.contains("zmm"), "{v4}");
        let v3 = assembly("x86-64-v3");
        assert!(!v3.contains("zmm") && v3.contains("ymm"), "{v3}");
    }
}
