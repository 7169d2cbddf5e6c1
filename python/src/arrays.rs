//! numpy arrays to kiln's inputs and back: each input checked against the model's declaration
//! (dtype, rank, fixed dims) with a message naming it and read in place where its layout
//! allows; outputs handed to numpy without a copy.

use crate::errors::input_error;
use kiln_ir::{DType, Tensor, Value};
use kiln_rt::{Input, InputBytes};
use numpy::{
    Element, PyArrayDescrMethods, PyArrayDyn, PyArrayMethods, PyUntypedArray, PyUntypedArrayMethods,
};
use pyo3::prelude::*;

/// The numpy name of a kiln dtype (`float32`, `int64`, ...).
pub fn numpy_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "float32",
        DType::F16 => "float16",
        DType::BF16 => "bfloat16",
        DType::I8 => "int8",
        DType::U8 => "uint8",
        DType::I32 => "int32",
        DType::I64 => "int64",
        DType::Bool => "bool",
    }
}

/// `object` as a numpy array, or an error naming `input`.
fn as_array<'py>(input: &str, object: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyUntypedArray>> {
    object.downcast::<PyUntypedArray>().cloned().map_err(|_| {
        let type_name = object
            .get_type()
            .name()
            .map_or_else(|_| "?".to_string(), |n| n.to_string());
        input_error(format!("input `{input}`: a {type_name}, not a numpy array"))
    })
}

/// Checks a numpy array's dtype, rank and fixed dims against the declared input `value`.
fn check_declared(value: &Value, array: &Bound<'_, PyUntypedArray>) -> PyResult<()> {
    let name = &value.name;
    let declared = value.ty.dtype;
    let given = array.dtype();
    let dtype_matches = given.is_equiv_to(&descr(array.py(), declared)?);
    if !dtype_matches {
        return Err(input_error(format!(
            "input `{name}`: an array of dtype {given}, the model declares {}",
            numpy_name(declared)
        )));
    }
    let shape = array.shape();
    let dims = &value.ty.shape;
    if shape.len() != dims.len() {
        let declared: Vec<String> = dims.iter().map(ToString::to_string).collect();
        return Err(input_error(format!(
            "input `{name}`: an array of rank {} {shape:?}, the model declares rank {} [{}]",
            shape.len(),
            dims.len(),
            declared.join(", ")
        )));
    }
    for (axis, (&n, dim)) in shape.iter().zip(dims.iter()).enumerate() {
        if let Some(want) = dim.as_known() {
            if want != n as i64 {
                return Err(input_error(format!(
                    "input `{name}`: dimension {axis} is {n}, the model declares {want}"
                )));
            }
        }
    }
    Ok(())
}

/// The numpy descriptor of `dtype`; an error for bfloat16, which numpy has no type for.
fn descr(py: Python<'_>, dtype: DType) -> PyResult<Bound<'_, numpy::PyArrayDescr>> {
    Ok(match dtype {
        DType::F32 => numpy::dtype::<f32>(py),
        DType::F16 => numpy::dtype::<half::f16>(py),
        DType::I8 => numpy::dtype::<i8>(py),
        DType::U8 => numpy::dtype::<u8>(py),
        DType::I32 => numpy::dtype::<i32>(py),
        DType::I64 => numpy::dtype::<i64>(py),
        DType::Bool => numpy::dtype::<bool>(py),
        DType::BF16 => {
            return Err(input_error(
                "bfloat16 inputs are not available from numpy, which has no bfloat16 dtype".into(),
            ))
        }
    })
}

/// The elements of `array` (of element type `T`, checked) copied into a row-major tensor.
fn copy_of<T: Element + kiln_ir::tensor::Element>(array: &Bound<'_, PyUntypedArray>) -> Tensor {
    let typed = array
        .downcast::<PyArrayDyn<T>>()
        .expect("the dtype was checked against the declaration");
    let view = typed.readonly();
    T::wrap(view.as_array().as_standard_layout().into_owned())
}

/// An input array as a run reads it: in place, or copied.
pub enum Fed<'py> {
    /// A C-contiguous, aligned array of the declared dtype, read where it is.
    InPlace(Bound<'py, PyUntypedArray>, DType),
    /// Any other layout (strided, misaligned) or a bool array, copied into a row-major tensor.
    Copied(Tensor),
}

impl Fed<'_> {
    /// The input of a run over this array.
    pub fn input(&self) -> Input<'_> {
        match self {
            Fed::Copied(t) => Input::Tensor(t),
            Fed::InPlace(array, dtype) => {
                // SAFETY: a C-contiguous array's bytes, kept alive by `self` for the borrow;
                // a run only reads its inputs.
                let bytes = unsafe { array_bytes(array) };
                Input::Bytes(
                    InputBytes::new(*dtype, array.shape().to_vec(), bytes)
                        .expect("checked C-contiguous and aligned for the dtype"),
                )
            }
        }
    }
}

