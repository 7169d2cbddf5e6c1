//! The Cranelift backend ([`Cranelift`]): lowers KIR [`Kernel`]s to native code, either
//! JIT-compiled into memory ([`compile_all`]) or emitted as a relocatable object for a shared
//! library ([`emit_object`]), both with the [`crate::native`] kernel ABI. Vectors are f32x4
//! (Cranelift's x86-64 vectors are 128-bit).

use crate::intrinsics::{self, Math};
use crate::kir::{Binary, Compare, Index, Int, Kernel, Stmt, Unary, Value};
use crate::CodeGenerator;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use kiln_rt::native::{CodeOwner, KernelFn, NativeKernel};
use kiln_rt::plan::Target;
use std::sync::Arc;

type Ssa = cranelift_codegen::ir::Value;

/// The JIT module that owns the code of a batch of kernels.
struct JitCode(#[allow(dead_code)] JITModule);

// SAFETY: after `finalize_definitions` the module's code is immutable; it is only kept alive
// (never used) while kernels that point into it exist.
unsafe impl Send for JitCode {}
// SAFETY: as above; nothing reads or writes the module through a shared reference.
unsafe impl Sync for JitCode {}

/// The Cranelift [`CodeGenerator`]: fast compilation, f32x4 vectors, code for this CPU's
/// features.
#[derive(Clone, Copy, Debug)]
pub struct Cranelift;

impl CodeGenerator for Cranelift {
    fn name(&self) -> &'static str {
        "cranelift"
    }

    fn description(&self) -> &'static str {
        "Compiles fast; 128-bit vectors"
    }

    fn lanes(&self) -> u8 {
        4
    }

    fn compile_all(&self, kernels: &[Kernel]) -> Result<Vec<NativeKernel>, String> {
        compile_all(kernels)
    }

    fn emit_objects(&self, kernels: &[Kernel]) -> Result<Vec<Vec<u8>>, String> {
        Ok(vec![emit_object(kernels)?])
    }

    /// No CPU level; the features are Cranelift's ISA flags of this CPU.
    fn target(&self) -> Result<Target, String> {
        Ok(Target {
            backend: self.name().into(),
            cpu: String::new(),
            features: host_features()?,
        })
    }
}

/// JIT-compiles one kernel for the host CPU.
pub fn compile(kernel: &Kernel) -> Result<NativeKernel, String> {
    Ok(compile_all(std::slice::from_ref(kernel))?.remove(0))
}

/// JIT-compiles kernels for the host CPU into one code module (their names must differ).
pub fn compile_all(kernels: &[Kernel]) -> Result<Vec<NativeKernel>, String> {
    let isa = host_isa(false)?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let ids = define_all(&mut module, kernels)?;
    module
        .finalize_definitions()
        .map_err(|e| format!("cranelift: {e}"))?;
    let functions: Vec<KernelFn> = ids
        .iter()
        .map(|&id| {
            let code = module.get_finalized_function(id);
            // SAFETY: every function was built with exactly the `KernelFn` signature.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(code) }
        })
        .collect();
    let code: CodeOwner = Arc::new(JitCode(module));
    Ok(functions
        .into_iter()
        .zip(kernels)
        // SAFETY: each function is the code of its kernel, kept alive by `code`.
        .map(|(function, k)| unsafe {
            NativeKernel::new(code.clone(), function, k.buffers, k.sizes)
        })
        .collect())
}

/// Compiles kernels for the host CPU into a position-independent ELF object that exports
/// each kernel under its name, for linking into a shared library.
pub fn emit_object(kernels: &[Kernel]) -> Result<Vec<u8>, String> {
    let builder = ObjectBuilder::new(
        host_isa(true)?,
        "kiln_kernels",
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| format!("cranelift: {e}"))?;
    let mut module = ObjectModule::new(builder);
    define_all(&mut module, kernels)?;
    module
        .finish()
        .emit()
        .map_err(|e| format!("cranelift: writing the object: {e}"))
}

