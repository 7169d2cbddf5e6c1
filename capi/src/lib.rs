//! kiln's C API: `libkiln_runtime`, the library C and C++ programs link to run the
//! ahead-of-time artefacts of `kiln compile` (see [`kiln_rt::artifact`]). It links the
//! runtime alone: no template, code generator or compiler is in it.
//!
//! The C declarations and their documentation are in `capi/include/kiln.h`; each function here
//! implements the declaration of the same name. Every entry point checks its pointers,
//! reports failures as a status plus a one-line message in a caller-supplied buffer, and
//! catches panics so that none unwinds into C.

// The C API's types keep their C names.
#![allow(non_camel_case_types)]

use kiln_ir::infer::fmt_shape;
use kiln_ir::{DType, Dim, Tensor, TensorData};
use kiln_rt::{Input, InputBytes, Program, StateBuffer};
use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::ptr;

/// `KILN_F32`: f32 elements.
pub const KILN_F32: i32 = 1;
/// `KILN_U8`: u8 elements.
pub const KILN_U8: i32 = 2;
/// `KILN_I8`: i8 elements.
pub const KILN_I8: i32 = 3;
/// `KILN_I32`: i32 elements.
pub const KILN_I32: i32 = 6;
/// `KILN_I64`: i64 elements.
pub const KILN_I64: i32 = 7;
/// `KILN_BOOL`: one byte per element, 0 or 1.
pub const KILN_BOOL: i32 = 9;
/// `KILN_F16`: IEEE binary16 bit patterns.
pub const KILN_F16: i32 = 10;
/// `KILN_BF16`: bfloat16 bit patterns.
pub const KILN_BF16: i32 = 16;

/// The `kiln_dtype` code of a dtype (ONNX `TensorProto.DataType` numbering).
pub fn dtype_code(dtype: DType) -> i32 {
    match dtype {
        DType::F32 => KILN_F32,
        DType::U8 => KILN_U8,
        DType::I8 => KILN_I8,
        DType::I32 => KILN_I32,
        DType::I64 => KILN_I64,
        DType::Bool => KILN_BOOL,
        DType::F16 => KILN_F16,
        DType::BF16 => KILN_BF16,
    }
}

/// The dtype of a `kiln_dtype` code, if it is one.
pub fn dtype_of_code(code: i32) -> Option<DType> {
    DType::ALL.into_iter().find(|&d| dtype_code(d) == code)
}

/// A dense row-major tensor, laid out as `kiln_tensor` in `kiln.h`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct kiln_tensor {
    /// A `kiln_dtype` code.
    pub dtype: i32,
    /// The number of dimensions.
    pub rank: usize,
    /// `rank` sizes (not read when `rank` is 0).
    pub shape: *const i64,
    /// The elements, row-major.
    pub data: *const c_void,
}

/// One input or output of a model as the C API describes it.
struct Port {
    name: String,
    c_name: CString,
    dtype: DType,
    shape: Vec<Dim>,
}

/// A loaded artefact (opaque to C).
pub struct kiln_model {
    program: Program,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
}

// `kiln.h` promises that one model may be run from several threads at once.
const _: () = {
    const fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<kiln_model>();
};

/// The outputs of one run (opaque to C): the `kiln_tensor` views handed to C and the
/// allocations they point into.
pub struct kiln_outputs {
    views: Vec<kiln_tensor>,
    /// The tensors (in standard layout) whose elements `views` point to; only kept alive.
    _tensors: Vec<Tensor>,
    /// The shapes `views` point to; only kept alive.
    _shapes: Vec<Vec<i64>>,
}

/// Copies `message` (made one line) into the caller's buffer, truncated at a character
/// boundary and NUL-terminated.
///
/// # Safety
/// `error` is NULL or points to `error_size` writable bytes.
unsafe fn set_error(error: *mut c_char, error_size: usize, message: &str) {
    if error.is_null() || error_size == 0 {
        return;
    }
    let line = message.replace(['\n', '\r'], " ");
    let mut len = line.len().min(error_size - 1);
    while !line.is_char_boundary(len) {
        len -= 1;
    }
    // SAFETY: `len + 1 <= error_size` bytes of the buffer are written (caller's contract).
    unsafe {
        ptr::copy_nonoverlapping(line.as_ptr().cast::<c_char>(), error, len);
        *error.add(len) = 0;
    }
}

