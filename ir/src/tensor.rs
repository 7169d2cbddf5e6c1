//! [`Tensor`]: an owned n-dimensional array of one of the IR's dtypes, the value type of the
//! reference interpreter and of `.npy` I/O.

use crate::data::TensorData;
use crate::DType;
use bytes::Bytes;
use half::{bf16, f16};
use ndarray::{ArrayD, IxDyn};

/// An owned tensor value: one `ndarray` array per dtype.
#[derive(Clone, Debug, PartialEq)]
pub enum Tensor {
    /// f32 elements.
    F32(ArrayD<f32>),
    /// f16 elements.
    F16(ArrayD<f16>),
    /// bf16 elements.
    BF16(ArrayD<bf16>),
    /// i8 elements.
    I8(ArrayD<i8>),
    /// u8 elements.
    U8(ArrayD<u8>),
    /// i32 elements.
    I32(ArrayD<i32>),
    /// i64 elements.
    I64(ArrayD<i64>),
    /// bool elements.
    Bool(ArrayD<bool>),
}

/// Runs `$body` with `$a` bound to the inner array, whatever the dtype.
#[macro_export]
macro_rules! with_array {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $body,
            $crate::Tensor::F16($a) => $body,
            $crate::Tensor::BF16($a) => $body,
            $crate::Tensor::I8($a) => $body,
            $crate::Tensor::U8($a) => $body,
            $crate::Tensor::I32($a) => $body,
            $crate::Tensor::I64($a) => $body,
            $crate::Tensor::Bool($a) => $body,
        }
    };
}

/// Maps the inner array with `$body` (which must keep the element type), whatever the dtype.
#[macro_export]
macro_rules! map_array {
    ($t:expr, $a:ident => $body:expr) => {
        match $t {
            $crate::Tensor::F32($a) => $crate::Tensor::F32($body),
            $crate::Tensor::F16($a) => $crate::Tensor::F16($body),
            $crate::Tensor::BF16($a) => $crate::Tensor::BF16($body),
            $crate::Tensor::I8($a) => $crate::Tensor::I8($body),
            $crate::Tensor::U8($a) => $crate::Tensor::U8($body),
            $crate::Tensor::I32($a) => $crate::Tensor::I32($body),
            $crate::Tensor::I64($a) => $crate::Tensor::I64($body),
            $crate::Tensor::Bool($a) => $crate::Tensor::Bool($body),
        }
    };
}

/// Maps two tensors of the same dtype with `$body`; evaluates `$mismatch` if their dtypes differ.
#[macro_export]
macro_rules! zip_arrays {
    ($x:expr, $y:expr, ($a:ident, $b:ident) => $body:expr, else $mismatch:expr) => {
        match ($x, $y) {
            ($crate::Tensor::F32($a), $crate::Tensor::F32($b)) => $crate::Tensor::F32($body),
            ($crate::Tensor::F16($a), $crate::Tensor::F16($b)) => $crate::Tensor::F16($body),
            ($crate::Tensor::BF16($a), $crate::Tensor::BF16($b)) => $crate::Tensor::BF16($body),
            ($crate::Tensor::I8($a), $crate::Tensor::I8($b)) => $crate::Tensor::I8($body),
            ($crate::Tensor::U8($a), $crate::Tensor::U8($b)) => $crate::Tensor::U8($body),
            ($crate::Tensor::I32($a), $crate::Tensor::I32($b)) => $crate::Tensor::I32($body),
            ($crate::Tensor::I64($a), $crate::Tensor::I64($b)) => $crate::Tensor::I64($body),
            ($crate::Tensor::Bool($a), $crate::Tensor::Bool($b)) => $crate::Tensor::Bool($body),
            _ => $mismatch,
        }
    };
}

/// Scalar conversions between the IR's element types (the semantics of ONNX `Cast`).
pub trait Element: Copy + Default + PartialOrd + Send + Sync + std::fmt::Debug + 'static {
    /// The dtype of this element type.
    const DTYPE: DType;
    /// Converts to f64 (booleans become 0 or 1).
    fn to_f64(self) -> f64;
    /// Converts from f64: floats round to nearest, integers truncate toward zero and wrap.
    fn from_f64(v: f64) -> Self;
    /// Converts to i64 exactly for integers, by truncation for floats.
    fn to_i64(self) -> i64;
    /// Converts from i64 exactly for integers that fit (wrapping otherwise).
    fn from_i64(v: i64) -> Self;
    /// Wraps an array of this type as a [`Tensor`].
    fn wrap(a: ArrayD<Self>) -> Tensor;
    /// The inner array if `t` holds this element type.
    fn view(t: &Tensor) -> Option<&ArrayD<Self>>;
}