/// The CPU features Cranelift compiles for on this CPU, as [`kiln_rt::cpu`] names them
/// (`avx`, `fma`, ...): code compiled here runs on a CPU that has all of them.
pub fn host_features() -> Result<Vec<String>, String> {
    Ok(host_isa(false)?
        .isa_flags()
        .iter()
        .filter(|f| f.as_bool() == Some(true))
        .filter_map(|f| runtime_feature(f.name))
        .collect())
}

/// The runtime's name of a Cranelift ISA flag (`has_sse41` is `sse4.1`), for the flags that
/// name a CPU feature the runtime can check.
fn runtime_feature(flag: &str) -> Option<String> {
    let name = flag.strip_prefix("has_")?;
    let name = match name {
        "sse41" => "sse4.1".to_string(),
        "sse42" => "sse4.2".to_string(),
        other => other.to_string(),
    };
    kiln_rt::cpu::has(&name).map(|_| name)
}

/// The host CPU's ISA, optimising for speed; `pic` for code that goes into shared libraries.
fn host_isa(pic: bool) -> Result<OwnedTargetIsa, String> {
    let mut flags = settings::builder();
    let set = |flags: &mut settings::Builder, k: &str, v: &str| {
        flags.set(k, v).map_err(|e| format!("cranelift: {e}"))
    };
    set(&mut flags, "opt_level", "speed")?;
    set(&mut flags, "is_pic", if pic { "true" } else { "false" })?;
    cranelift_native::builder()
        .map_err(|e| format!("cranelift: {e}"))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| format!("cranelift: {e}"))
}

/// Declares and defines every kernel in `module`, exported under its name.
fn define_all<M: Module>(module: &mut M, kernels: &[Kernel]) -> Result<Vec<FuncId>, String> {
    let fma = module
        .isa()
        .isa_flags()
        .iter()
        .any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
    let mut ids = Vec::with_capacity(kernels.len());
    let mut fctx = FunctionBuilderContext::new();
    for kernel in kernels {
        let err = |e: &dyn std::fmt::Display| format!("kernel `{}`: {e}", kernel.name);
        let target = module.target_config();
        let mut ctx = module.make_context();
        let ptr = target.pointer_type();
        ctx.func.signature.params.push(AbiParam::new(ptr));
        ctx.func.signature.params.push(AbiParam::new(ptr));
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            b.seal_block(entry);
            let (buffer_array, size_array) = (b.block_params(entry)[0], b.block_params(entry)[1]);
            let flags = MemFlagsData::trusted();
            let buffers = (0..kernel.buffers)
                .map(|i| b.ins().load(ptr, flags, buffer_array, (i * 8) as i32))
                .collect();
            let sizes = (0..kernel.sizes)
                .map(|i| b.ins().load(types::I64, flags, size_array, (i * 8) as i32))
                .collect();
            let vars = kernel
                .vars
                .iter()
                .map(|&lanes| {
                    let ty = vector_type(lanes).map_err(|e| err(&e))?;
                    Ok((b.declare_var(ty), ty))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let stored = kernel.stored_buffers();
            let mut lower = Lower {
                b,
                ptr,
                fma,
                buffers,
                stored,
                sizes,
                vars,
                loops: vec![],
            };
            lower.stmts(&kernel.body).map_err(|e| err(&e))?;
            lower.b.ins().return_(&[]);
            lower.b.finalize(target);
        }
        let id = module
            .declare_function(&kernel.name, Linkage::Export, &ctx.func.signature)
            .map_err(|e| err(&e))?;
        module.define_function(id, &mut ctx).map_err(|e| err(&e))?;
        module.clear_context(&mut ctx);
        ids.push(id);
    }
    Ok(ids)
}

/// The Cranelift type of `lanes` f32s.
fn vector_type(lanes: u8) -> Result<Type, String> {
    match lanes {
        1 => Ok(types::F32),
        4 => Ok(types::F32X4),
        other => Err(format!(
            "vector width {other} is not supported by Cranelift (1 or 4)"
        )),
    }
}

struct Lower<'a> {
    b: FunctionBuilder<'a>,
    ptr: Type,
    fma: bool,
    buffers: Vec<Ssa>,
    /// Whether the kernel stores to each buffer; the others are read-only during a call.
    stored: Vec<bool>,
    sizes: Vec<Ssa>,
    vars: Vec<(Variable, Type)>,
    loops: Vec<Ssa>,
}