/// Runs `f`, turning a panic into an "internal error" message.
fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic with no message".into());
        Err(format!("internal error: {what}"))
    })
}

/// A path from a C string (any bytes on Unix, UTF-8 elsewhere).
fn path_of(s: &CStr) -> Result<PathBuf, String> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(s.to_bytes())))
    }
    #[cfg(not(unix))]
    {
        s.to_str()
            .map(PathBuf::from)
            .map_err(|_| "artifact_dir is not UTF-8".to_string())
    }
}

/// The ports of a model's inputs and outputs.
fn ports(program: &Program) -> Result<(Vec<Port>, Vec<Port>), String> {
    let port = |name: &str, v: &kiln_ir::Value| {
        let ty = &v.ty;
        let c_name = CString::new(name).map_err(|_| format!("the name `{name}` contains NUL"))?;
        Ok(Port {
            name: name.to_string(),
            c_name,
            dtype: ty.dtype,
            shape: ty.shape.clone(),
        })
    };
    let inputs = program
        .inputs()
        .map(|v| port(&v.name, v))
        .collect::<Result<_, String>>()?;
    let outputs = program
        .outputs()
        .map(|(name, v)| port(name, v))
        .collect::<Result<_, String>>()?;
    Ok((inputs, outputs))
}

/// The body of [`kiln_load`].
fn load(artifact_dir: *const c_char, threads: c_int) -> Result<kiln_model, String> {
    if artifact_dir.is_null() {
        return Err("artifact_dir is NULL".into());
    }
    // SAFETY: non-NULL, and a NUL-terminated string by the caller's contract.
    let dir = path_of(unsafe { CStr::from_ptr(artifact_dir) })?;
    let threads = match threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t if t > 0 => t as usize,
        t => return Err(format!("threads is {t}; it must be 0 (every core) or more")),
    };
    let program = kiln_rt::artifact::load(&dir, threads)?;
    let (inputs, outputs) = ports(&program).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(kiln_model {
        program,
        inputs,
        outputs,
    })
}

/// The size in bytes of one element of the dtype `code`, or 0 if it is not a `kiln_dtype`.
#[no_mangle]
pub extern "C" fn kiln_dtype_size(code: i32) -> usize {
    dtype_of_code(code).map_or(0, DType::size)
}

/// Loads the artefact in `artifact_dir` for runs on `threads` threads (0: every core);
/// NULL on failure, with a message in `error`.
///
/// # Safety
/// `artifact_dir` is NULL or a NUL-terminated string; `error` is NULL or points to
/// `error_size` writable bytes. The artefact's files are not modified while it is loaded.
#[no_mangle]
pub unsafe extern "C" fn kiln_load(
    artifact_dir: *const c_char,
    threads: c_int,
    error: *mut c_char,
    error_size: usize,
) -> *mut kiln_model {
    match guarded(|| load(artifact_dir, threads)) {
        Ok(model) => Box::into_raw(Box::new(model)),
        Err(e) => {
            // SAFETY: the caller's contract on `error`.
            unsafe { set_error(error, error_size, &e) };
            ptr::null_mut()
        }
    }
}

/// Frees a model returned by [`kiln_load`] (NULL is ignored).
///
/// # Safety
/// `model` is NULL or a model from [`kiln_load`] not yet freed, with no [`kiln_run`] of it in
/// progress; it is not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn kiln_free(model: *mut kiln_model) {
    if !model.is_null() {
        // SAFETY: the model came from `Box::into_raw` in `kiln_load` (caller's contract).
        let model = unsafe { Box::from_raw(model) };
        // A panicking destructor must not unwind into C; there is no one to tell.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(model)));
    }
}

/// The model behind a C pointer.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`].
unsafe fn model_ref<'a>(model: *const kiln_model) -> Option<&'a kiln_model> {
    // SAFETY: the caller's contract.
    unsafe { model.as_ref() }
}

/// The number of inputs of `model` (0 if NULL).
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`].
#[no_mangle]
pub unsafe extern "C" fn kiln_input_count(model: *const kiln_model) -> usize {
    // SAFETY: the caller's contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.inputs.len())
}

/// The name of input `index`, owned by the model; NULL if `model` is NULL or `index` is out
/// of range.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`]; the name is used only while it lives.
#[no_mangle]
pub unsafe extern "C" fn kiln_input_name(model: *const kiln_model, index: usize) -> *const c_char {
    // SAFETY: the caller's contract.
    unsafe { model_ref(model) }
        .and_then(|m| m.inputs.get(index))
        .map_or(ptr::null(), |p| p.c_name.as_ptr())
}