/// Runs `$body` with the type alias `$T` set to the element type of dtype `$dt`.
#[macro_export]
macro_rules! with_dtype {
    ($dt:expr, $T:ident => $body:expr) => {
        match $dt {
            $crate::DType::F32 => {
                type $T = f32;
                $body
            }
            $crate::DType::F16 => {
                type $T = half::f16;
                $body
            }
            $crate::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            $crate::DType::I8 => {
                type $T = i8;
                $body
            }
            $crate::DType::U8 => {
                type $T = u8;
                $body
            }
            $crate::DType::I32 => {
                type $T = i32;
                $body
            }
            $crate::DType::I64 => {
                type $T = i64;
                $body
            }
            $crate::DType::Bool => {
                type $T = bool;
                $body
            }
        }
    };
}

macro_rules! int_element {
    ($t:ty, $dt:ident) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dt;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64(v: f64) -> Self {
                if v.is_nan() {
                    0
                } else {
                    (v.trunc() as i128) as $t
                }
            }
            fn to_i64(self) -> i64 {
                self as i64
            }
            fn from_i64(v: i64) -> Self {
                v as $t
            }
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$dt(a)
            }
            fn view(t: &Tensor) -> Option<&ArrayD<Self>> {
                match t {
                    Tensor::$dt(a) => Some(a),
                    _ => None,
                }
            }
        }
    };
}
int_element!(i8, I8);
int_element!(u8, U8);
int_element!(i32, I32);
int_element!(i64, I64);

macro_rules! float_element {
    ($t:ty, $dt:ident, $from:expr, $to:expr) => {
        impl Element for $t {
            const DTYPE: DType = DType::$dt;
            fn to_f64(self) -> f64 {
                #[allow(clippy::redundant_closure_call)]
                ($to)(self)
            }
            fn from_f64(v: f64) -> Self {
                #[allow(clippy::redundant_closure_call)]
                ($from)(v)
            }
            fn to_i64(self) -> i64 {
                <i64 as Element>::from_f64(self.to_f64())
            }
            fn from_i64(v: i64) -> Self {
                Self::from_f64(v as f64)
            }
            fn wrap(a: ArrayD<Self>) -> Tensor {
                Tensor::$dt(a)
            }
            fn view(t: &Tensor) -> Option<&ArrayD<Self>> {
                match t {
                    Tensor::$dt(a) => Some(a),
                    _ => None,
                }
            }
        }
    };
}
float_element!(f32, F32, |v: f64| v as f32, |x: f32| x as f64);
float_element!(f16, F16, f16::from_f64, |x: f16| x.to_f64());
float_element!(bf16, BF16, bf16::from_f64, |x: bf16| x.to_f64());

impl Element for bool {
    const DTYPE: DType = DType::Bool;
    fn to_f64(self) -> f64 {
        self as u8 as f64
    }
    fn from_f64(v: f64) -> Self {
        v != 0.0
    }
    fn to_i64(self) -> i64 {
        self as i64
    }
    fn from_i64(v: i64) -> Self {
        v != 0
    }
    fn wrap(a: ArrayD<Self>) -> Tensor {
        Tensor::Bool(a)
    }
    fn view(t: &Tensor) -> Option<&ArrayD<Self>> {
        match t {
            Tensor::Bool(a) => Some(a),
            _ => None,
        }
    }
}

