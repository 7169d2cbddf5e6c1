//! The Cranelift backend: lowers a KIR [`Kernel`] to native code with Cranelift's JIT.
//!
//! Every kernel has one ABI, `extern "C" fn(buffers: *const *mut f32, sizes: *const i64)`:
//! the buffer pointers and the size arguments are passed as arrays, so one function-pointer
//! type serves every kernel.

use crate::kir::{Binary, Index, Kernel, Stmt, Unary, Value};
use cranelift_codegen::ir::{types, AbiParam, InstBuilder, MemFlagsData, Type};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};

type KernelFn = unsafe extern "C" fn(*const *mut f32, *const i64);

/// A compiled kernel and the JIT module that owns its code.
pub struct JitKernel {
    _module: JITModule,
    function: KernelFn,
    buffers: usize,
    sizes: usize,
}

impl JitKernel {
    /// Calls the kernel.
    ///
    /// # Safety
    /// `buffers` and `sizes` must have the kernel's counts (checked), and every buffer must be
    /// valid for every index the kernel reads or writes with these sizes.
    pub unsafe fn call(&self, buffers: &[*mut f32], sizes: &[i64]) {
        assert_eq!(buffers.len(), self.buffers, "buffer count");
        assert_eq!(sizes.len(), self.sizes, "size count");
        // SAFETY: the caller guarantees the buffers cover the kernel's accesses.
        unsafe { (self.function)(buffers.as_ptr(), sizes.as_ptr()) }
    }
}

/// JIT-compiles `kernel` for the host CPU.
pub fn compile(kernel: &Kernel) -> Result<JitKernel, String> {
    let err = |e: &dyn std::fmt::Display| format!("kernel `{}`: {e}", kernel.name);
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| err(&e))?;
    let isa = cranelift_native::builder()
        .map_err(|e| err(&e))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| err(&e))?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let target = module.target_config();
    let ptr = target.pointer_type();
    let mut ctx = module.make_context();
    ctx.func.signature.params.push(AbiParam::new(ptr));
    ctx.func.signature.params.push(AbiParam::new(ptr));
    let mut fctx = FunctionBuilderContext::new();
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
        let mut lower = Lower {
            b,
            ptr,
            buffers,
            sizes,
            loops: vec![],
        };
        lower.stmts(&kernel.body);
        lower.b.ins().return_(&[]);
        lower.b.finalize(target);
    }
    let id = module
        .declare_function(&kernel.name, Linkage::Export, &ctx.func.signature)
        .map_err(|e| err(&e))?;
    module.define_function(id, &mut ctx).map_err(|e| err(&e))?;
    module.clear_context(&mut ctx);
    module.finalize_definitions().map_err(|e| err(&e))?;
    let code = module.get_finalized_function(id);
    // SAFETY: the function was built with exactly the `KernelFn` signature above.
    let function = unsafe { std::mem::transmute::<*const u8, KernelFn>(code) };
    Ok(JitKernel {
        _module: module,
        function,
        buffers: kernel.buffers,
        sizes: kernel.sizes,
    })
}

struct Lower<'a> {
    b: FunctionBuilder<'a>,
    ptr: Type,
    buffers: Vec<cranelift_codegen::ir::Value>,
    sizes: Vec<cranelift_codegen::ir::Value>,
    loops: Vec<cranelift_codegen::ir::Value>,
}

impl Lower<'_> {
    fn stmts(&mut self, stmts: &[Stmt]) {
        for s in stmts {
            match s {
                Stmt::Loop { start, end, body } => self.counted_loop(start, end, body),
                Stmt::Store {
                    buffer,
                    index,
                    value,
                    lanes,
                } => {
                    let ty = if *lanes == 4 {
                        types::F32X4
                    } else {
                        types::F32
                    };
                    let v = self.value(value, ty);
                    let addr = self.address(*buffer, index);
                    self.b.ins().store(MemFlagsData::trusted(), v, addr, 0);
                }
            }
        }
    }

    fn counted_loop(&mut self, start: &Index, end: &Index, body: &[Stmt]) {
        let first = self.index(start);
        let n = self.index(end);
        let header = self.b.create_block();
        let inner = self.b.create_block();
        let exit = self.b.create_block();
        let counter = self.b.append_block_param(header, types::I64);
        self.b.ins().jump(header, &[first.into()]);
        self.b.switch_to_block(header);
        let more = self.b.ins().icmp(
            cranelift_codegen::ir::condcodes::IntCC::SignedLessThan,
            counter,
            n,
        );
        self.b.ins().brif(more, inner, &[], exit, &[]);
        self.b.switch_to_block(inner);
        self.b.seal_block(inner);
        self.loops.push(counter);
        self.stmts(body);
        self.loops.pop();
        let next = self.b.ins().iadd_imm_s(counter, 1);
        self.b.ins().jump(header, &[next.into()]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        self.b.seal_block(exit);
    }

    fn index(&mut self, i: &Index) -> cranelift_codegen::ir::Value {
        match i {
            Index::Const(c) => self.b.ins().iconst(types::I64, *c),
            Index::Size(s) => self.sizes[*s],
            Index::Loop(d) => self.loops[*d],
            Index::Add(x, y) => {
                let (x, y) = (self.index(x), self.index(y));
                self.b.ins().iadd(x, y)
            }
            Index::Mul(x, y) => {
                let (x, y) = (self.index(x), self.index(y));
                self.b.ins().imul(x, y)
            }
            Index::Div(x, y) => {
                let (x, y) = (self.index(x), self.index(y));
                self.b.ins().sdiv(x, y)
            }
        }
    }

    fn address(&mut self, buffer: usize, index: &Index) -> cranelift_codegen::ir::Value {
        let i = self.index(index);
        let bytes = self.b.ins().imul_imm_s(i, 4);
        let bytes = if self.ptr == types::I64 {
            bytes
        } else {
            self.b.ins().ireduce(self.ptr, bytes)
        };
        self.b.ins().iadd(self.buffers[buffer], bytes)
    }

    /// Lowers a value computed at type `ty` (F32, or F32X4 for four lanes at once).
    fn value(&mut self, v: &Value, ty: Type) -> cranelift_codegen::ir::Value {
        match v {
            Value::Const(c) => {
                let scalar = self.b.ins().f32const(*c);
                if ty == types::F32 {
                    scalar
                } else {
                    self.b.ins().splat(ty, scalar)
                }
            }
            Value::Load(buffer, index) => {
                let addr = self.address(*buffer, index);
                self.b.ins().load(ty, MemFlagsData::trusted(), addr, 0)
            }
            Value::Unary(op, x) => {
                let x = self.value(x, ty);
                match op {
                    Unary::Neg => self.b.ins().fneg(x),
                    Unary::Abs => self.b.ins().fabs(x),
                    Unary::Sqrt => self.b.ins().sqrt(x),
                }
            }
            Value::Binary(op, x, y) => {
                let (x, y) = (self.value(x, ty), self.value(y, ty));
                match op {
                    Binary::Add => self.b.ins().fadd(x, y),
                    Binary::Sub => self.b.ins().fsub(x, y),
                    Binary::Mul => self.b.ins().fmul(x, y),
                    Binary::Div => self.b.ins().fdiv(x, y),
                    Binary::Max => self.b.ins().fmax(x, y),
                    Binary::Min => self.b.ins().fmin(x, y),
                }
            }
        }
    }
}