/// The dtype code input `index` must have; 0 if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`].
#[no_mangle]
pub unsafe extern "C" fn kiln_input_dtype(model: *const kiln_model, index: usize) -> i32 {
    // SAFETY: the caller's contract.
    unsafe { model_ref(model) }
        .and_then(|m| m.inputs.get(index))
        .map_or(0, |p| dtype_code(p.dtype))
}

/// The rank input `index` must have; 0 if `model` is NULL or `index` is out of range.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`].
#[no_mangle]
pub unsafe extern "C" fn kiln_input_rank(model: *const kiln_model, index: usize) -> usize {
    // SAFETY: the caller's contract.
    unsafe { model_ref(model) }
        .and_then(|m| m.inputs.get(index))
        .map_or(0, |p| p.shape.len())
}

/// The fixed size of dim `axis` of input `index`; -1 if the dim is symbolic or an argument
/// is out of range.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`].
#[no_mangle]
pub unsafe extern "C" fn kiln_input_dim(
    model: *const kiln_model,
    index: usize,
    axis: usize,
) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { model_ref(model) }
        .and_then(|m| m.inputs.get(index))
        .and_then(|p| p.shape.get(axis))
        .and_then(Dim::as_known)
        .unwrap_or(-1)
}

/// The number of outputs of `model` (0 if NULL).
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`].
#[no_mangle]
pub unsafe extern "C" fn kiln_output_count(model: *const kiln_model) -> usize {
    // SAFETY: the caller's contract.
    unsafe { model_ref(model) }.map_or(0, |m| m.outputs.len())
}

/// The name of output `index`, owned by the model; NULL if `model` is NULL or `index` is out
/// of range.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`]; the name is used only while it lives.
#[no_mangle]
pub unsafe extern "C" fn kiln_output_name(model: *const kiln_model, index: usize) -> *const c_char {
    // SAFETY: the caller's contract.
    unsafe { model_ref(model) }
        .and_then(|m| m.outputs.get(index))
        .map_or(ptr::null(), |p| p.c_name.as_ptr())
}

/// The C tensor fed to input `port`, read where it is (copied only when its data is not
/// aligned for its dtype), checking everything the C side can get wrong before reading any
/// memory beyond the descriptor.
///
/// # Safety
/// `t.shape` points to `t.rank` readable `i64`s (if `t.rank` > 0) and `t.data` to the
/// elements the shape and dtype describe (if there are any), unchanged during the run.
unsafe fn input_of<'a>(port: &Port, t: &'a kiln_tensor) -> Result<Fed<'a>, String> {
    // SAFETY: the caller's contract.
    let (dtype, shape, data) = unsafe { input_bytes(port, t) }?;
    if data.as_ptr().align_offset(dtype.size()) == 0 {
        let bytes = InputBytes::new(dtype, shape, data)
            .map_err(|e| format!("input `{}`: {e}", port.name))?;
        return Ok(Fed::InPlace(bytes));
    }
    let stored = TensorData::new(dtype, shape, data.to_vec().into())
        .map_err(|e| format!("input `{}`: {e}", port.name))?;
    Ok(Fed::Copied(Tensor::from_data(&stored)))
}

/// An input of a C caller as a run reads it.
enum Fed<'a> {
    /// The caller's aligned bytes, in place.
    InPlace(InputBytes<'a>),
    /// A copy of misaligned bytes.
    Copied(Tensor),
}

/// The buffer of state input `port` (a KV cache) that `t` describes, lent to the run, which
/// writes the state's new value into it.
///
/// # Safety
/// As [`input_of`], and `t.data` points to writable memory no one else uses during the
/// run.
unsafe fn state_buffer<'a>(port: &Port, t: &'a kiln_tensor) -> Result<StateBuffer<'a>, String> {
    // SAFETY: the caller's contract.
    let (dtype, shape, data) = unsafe { input_bytes(port, t) }?;
    // SAFETY: the same bytes, writable and unshared during the run (caller's contract).
    let bytes = unsafe { std::slice::from_raw_parts_mut(data.as_ptr().cast_mut(), data.len()) };
    StateBuffer::new(dtype, shape, bytes).map_err(|e| format!("state `{}`: {e}", port.name))
}