/// The numpy array fed to input `value`, checked against its declaration: read in place when
/// it is C-contiguous and aligned, else copied (any strides; read-only arrays are fine). Bool
/// arrays are always copied, so that every element read is 0 or 1.
pub fn fed<'py>(value: &Value, object: &Bound<'py, PyAny>) -> PyResult<Fed<'py>> {
    let array = as_array(&value.name, object)?;
    check_declared(value, &array)?;
    let dtype = value.ty.dtype;
    // SAFETY: only the data pointer's address is read.
    let data = unsafe { (*array.as_array_ptr()).data };
    let aligned = data.align_offset(dtype.size()) == 0 || array.is_empty();
    if array.is_c_contiguous() && aligned && dtype != DType::Bool {
        return Ok(Fed::InPlace(array, dtype));
    }
    Ok(Fed::Copied(match dtype {
        DType::F32 => copy_of::<f32>(&array),
        DType::F16 => copy_of::<half::f16>(&array),
        DType::I8 => copy_of::<i8>(&array),
        DType::U8 => copy_of::<u8>(&array),
        DType::I32 => copy_of::<i32>(&array),
        DType::I64 => copy_of::<i64>(&array),
        DType::Bool => copy_of::<bool>(&array),
        DType::BF16 => unreachable!("descr rejected bfloat16"),
    }))
}

/// The numpy array lent for state `value` (a KV cache), which the run overwrites with the
/// state's new value: it must be writable and C-contiguous, since the kernels write it in
/// place.
pub fn state_array<'py>(
    value: &Value,
    object: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyUntypedArray>> {
    let array = as_array(&value.name, object)?;
    check_declared(value, &array)?;
    if !array.is_c_contiguous() {
        return Err(input_error(format!(
            "state `{}`: the array is not C-contiguous; a state is written in place (np.ascontiguousarray makes one)",
            value.name
        )));
    }
    let writeable: bool = array.getattr("flags")?.getattr("writeable")?.extract()?;
    if !writeable {
        return Err(input_error(format!(
            "state `{}`: the array is read-only; a state is written in place",
            value.name
        )));
    }
    Ok(array)
}

/// The bytes of a C-contiguous array, for as long as the caller says.
///
/// # Safety
/// The array is C-contiguous and lives, unresized, for `'a`; a mutable borrow (a state's,
/// checked writable by [`state_array`]) must be the only access to it for `'a`.
pub unsafe fn array_bytes<'a>(array: &Bound<'_, PyUntypedArray>) -> &'a mut [u8] {
    let n = array.len() * array.dtype().itemsize();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: a C-contiguous array's `n` bytes start at its data pointer; the caller's
    // contract covers their lifetime and sharing.
    unsafe { std::slice::from_raw_parts_mut((*array.as_array_ptr()).data.cast::<u8>(), n) }
}

/// A tensor as a numpy array, its buffer moved, not copied; bfloat16 becomes float32 (numpy
/// has no bfloat16), exactly.
pub fn to_numpy(py: Python<'_>, tensor: Tensor) -> Bound<'_, PyAny> {
    match tensor {
        Tensor::F32(a) => PyArrayDyn::from_owned_array(py, a).into_any(),
        Tensor::F16(a) => PyArrayDyn::from_owned_array(py, a).into_any(),
        Tensor::BF16(a) => PyArrayDyn::from_owned_array(py, a.mapv(f32::from)).into_any(),
        Tensor::I8(a) => PyArrayDyn::from_owned_array(py, a).into_any(),
        Tensor::U8(a) => PyArrayDyn::from_owned_array(py, a).into_any(),
        Tensor::I32(a) => PyArrayDyn::from_owned_array(py, a).into_any(),
        Tensor::I64(a) => PyArrayDyn::from_owned_array(py, a).into_any(),
        Tensor::Bool(a) => PyArrayDyn::from_owned_array(py, a).into_any(),
    }
}