impl Lower<'_> {
    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), String> {
        for s in stmts {
            match s {
                Stmt::Loop { start, end, body } => self.counted_loop(start, end, body)?,
                Stmt::Store {
                    buffer,
                    index,
                    value,
                    lanes,
                } => {
                    let v = self.value(value, vector_type(*lanes)?)?;
                    let (addr, offset) = self.address(*buffer, index, 4)?;
                    self.b.ins().store(MemFlagsData::trusted(), v, addr, offset);
                }
                Stmt::StoreInt {
                    int,
                    buffer,
                    index,
                    value,
                } => {
                    let v = self.index(value)?;
                    let ty = int_type(*int);
                    let v = if ty == types::I64 {
                        v
                    } else {
                        self.b.ins().ireduce(ty, v)
                    };
                    let (addr, offset) = self.address(*buffer, index, int.bytes())?;
                    self.b.ins().store(MemFlagsData::trusted(), v, addr, offset);
                }
                Stmt::Set { var, value } => {
                    let &(variable, ty) = self
                        .vars
                        .get(*var)
                        .ok_or_else(|| format!("variable {var} is not declared"))?;
                    let v = self.value(value, ty)?;
                    self.b.def_var(variable, v);
                }
                Stmt::If {
                    lhs,
                    cmp,
                    rhs,
                    then,
                    otherwise,
                } => {
                    let (l, r) = (self.index(lhs)?, self.index(rhs)?);
                    let c = self.b.ins().icmp(int_cc(*cmp), l, r);
                    let (then_block, else_block, join) = (
                        self.b.create_block(),
                        self.b.create_block(),
                        self.b.create_block(),
                    );
                    self.b.ins().brif(c, then_block, &[], else_block, &[]);
                    for (block, body) in [(then_block, then), (else_block, otherwise)] {
                        self.b.switch_to_block(block);
                        self.b.seal_block(block);
                        self.stmts(body)?;
                        self.b.ins().jump(join, &[]);
                    }
                    self.b.switch_to_block(join);
                    self.b.seal_block(join);
                }
                // Cranelift has no prefetch instruction: the hint is dropped.
                Stmt::Prefetch { .. } => {}
            }
        }
        Ok(())
    }

    /// A counted loop whose header tests the counter and branches to the exit when done.
    /// The exit is the taken branch: Cranelift's elaboration then visits the body before the
    /// exit, which its loop-invariant code motion needs (visiting the exit first drops the loop
    /// from its loop stack, and nothing is hoisted out of the body).
    fn counted_loop(&mut self, start: &Index, end: &Index, body: &[Stmt]) -> Result<(), String> {
        let first = self.index(start)?;
        let n = self.index(end)?;
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        let counter = self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[first.into()]);
        self.b.switch_to_block(header);
        let done = self
            .b
            .ins()
            .icmp(IntCC::SignedGreaterThanOrEqual, counter, n);
        self.b.ins().brif(done, exit, &[], inner, &[]);
        self.b.switch_to_block(inner);
        self.b.seal_block(inner);
        self.loops.push(counter);
        self.stmts(body)?;
        self.loops.pop();
        let next = self.b.ins().iadd_imm_s(counter, 1);
        self.b.ins().jump(header, &[next.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
        Ok(())
    }

    fn index(&mut self, i: &Index) -> Result<Ssa, String> {
        Ok(match i {
            Index::Const(c) => self.b.ins().iconst(types::I64, *c),
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
                self.b.ins().iadd(x, y)
            }
            Index::Sub(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.ins().isub(x, y)
            }
            Index::Mul(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.ins().imul(x, y)
            }
            Index::Div(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.ins().sdiv(x, y)
            }
            Index::Rem(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.ins().srem(x, y)
            }
            Index::Min(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.ins().smin(x, y)
            }
            Index::Max(x, y) => {
                let (x, y) = (self.index(x)?, self.index(y)?);
                self.b.ins().smax(x, y)
            }
            Index::Load(int, buffer, index) => {
                let (addr, offset) = self.address(*buffer, index, int.bytes())?;
                let flags = self.load_flags(*buffer);
                let ty = int_type(*int);
                let v = self.b.ins().load(ty, flags, addr, offset);
                match int {
                    Int::I64 => v,
                    Int::U8 => self.b.ins().uextend(types::I64, v),
                    _ => self.b.ins().sextend(types::I64, v),
                }
            }
            Index::Select(cmp, operands) => {
                let [a, b, then, otherwise] = &**operands;
                let (a, b) = (self.index(a)?, self.index(b)?);
                let c = self.b.ins().icmp(int_cc(*cmp), a, b);
                let (then, otherwise) = (self.index(then)?, self.index(otherwise)?);
                self.b.ins().select(c, then, otherwise)
            }
        })
    }

    /// The address of element `index` of `buffer`, with elements of `width` bytes, as a pointer
    /// and a constant byte offset: a constant added last to the index becomes the offset, which
    /// the instruction selector folds into the addressing mode (so that rows `base + k * stride`
    /// share one address computation).
    fn address(&mut self, buffer: usize, index: &Index, width: i64) -> Result<(Ssa, i32), String> {
        let base = *self
            .buffers
            .get(buffer)
            .ok_or_else(|| format!("buffer {buffer} does not exist"))?;
        let (index, offset) = split_offset(index, width);
        let i = self.index(index)?;
        let bytes = self.b.ins().imul_imm_s(i, width);
        let bytes = if self.ptr == types::I64 {
            bytes
        } else {
            self.b.ins().ireduce(self.ptr, bytes)
        };
        Ok((self.b.ins().iadd(base, bytes), offset))
    }

    /// Loads from a buffer the kernel never stores to are pure (read-only memory, which the
    /// template contract guarantees as outputs do not alias inputs): Cranelift may then
    /// place them at their uses, merge them into the instructions that use them, share equal
    /// ones and hoist loop-invariant ones out of loops, even out of loops that run zero
    /// times (such a load's address must then be valid all the same; the runtime never
    /// passes a dangling pointer, even for an empty buffer).
    fn load_flags(&self, buffer: usize) -> MemFlagsData {
        if self.stored.get(buffer).copied().unwrap_or(true) {
            MemFlagsData::trusted()
        } else {
            MemFlagsData::trusted().with_readonly().with_can_move()
        }
    }

    /// Lowers a value computed at type `ty` (F32, or F32X4 for four lanes at once).
    fn value(&mut self, v: &Value, ty: Type) -> Result<Ssa, String> {
        Ok(match v {
            Value::Const(c) => self.constant(*c, ty),
            Value::Load(buffer, index) => {
                let (addr, offset) = self.address(*buffer, index, 4)?;
                let flags = self.load_flags(*buffer);
                self.b.ins().load(ty, flags, addr, offset)
            }
            Value::Var(var) => {
                let &(variable, declared) = self
                    .vars
                    .get(*var)
                    .ok_or_else(|| format!("variable {var} is not declared"))?;
                if declared != ty {
                    return Err(format!("variable {var} is {declared}, used as {ty}"));
                }
                self.b.use_var(variable)
            }
            Value::Splat(x) => {
                let x = self.value(x, types::F32)?;
                self.widen(x, ty)
            }
            Value::Reduce(op, lanes, x) => {
                if ty != types::F32 {
                    return Err("a horizontal reduction is a scalar".into());
                }
                let x = self.value(x, vector_type(*lanes)?)?;
                if *lanes != 4 {
                    return Err(format!(
                        "a reduction of {lanes} lanes (Cranelift reduces 4)"
                    ));
                }
                let lanes: Vec<Ssa> = (0..4u8).map(|i| self.b.ins().extractlane(x, i)).collect();
                let pair = |l: &mut Self, a, b| l.binary(*op, a, b);
                let lo = pair(self, lanes[0], lanes[1])?;
                let hi = pair(self, lanes[2], lanes[3])?;
                pair(self, lo, hi)?
            }
            Value::FromIndex(i) => {
                let i = self.index(i)?;
                // Through f64, as the interpreter's Cast rounds (exact up to 2^53).
                let wide = self.b.ins().fcvt_from_sint(types::F64, i);
                let x = self.b.ins().fdemote(types::F32, wide);
                self.widen(x, ty)
            }
            Value::Unary(op, x) => {
                let x = self.value(x, ty)?;
                let mut m = Emit { l: self, ty };
                match op {
                    Unary::Neg => m.l.b.ins().fneg(x),
                    Unary::Abs => m.abs(x),
                    Unary::Sqrt => m.l.b.ins().sqrt(x),
                    Unary::Rsqrt => {
                        let s = m.l.b.ins().sqrt(x);
                        let one = m.constant(1.0);
                        m.div(one, s)
                    }
                    Unary::Floor => m.floor(x),
                    Unary::Exp => intrinsics::exp(&mut m, x),
                    Unary::Erf => intrinsics::erf(&mut m, x),
                    Unary::Tanh => intrinsics::tanh(&mut m, x),
                    Unary::Sigmoid => intrinsics::sigmoid(&mut m, x),
                }
            }
            Value::Binary(op, x, y) => {
                let (x, y) = (self.value(x, ty)?, self.value(y, ty)?);
                self.binary(*op, x, y)?
            }
            Value::Fma(a, b, c) => {
                let (a, b, c) = (self.value(a, ty)?, self.value(b, ty)?, self.value(c, ty)?);
                Emit { l: self, ty }.fma(a, b, c)
            }
            Value::Select(cmp, args) => {
                let [a, b, then, otherwise] = &**args;
                let (a, b) = (self.value(a, ty)?, self.value(b, ty)?);
                let (t, o) = (self.value(then, ty)?, self.value(otherwise, ty)?);
                let cc = match cmp {
                    Compare::Lt => FloatCC::LessThan,
                    Compare::Le => FloatCC::LessThanOrEqual,
                    Compare::Eq => FloatCC::Equal,
                };
                let c = self.b.ins().fcmp(cc, a, b);
                if ty == types::F32 {
                    self.b.ins().select(c, t, o)
                } else {
                    let mask = self.b.ins().bitcast(ty, little(), c);
                    self.b.ins().bitselect(mask, t, o)
                }
            }
        })
    }

    fn constant(&mut self, c: f32, ty: Type) -> Ssa {
        let scalar = self.b.ins().f32const(c);
        self.widen(scalar, ty)
    }

    /// A scalar broadcast to `ty`.
    fn widen(&mut self, scalar: Ssa, ty: Type) -> Ssa {
        if ty == types::F32 {
            scalar
        } else {
            self.b.ins().splat(ty, scalar)
        }
    }

    fn binary(&mut self, op: Binary, x: Ssa, y: Ssa) -> Result<Ssa, String> {
        let ty = self.b.func.dfg.value_type(x);
        Ok(match op {
            Binary::Add => self.b.ins().fadd(x, y),
            Binary::Sub => self.b.ins().fsub(x, y),
            Binary::Mul => self.b.ins().fmul(x, y),
            Binary::Div => self.b.ins().fdiv(x, y),
            Binary::Max => self.b.ins().fmax(x, y),
            Binary::Min => self.b.ins().fmin(x, y),
            Binary::CopySign => Emit { l: self, ty }.copysign(x, y),
        })
    }
}