/// The dtype, shape and bytes of input `port` as `t` describes them, checked against the
/// port's dtype and rank.
///
/// # Safety
/// As [`input_of`].
unsafe fn input_bytes<'a>(
    port: &Port,
    t: &'a kiln_tensor,
) -> Result<(DType, Vec<usize>, &'a [u8]), String> {
    let name = &port.name;
    let dtype = dtype_of_code(t.dtype)
        .ok_or_else(|| format!("input `{name}`: {} is not a kiln_dtype", t.dtype))?;
    if dtype != port.dtype {
        return Err(format!(
            "input `{name}` is {dtype} but the model expects {}",
            port.dtype
        ));
    }
    if t.rank != port.shape.len() {
        return Err(format!(
            "input `{name}` has rank {} but the model expects rank {} ({})",
            t.rank,
            port.shape.len(),
            fmt_shape(&port.shape)
        ));
    }
    let dims: &[i64] = match t.rank {
        0 => &[],
        _ if t.shape.is_null() => return Err(format!("input `{name}`: shape is NULL")),
        // SAFETY: non-NULL with `rank` entries (caller's contract).
        rank => unsafe { std::slice::from_raw_parts(t.shape, rank) },
    };
    let shape = dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| format!("input `{name}` has a negative dim: {dims:?}"))?;
    let bytes = shape
        .iter()
        .try_fold(dtype.size(), |n, &d| n.checked_mul(d))
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| format!("input `{name}`: shape {dims:?} is too large"))?;
    let data: &[u8] = match bytes {
        0 => &[],
        _ if t.data.is_null() => return Err(format!("input `{name}`: data is NULL")),
        // SAFETY: non-NULL with `bytes` readable bytes (caller's contract).
        n => unsafe { std::slice::from_raw_parts(t.data.cast::<u8>(), n) },
    };
    Ok((dtype, shape, data))
}

/// Views the output tensors as `kiln_tensor`s.
fn outputs_of(results: Vec<(String, Tensor)>) -> kiln_outputs {
    let tensors: Vec<Tensor> = results
        .into_iter()
        .map(|(_, t)| {
            kiln_ir::map_array!(t, a => if a.is_standard_layout() {
                a
            } else {
                a.as_standard_layout().into_owned()
            })
        })
        .collect();
    let shapes: Vec<Vec<i64>> = tensors
        .iter()
        .map(|t| t.shape().iter().map(|&d| d as i64).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&shapes)
        .map(|(t, shape)| kiln_tensor {
            dtype: dtype_code(t.dtype()),
            rank: shape.len(),
            shape: shape.as_ptr(),
            data: kiln_ir::with_array!(t, a => a.as_ptr().cast::<c_void>()),
        })
        .collect();
    kiln_outputs {
        views,
        _tensors: tensors,
        _shapes: shapes,
    }
}

/// The body of [`kiln_run`].
///
/// # Safety
/// As [`kiln_run`].
unsafe fn run(
    model: *const kiln_model,
    inputs: *const kiln_tensor,
    input_count: usize,
    in_place: bool,
) -> Result<kiln_outputs, String> {
    // SAFETY: the caller's contract.
    let model = unsafe { model_ref(model) }.ok_or("model is NULL")?;
    let expected = model.inputs.len();
    if input_count != expected {
        let names: Vec<&str> = model.inputs.iter().map(|p| p.name.as_str()).collect();
        return Err(format!(
            "{input_count} inputs given but the model takes {expected} ({})",
            names.join(", ")
        ));
    }
    let given: &[kiln_tensor] = match input_count {
        0 => &[],
        _ if inputs.is_null() => return Err("inputs is NULL".into()),
        // SAFETY: non-NULL with `input_count` descriptors (caller's contract).
        n => unsafe { std::slice::from_raw_parts(inputs, n) },
    };
    let states: Vec<usize> = match in_place {
        true => model
            .program
            .plan()
            .states()
            .iter()
            .map(|&(i, _)| i)
            .collect(),
        false => vec![],
    };
    let mut fed = Vec::with_capacity(given.len());
    let mut lent = HashMap::new();
    for (i, (port, t)) in model.inputs.iter().zip(given).enumerate() {
        // SAFETY: each descriptor's pointers are valid, and a state's data writable
        // (caller's contract).
        match states.contains(&i) {
            true => {
                lent.insert(port.name.clone(), unsafe { state_buffer(port, t) }?);
            }
            false => fed.push((port.name.as_str(), unsafe { input_of(port, t) }?)),
        };
    }
    let feeds: HashMap<&str, Input> = fed
        .iter()
        .map(|(name, f)| {
            let input = match f {
                Fed::InPlace(bytes) => Input::Bytes(bytes.clone()),
                Fed::Copied(t) => Input::Tensor(t),
            };
            (*name, input)
        })
        .collect();
    let (results, _) = match in_place {
        true => model.program.run_inputs_in_place(&feeds, &mut lent),
        false => model.program.run_inputs(&feeds),
    }
    .map_err(|e| e.to_string())?;
    Ok(outputs_of(results))
}