impl Tensor {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            Tensor::F32(_) => DType::F32,
            Tensor::F16(_) => DType::F16,
            Tensor::BF16(_) => DType::BF16,
            Tensor::I8(_) => DType::I8,
            Tensor::U8(_) => DType::U8,
            Tensor::I32(_) => DType::I32,
            Tensor::I64(_) => DType::I64,
            Tensor::Bool(_) => DType::Bool,
        }
    }

    /// The concrete shape.
    pub fn shape(&self) -> &[usize] {
        with_array!(self, a => a.shape())
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        with_array!(self, a => a.len())
    }

    /// True if the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Builds a tensor from a shape and row-major elements.
    pub fn from_vec<T: Element>(shape: &[usize], data: Vec<T>) -> Result<Tensor, String> {
        ArrayD::from_shape_vec(IxDyn(shape), data)
            .map(T::wrap)
            .map_err(|e| format!("shape {shape:?}: {e}"))
    }

    /// A rank-0 tensor.
    pub fn scalar<T: Element>(v: T) -> Tensor {
        T::wrap(ArrayD::from_elem(IxDyn(&[]), v))
    }

    /// A tensor of `shape` filled with zeros of `dtype`.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Tensor {
        Tensor::from_f64_array(dtype, ArrayD::zeros(IxDyn(shape)))
    }

    /// Converts every element with [`Element::from_f64`].
    pub fn from_f64_array(dtype: DType, a: ArrayD<f64>) -> Tensor {
        match dtype {
            DType::F32 => Tensor::F32(a.mapv(f32::from_f64)),
            DType::F16 => Tensor::F16(a.mapv(f16::from_f64)),
            DType::BF16 => Tensor::BF16(a.mapv(bf16::from_f64)),
            DType::I8 => Tensor::I8(a.mapv(i8::from_f64)),
            DType::U8 => Tensor::U8(a.mapv(u8::from_f64)),
            DType::I32 => Tensor::I32(a.mapv(i32::from_f64)),
            DType::I64 => Tensor::I64(a.mapv(i64::from_f64)),
            DType::Bool => Tensor::Bool(a.mapv(bool::from_f64)),
        }
    }

    /// Converts every element to f64 (exact for all but very large i64).
    pub fn to_f64_array(&self) -> ArrayD<f64> {
        with_array!(self, a => a.mapv(Element::to_f64))
    }

    /// Converts every element to f32.
    pub fn to_f32_array(&self) -> ArrayD<f32> {
        match self {
            Tensor::F32(a) => a.clone(),
            other => with_array!(other, a => a.mapv(|x| x.to_f64() as f32)),
        }
    }

    /// Converts every element to i64 (floats truncate).
    pub fn to_i64_array(&self) -> ArrayD<i64> {
        match self {
            Tensor::I64(a) => a.clone(),
            other => with_array!(other, a => a.mapv(Element::to_i64)),
        }
    }

    /// The elements as i64 in row-major order (for shape and index tensors).
    pub fn to_i64_vec(&self) -> Vec<i64> {
        self.to_i64_array().iter().copied().collect()
    }

    /// Converts to another dtype with ONNX `Cast` semantics.
    pub fn cast(&self, to: DType) -> Tensor {
        if self.dtype() == to {
            return self.clone();
        }
        let int_path = self.dtype().is_int() && (to.is_int() || to == DType::Bool);
        if int_path {
            let a = self.to_i64_array();
            return match to {
                DType::I8 => Tensor::I8(a.mapv(i8::from_i64)),
                DType::U8 => Tensor::U8(a.mapv(u8::from_i64)),
                DType::I32 => Tensor::I32(a.mapv(i32::from_i64)),
                DType::I64 => Tensor::I64(a),
                _ => Tensor::Bool(a.mapv(bool::from_i64)),
            };
        }
        if to == DType::F32 {
            return Tensor::F32(self.to_f32_array());
        }
        Tensor::from_f64_array(to, self.to_f64_array())
    }

    /// Reads stored bytes into an owned tensor (copies).
    pub fn from_data(d: &TensorData) -> Tensor {
        let b: &[u8] = d.bytes();
        let shape = IxDyn(d.shape());
        fn arr<T: bytemuck::Pod>(shape: IxDyn, b: &[u8]) -> ArrayD<T> {
            ArrayD::from_shape_vec(shape, bytemuck::pod_collect_to_vec::<u8, T>(b))
                .expect("TensorData length was checked at construction")
        }
        match d.dtype() {
            DType::F32 => Tensor::F32(arr(shape, b)),
            DType::F16 => Tensor::F16(arr(shape, b)),
            DType::BF16 => Tensor::BF16(arr(shape, b)),
            DType::I8 => Tensor::I8(arr(shape, b)),
            DType::U8 => Tensor::U8(arr(shape, b)),
            DType::I32 => Tensor::I32(arr(shape, b)),
            DType::I64 => Tensor::I64(arr(shape, b)),
            DType::Bool => Tensor::Bool(arr::<u8>(shape, b).mapv(|x| x != 0)),
        }
    }

    /// Stores the tensor as row-major little-endian bytes.
    pub fn to_data(&self) -> TensorData {
        fn bytes_of<T: bytemuck::Pod>(a: &ArrayD<T>) -> Vec<u8> {
            let v: Vec<T> = a.iter().copied().collect();
            bytemuck::cast_slice(&v).to_vec()
        }
        let bytes = match self {
            Tensor::F32(a) => bytes_of(a),
            Tensor::F16(a) => bytes_of(a),
            Tensor::BF16(a) => bytes_of(a),
            Tensor::I8(a) => bytes_of(a),
            Tensor::U8(a) => bytes_of(a),
            Tensor::I32(a) => bytes_of(a),
            Tensor::I64(a) => bytes_of(a),
            Tensor::Bool(a) => a.iter().map(|&x| x as u8).collect(),
        };
        TensorData::new(self.dtype(), self.shape().to_vec(), Bytes::from(bytes))
            .expect("an array's byte length matches its shape")
    }

    /// Reshapes to `shape` (same element count), keeping row-major order.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor, String> {
        let n: usize = shape.iter().product();
        if n != self.len() {
            return Err(format!("cannot reshape {:?} into {shape:?}", self.shape()));
        }
        Ok(map_array!(self, a => {
            let v: Vec<_> = a.iter().cloned().collect();
            ArrayD::from_shape_vec(IxDyn(shape), v).expect("element count checked")
        }))
    }
}