/// `index` as `rest + k` with the byte offset `k * width` split off, if the index ends with
/// `+ k` for a constant `k` whose offset fits an i32.
fn split_offset(index: &Index, width: i64) -> (&Index, i32) {
    if let Index::Add(rest, k) = index {
        if let Index::Const(k) = **k {
            if let Some(offset) = k.checked_mul(width).and_then(|b| i32::try_from(b).ok()) {
                return (rest, offset);
            }
        }
    }
    (index, 0)
}

/// Little-endian memory flags for lane-preserving bitcasts.
fn little() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// The Cranelift type of `int` elements.
fn int_type(int: Int) -> Type {
    match int {
        Int::I64 => types::I64,
        Int::I32 => types::I32,
        Int::I16 => types::I16,
        Int::I8 | Int::U8 => types::I8,
    }
}

fn int_cc(cmp: Compare) -> IntCC {
    match cmp {
        Compare::Lt => IntCC::SignedLessThan,
        Compare::Le => IntCC::SignedLessThanOrEqual,
        Compare::Eq => IntCC::Equal,
    }
}

/// The intrinsics' arithmetic at one type (F32 or F32X4).
struct Emit<'l, 'a> {
    l: &'l mut Lower<'a>,
    ty: Type,
}

impl Emit<'_, '_> {
    /// The integer type of the same shape as `self.ty`.
    fn int_type(&self) -> Type {
        if self.ty == types::F32 {
            types::I32
        } else {
            types::I32X4
        }
    }