/// The status of a run ([`run`]), with its outputs stored in `*outputs` or its error in
/// `error`.
///
/// # Safety
/// As [`kiln_run`] (and [`kiln_run_in_place`] with `in_place`).
unsafe fn run_status(
    model: *const kiln_model,
    inputs: *const kiln_tensor,
    input_count: usize,
    outputs: *mut *mut kiln_outputs,
    error: *mut c_char,
    error_size: usize,
    in_place: bool,
) -> c_int {
    if !outputs.is_null() {
        // SAFETY: writable (caller's contract).
        unsafe { *outputs = ptr::null_mut() };
    }
    let result = if outputs.is_null() {
        Err("outputs is NULL".to_string())
    } else {
        // SAFETY: the caller's contract.
        guarded(|| unsafe { run(model, inputs, input_count, in_place) })
    };
    match result {
        Ok(out) => {
            // SAFETY: non-NULL and writable (caller's contract).
            unsafe { *outputs = Box::into_raw(Box::new(out)) };
            0
        }
        Err(e) => {
            // SAFETY: the caller's contract on `error`.
            unsafe { set_error(error, error_size, &e) };
            1
        }
    }
}

/// Runs `model` on `input_count` inputs (in `model.h` order); 0 on success with the outputs
/// in `*outputs`, nonzero on failure with `*outputs` NULL and a message in `error`.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`]; `inputs` is NULL or points to
/// `input_count` tensors whose `shape` points to `rank` sizes and whose `data` points to the
/// elements the dtype and shape describe; `outputs` is NULL or writable; `error` is NULL or
/// points to `error_size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn kiln_run(
    model: *const kiln_model,
    inputs: *const kiln_tensor,
    input_count: usize,
    outputs: *mut *mut kiln_outputs,
    error: *mut c_char,
    error_size: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe {
        run_status(
            model,
            inputs,
            input_count,
            outputs,
            error,
            error_size,
            false,
        )
    }
}

/// [`kiln_run`] with every state input (a KV cache: [`kiln_input_is_state`]) updated in the
/// caller's buffer, in place; the outputs are the others.
///
/// # Safety
/// As [`kiln_run`], and each state input's `data` points to writable memory of its shape
/// that nothing else reads or writes during the call.
#[no_mangle]
pub unsafe extern "C" fn kiln_run_in_place(
    model: *const kiln_model,
    inputs: *const kiln_tensor,
    input_count: usize,
    outputs: *mut *mut kiln_outputs,
    error: *mut c_char,
    error_size: usize,
) -> c_int {
    // SAFETY: the caller's contract.
    unsafe { run_status(model, inputs, input_count, outputs, error, error_size, true) }
}

/// 1 if input `index` is a state (an input the model also outputs under its name, such as a
/// KV cache), which [`kiln_run_in_place`] updates in place; 0 if not, or if `model` is NULL
/// or `index` out of range.
///
/// # Safety
/// `model` is NULL or a live model from [`kiln_load`].
#[no_mangle]
pub unsafe extern "C" fn kiln_input_is_state(model: *const kiln_model, index: usize) -> c_int {
    // SAFETY: the caller's contract.
    let Some(model) = (unsafe { model_ref(model) }) else {
        return 0;
    };
    let states = model.program.plan().states();
    c_int::from(states.iter().any(|&(i, _)| i == index))
}