    /// `x` reinterpreted as integers, `f` applied, and the bits reinterpreted back.
    fn on_bits(&mut self, x: Ssa, f: impl FnOnce(&mut Self, Ssa) -> Ssa) -> Ssa {
        let it = self.int_type();
        let bits = self.l.b.ins().bitcast(it, little(), x);
        let bits = f(self, bits);
        self.l.b.ins().bitcast(self.ty, little(), bits)
    }

    /// `a < b ? then : otherwise` per lane (false when either side is NaN).
    fn select_lt(&mut self, a: Ssa, b: Ssa, then: Ssa, otherwise: Ssa) -> Ssa {
        let c = self.l.b.ins().fcmp(FloatCC::LessThan, a, b);
        if self.ty == types::F32 {
            self.l.b.ins().select(c, then, otherwise)
        } else {
            let mask = self.l.b.ins().bitcast(self.ty, little(), c);
            self.l.b.ins().bitselect(mask, then, otherwise)
        }
    }

    fn int_constant(&mut self, c: i32) -> Ssa {
        let scalar = self.l.b.ins().iconst(types::I32, c as i64);
        if self.ty == types::F32 {
            scalar
        } else {
            self.l.b.ins().splat(types::I32X4, scalar)
        }
    }
}

impl Math for Emit<'_, '_> {
    type V = Ssa;
    fn constant(&mut self, c: f32) -> Ssa {
        self.l.constant(c, self.ty)
    }
    fn add(&mut self, a: Ssa, b: Ssa) -> Ssa {
        self.l.b.ins().fadd(a, b)
    }
    fn sub(&mut self, a: Ssa, b: Ssa) -> Ssa {
        self.l.b.ins().fsub(a, b)
    }
    fn mul(&mut self, a: Ssa, b: Ssa) -> Ssa {
        self.l.b.ins().fmul(a, b)
    }
    fn div(&mut self, a: Ssa, b: Ssa) -> Ssa {
        self.l.b.ins().fdiv(a, b)
    }
    fn fma(&mut self, a: Ssa, b: Ssa, c: Ssa) -> Ssa {
        if self.l.fma {
            self.l.b.ins().fma(a, b, c)
        } else {
            let p = self.l.b.ins().fmul(a, b);
            self.l.b.ins().fadd(p, c)
        }
    }
    fn clamp(&mut self, a: Ssa, lo: Ssa, hi: Ssa) -> Ssa {
        // `a < lo ? lo : a` then `hi < a ? hi : a`, in the operand order x86 lowers to
        // `maxps lo, a` and `minps hi, a` (which return `a` when it is NaN).
        let a = self.select_lt(a, lo, lo, a);
        self.select_lt(hi, a, hi, a)
    }
    fn abs(&mut self, a: Ssa) -> Ssa {
        self.l.b.ins().fabs(a)
    }
    fn copysign(&mut self, a: Ssa, b: Ssa) -> Ssa {
        let sign = self.on_bits(b, |m, bits| {
            let mask = m.int_constant(i32::MIN);
            m.l.b.ins().band(bits, mask)
        });
        let magnitude = self.l.b.ins().fabs(a);
        self.on_bits(magnitude, |m, bits| {
            let it = m.int_type();
            let sign = m.l.b.ins().bitcast(it, little(), sign);
            m.l.b.ins().bor(bits, sign)
        })
    }
    fn floor(&mut self, a: Ssa) -> Ssa {
        self.l.b.ins().floor(a)
    }
    fn exponent_from_low_bits(&mut self, a: Ssa) -> Ssa {
        self.on_bits(a, |m, bits| m.l.b.ins().ishl_imm_s(bits, 23))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intrinsics::Scalar;

    /// `out[i] = op(x[i])` for `n` elements, four lanes at a time (n a multiple of 4) or one.
    fn map_kernel(op: Unary, lanes: u8) -> Kernel {
        let at = Index::Loop(0) * Index::Const(lanes as i64);
        Kernel {
            name: "map".into(),
            buffers: 2,
            sizes: 1,
            vars: vec![],
            body: vec![Stmt::for_range(
                0.into(),
                Index::Size(0) / Index::Const(lanes as i64),
                vec![Stmt::store(
                    1,
                    at.clone(),
                    Value::load(0, at).unary(op),
                    lanes,
                )],
            )],
        }
    }

    #[test]
    fn compiled_intrinsics_match_the_reference_arithmetic() {
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
        xs.truncate(xs.len() / 4 * 4);
        let reference = |op: Unary, x: f32| match op {
            Unary::Exp => intrinsics::exp(&mut Scalar, x),
            Unary::Erf => intrinsics::erf(&mut Scalar, x),
            Unary::Tanh => intrinsics::tanh(&mut Scalar, x),
            Unary::Sigmoid => intrinsics::sigmoid(&mut Scalar, x),
            Unary::Rsqrt => 1.0 / x.sqrt(),
            Unary::Floor => x.floor(),
            _ => unreachable!(),
        };
        for op in [
            Unary::Exp,
            Unary::Erf,
            Unary::Tanh,
            Unary::Sigmoid,
            Unary::Rsqrt,
            Unary::Floor,
        ] {
            for lanes in [1, 4] {
                let k = compile(&map_kernel(op, lanes)).unwrap();
                let mut x = xs.clone();
                let mut out = vec![0f32; x.len()];
                // SAFETY: both buffers hold `n` elements.
                unsafe {
                    k.call(
                        &[x.as_mut_ptr().cast(), out.as_mut_ptr().cast()],
                        &[x.len() as i64],
                    )
                };
                for (&xi, &got) in xs.iter().zip(&out) {
                    let want = reference(op, xi);
                    let same = got == want || (got.is_nan() && want.is_nan());
                    assert!(
                        same || (got - want).abs() <= 1e-7 * want.abs().max(1e-30),
                        "{op:?} lanes {lanes} at {xi}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn variables_reductions_selects_and_gathers_lower_correctly() {
        // out[0] = sum over vectors of max(x, 0) (ReLU via select), reduced horizontally;
        // out[1 + j] = x[ids[j]] (an i64 gather).
        let body = vec![
            Stmt::set(0, Value::Const(0.0)),
            Stmt::for_range(
                0.into(),
                Index::Size(0) / Index::Const(4),
                vec![Stmt::set(
                    0,
                    Value::Var(0)
                        + Value::select(
                            Compare::Lt,
                            Value::load(0, Index::Loop(0) * Index::Const(4)),
                            Value::Const(0.0),
                            Value::Const(0.0),
                            Value::load(0, Index::Loop(0) * Index::Const(4)),
                        ),
                )],
            ),
            Stmt::store(2, 0.into(), Value::Var(0).reduce(Binary::Add, 4), 1),
            Stmt::for_range(
                0.into(),
                Index::Size(1),
                vec![Stmt::store(
                    2,
                    Index::Loop(0) + Index::Const(1),
                    Value::load(0, Index::load(1, Index::Loop(0))),
                    1,
                )],
            ),
        ];
        let k = compile(&Kernel {
            name: "mixed".into(),
            buffers: 3,
            sizes: 2,
            vars: vec![4],
            body,
        })
        .unwrap();
        let mut x: Vec<f32> = (0..16).map(|i| i as f32 - 7.5).collect();
        let mut ids: Vec<i64> = vec![3, 15, 0];
        let mut out = vec![0f32; 4];
        // SAFETY: x has 16 elements, ids 3 (all < 16), out 4.
        unsafe {
            k.call(
                &[
                    x.as_mut_ptr().cast(),
                    ids.as_mut_ptr().cast(),
                    out.as_mut_ptr().cast(),
                ],
                &[16, 3],
            )
        };
        let relu_sum: f32 = x.iter().map(|v| v.max(0.0)).sum();
        assert_eq!(out, vec![relu_sum, x[3], x[15], x[0]]);
    }
}