/// The number of tensors in `outputs` (0 if NULL).
///
/// # Safety
/// `outputs` is NULL or live outputs from [`kiln_run`].
#[no_mangle]
pub unsafe extern "C" fn kiln_outputs_count(outputs: *const kiln_outputs) -> usize {
    // SAFETY: the caller's contract.
    unsafe { outputs.as_ref() }.map_or(0, |o| o.views.len())
}

/// Output tensor `index`, owned by `outputs`; NULL if `outputs` is NULL or `index` is out of
/// range.
///
/// # Safety
/// `outputs` is NULL or live outputs from [`kiln_run`]; the tensor is used only while they
/// live.
#[no_mangle]
pub unsafe extern "C" fn kiln_outputs_get(
    outputs: *const kiln_outputs,
    index: usize,
) -> *const kiln_tensor {
    // SAFETY: the caller's contract.
    unsafe { outputs.as_ref() }
        .and_then(|o| o.views.get(index))
        .map_or(ptr::null(), |t| t as *const kiln_tensor)
}

/// Frees outputs returned by [`kiln_run`] (NULL is ignored).
///
/// # Safety
/// `outputs` is NULL or outputs from [`kiln_run`] not yet freed; they are not used afterwards.
#[no_mangle]
pub unsafe extern "C" fn kiln_outputs_free(outputs: *mut kiln_outputs) {
    if !outputs.is_null() {
        // SAFETY: the outputs came from `Box::into_raw` in `kiln_run` (caller's contract).
        let outputs = unsafe { Box::from_raw(outputs) };
        // A panicking destructor must not unwind into C; there is no one to tell.
        let _ = catch_unwind(AssertUnwindSafe(|| drop(outputs)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kiln.h`, whose declarations these functions implement.
    const HEADER: &str = include_str!("../include/kiln.h");

    #[test]
    fn header_dtype_values_match() {
        for dtype in DType::ALL {
            let name = format!("KILN_{}", dtype.name().to_uppercase());
            let line = format!("    {name} = {},", dtype_code(dtype));
            let last = format!("    {name} = {} ", dtype_code(dtype));
            assert!(
                HEADER
                    .lines()
                    .any(|l| l.starts_with(&line) || l.starts_with(&last)),
                "kiln.h does not give {name} the value {}",
                dtype_code(dtype)
            );
            assert_eq!(dtype_of_code(dtype_code(dtype)), Some(dtype));
            assert_eq!(kiln_dtype_size(dtype_code(dtype)), dtype.size());
        }
        assert_eq!(dtype_of_code(0), None);
    }

    #[test]
    fn every_declared_function_is_defined() {
        let source = include_str!("lib.rs");
        let declared: Vec<&str> = HEADER
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()) && l.contains('('))
            .filter_map(|l| l.split('(').next()?.rsplit([' ', '*']).next())
            .filter(|name| name.starts_with("kiln_"))
            .collect();
        assert_eq!(declared.len(), 16, "{declared:?}");
        for name in declared {
            assert!(
                source.contains(&format!("extern \"C\" fn {name}(")),
                "{name} is declared in kiln.h but not defined"
            );
        }
    }

    #[test]
    fn messages_are_one_line_truncated_at_a_character_boundary() {
        let mut buf = [0x55 as c_char; 8];
        // SAFETY: an 8-byte buffer.
        unsafe { set_error(buf.as_mut_ptr(), 8, "ab\ncdé—xyz") };
        // SAFETY: NUL-terminated by set_error.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
        assert_eq!(text.to_str(), Ok("ab cdé"));
        // SAFETY: NULL and empty buffers are ignored.
        unsafe {
            set_error(ptr::null_mut(), 8, "x");
            set_error(buf.as_mut_ptr(), 0, "x");
        }
        assert_eq!(buf[0], b'a' as c_char);
    }

    #[test]
    fn panics_become_internal_errors() {
        let result: Result<(), String> = guarded(|| panic!("kernel {} exploded", 3));
        assert_eq!(result, Err("internal error: kernel 3 exploded".into()));
        let result: Result<(), String> = guarded(|| panic!("static"));
        assert_eq!(result, Err("internal error: static".into()));
        assert_eq!(guarded(|| Ok(7)), Ok(7));
    }
}
