//! The activations: the functions a GEMM epilogue applies ([`OpKind::FusedMatMul`]'s
//! `activation` attribute) and that elementwise ops compute on their own. This module owns
//! their names, the op each one is, and their values: [`Activation::formula`] is written
//! once over [`Arithmetic`], so the reference ([`Activation::apply`], `f32` arithmetic, what
//! the interpreter computes) and the kernels (codegen implements [`Arithmetic`] for its
//! kernel IR, with approximations of erf, tanh and sigmoid) evaluate the same formula.
//!
//! # Special values
//!
//! - NaN gives NaN for every activation. ReLU is `x < 0 ? 0 : x`, whose comparison is false
//!   for NaN, so it propagates NaN as `torch.relu`, `numpy.maximum(x, 0)` and the ONNX
//!   reference do (not `f32::max`, which would give 0); it keeps `-0.0` (not below 0).
//! - `+inf` gives `+inf` for relu, gelu, gelu_tanh and silu, and 1 for sigmoid and tanh.
//! - `-inf` gives 0 for relu and sigmoid, -1 for tanh, and `-0.0` for gelu, gelu_tanh and
//!   silu (the limits; these three are `x` times a factor in (0, 1)).
//!
//! The formulas alone would give NaN at `-inf` (`-inf * 0` for gelu and silu), and a
//! kernel's sigmoid, `1 / (1 + e^-x)` with an `e^x` that stays finite, never reaches 0. So
//! ReLU, sigmoid, silu and both GELUs have a *zero tail*: a bound below which the value is
//! exactly a signed zero, selected instead of the formula's value. For ReLU the bound is 0;
//! for the others it is where the exact value's magnitude falls below 2^-150, so that it
//! rounds to zero in f32: -104 for sigmoid (`e^x`), -109 for silu (`|x| e^x`), -14.5 for gelu
//! (`φ(x)`, the normal density) and -11 for gelu_tanh (`|x| e^{2 √(2/π) (x + 0.044715 x³)}`).

use crate::{Attr, Attrs, Op, OpKind};
use std::ops::{Add, Mul};

/// An activation function (see the module doc for its values at NaN and ±inf).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// The identity.
    None,
    /// `x < 0 ? 0 : x`.
    Relu,
    /// GELU, exact form: `x/2 (1 + erf(x / √2))`.
    Gelu,
    /// GELU, tanh approximation: `x/2 (1 + tanh(√(2/π) (x + 0.044715 x³)))`.
    GeluTanh,
    /// `x * sigmoid(x)`.
    Silu,
    /// `1 / (1 + e^-x)`.
    Sigmoid,
    /// The hyperbolic tangent.
    Tanh,
}

/// The arithmetic [`Activation::formula`] is written in: `f32` for the reference, kernel IR
/// values for the kernels. Values may be used more than once.
pub trait Arithmetic: Clone + Add<Output = Self> + Mul<Output = Self> {
    /// A constant.
    fn constant(c: f32) -> Self;
    /// The error function.
    fn erf(self) -> Self;
    /// The hyperbolic tangent.
    fn tanh(self) -> Self;
    /// `1 / (1 + e^-x)`.
    fn sigmoid(self) -> Self;
    /// `then` where `self < bound`, else `otherwise` (so `otherwise` where `self` is NaN).
    fn select_below(self, bound: f32, then: Self, otherwise: Self) -> Self;
}

/// The reference arithmetic: `f32` operations, libm's `erff`.
impl Arithmetic for f32 {
    fn constant(c: f32) -> f32 {
        c
    }
    fn erf(self) -> f32 {
        libm::erff(self)
    }
    fn tanh(self) -> f32 {
        f32::tanh(self)
    }
    fn sigmoid(self) -> f32 {
        1.0 / (1.0 + (-self).exp())
    }
    fn select_below(self, bound: f32, then: f32, otherwise: f32) -> f32 {
        if self < bound {
            then
        } else {
            otherwise
        }
    }
}

impl Activation {
    /// Every activation, in the order of [`Activation::NAMES`].
    pub const ALL: [Activation; 7] = [
        Activation::None,
        Activation::Relu,
        Activation::Gelu,
        Activation::GeluTanh,
        Activation::Silu,
        Activation::Sigmoid,
        Activation::Tanh,
    ];

    /// The spellings of FusedMatMul's `activation` attribute, in the order of
    /// [`Activation::ALL`].
    pub const NAMES: [&'static str; 7] = [
        "none",
        "relu",
        "gelu",
        "gelu_tanh",
        "silu",
        "sigmoid",
        "tanh",
    ];

    /// The activation's spelling in FusedMatMul's `activation` attribute.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// The activation spelled `name` (as [`Activation::name`] gives it), or an error naming
    /// the spellings.
    pub fn parse(name: &str) -> Result<Activation, String> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == name)
            .ok_or_else(|| {
                format!(
                    "unknown activation `{name}` (one of {})",
                    Self::NAMES.join(", ")
                )
            })
    }

    /// The elementwise op that computes the activation on its own: Identity, Relu, Gelu
    /// (`approximate` none or tanh), Silu, Sigmoid or Tanh.
    pub fn op(self) -> Op {
        let gelu = |approximate: &str| {
            let attrs = Attrs::from_pairs(&[("approximate", Attr::Str(approximate.into()))]);
            Op::new(OpKind::Gelu, attrs)
        };
        match self {
            Activation::None => Op::plain(OpKind::Identity),
            Activation::Relu => Op::plain(OpKind::Relu),
            Activation::Gelu => gelu("none"),
            Activation::GeluTanh => gelu("tanh"),
            Activation::Silu => Op::plain(OpKind::Silu),
            Activation::Sigmoid => Op::plain(OpKind::Sigmoid),
            Activation::Tanh => Op::plain(OpKind::Tanh),
        }
    }

    /// The activation `op` computes when it is one of the ops of [`Activation::op`], `None`
    /// for any other op; an error for a Gelu whose `approximate` is neither none nor tanh.
    pub fn of_op(op: &Op) -> Result<Option<Activation>, String> {
        Ok(Some(match op.kind {
            OpKind::Identity => Activation::None,
            OpKind::Relu => Activation::Relu,
            OpKind::Gelu => match op.attrs.str("approximate")? {
                "none" => Activation::Gelu,
                "tanh" => Activation::GeluTanh,
                other => return Err(format!("unknown GELU approximation `{other}`")),
            },
            OpKind::Silu => Activation::Silu,
            OpKind::Sigmoid => Activation::Sigmoid,
            OpKind::Tanh => Activation::Tanh,
            _ => return Ok(None),
        }))
    }

    /// The zero tail (see the module doc): the bound below which the activation's value is
    /// exactly the given signed zero.
    fn zero_tail(self) -> Option<(f32, f32)> {
        match self {
            Activation::None | Activation::Tanh => None,
            Activation::Relu => Some((0.0, 0.0)),
            Activation::Sigmoid => Some((-104.0, 0.0)),
            Activation::Silu => Some((-109.0, -0.0)),
            Activation::Gelu => Some((-14.5, -0.0)),
            Activation::GeluTanh => Some((-11.0, -0.0)),
        }
    }

    /// The activation of `x` in the arithmetic `T`: the formula of the variant's doc, and
    /// the zero tail selected below its bound. `x` is used several times.
    pub fn formula<T: Arithmetic>(self, x: T) -> T {
        let k = T::constant;
        let value = match self {
            Activation::None | Activation::Relu => x.clone(),
            Activation::Gelu => {
                let e = (x.clone() * k(std::f32::consts::FRAC_1_SQRT_2)).erf();
                k(0.5) * x.clone() * (k(1.0) + e)
            }
            Activation::GeluTanh => {
                let c = (2.0 / std::f32::consts::PI).sqrt();
                let cubic = k(0.044715) * x.clone() * x.clone() * x.clone();
                let t = (k(c) * (x.clone() + cubic)).tanh();
                k(0.5) * x.clone() * (k(1.0) + t)
            }
            Activation::Silu => x.clone() * x.clone().sigmoid(),
            Activation::Sigmoid => x.clone().sigmoid(),
            Activation::Tanh => x.clone().tanh(),
        };
        match self.zero_tail() {
            Some((bound, zero)) => x.select_below(bound, k(zero), value),
            None => value,
        }
    }

    /// The activation of `x`: the reference semantics, which the interpreter computes and
    /// kernels are tested against.
    pub fn apply(self, x: f32) -> f32 {
        self.formula(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_ops_map_back() {
        for a in Activation::ALL {
            assert_eq!(Activation::parse(a.name()), Ok(a));
            assert_eq!(Activation::of_op(&a.op()), Ok(Some(a)));
        }
        let err = Activation::parse("swish").unwrap_err();
        assert!(
            err.contains("`swish`") && err.contains("gelu_tanh"),
            "{err}"
        );
        assert_eq!(Activation::of_op(&Op::plain(OpKind::Exp)), Ok(None));
        let odd = Op::new(
            OpKind::Gelu,
            Attrs::from_pairs(&[("approximate", Attr::Str("erf".into()))]),
        );
        assert!(Activation::of_op(&odd).is_err());
    }

    /// The values at NaN, ±inf and signed zeros the module doc states, bit for bit.
    #[test]
    fn special_values_are_the_stated_limits() {
        use Activation::*;
        let (inf, nan) = (f32::INFINITY, f32::NAN);
        for a in Activation::ALL {
            assert!(a.apply(nan).is_nan(), "{a:?}(NaN)");
        }
        let cases = [
            (None, [-inf, -0.0, inf]),
            (Relu, [0.0, -0.0, inf]),
            (Gelu, [-0.0, -0.0, inf]),
            (GeluTanh, [-0.0, -0.0, inf]),
            (Silu, [-0.0, -0.0, inf]),
            (Sigmoid, [0.0, 0.5, 1.0]),
            (Tanh, [-1.0, -0.0, 1.0]),
        ];
        for (a, [at_neg_inf, at_neg_zero, at_inf]) in cases {
            for (x, want) in [(-inf, at_neg_inf), (-0.0, at_neg_zero), (inf, at_inf)] {
                let got = a.apply(x);
                assert_eq!(got.to_bits(), want.to_bits(), "{a:?}({x}) = {got}");
            }
        }
        assert_eq!(Relu.apply(-3.0), 0.0);
        assert_eq!(Relu.apply(3.0), 3.0);
    }

    /// At each zero tail's bound the exact value is below 2^-150 (it rounds to zero in f32)
    /// and the formula's value is below 1e-30: the tail replaces only values that are zero
    /// in all but name (and the formula's NaN at -inf).
    #[test]
    fn zero_tails_start_where_the_value_underflows() {
        let exact = |a: Activation, x: f64| -> f64 {
            let normal_cdf = |x: f64| 0.5 * libm::erfc(-x / std::f64::consts::SQRT_2);
            match a {
                Activation::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                Activation::Silu => x / (1.0 + (-x).exp()),
                Activation::Gelu => x * normal_cdf(x),
                Activation::GeluTanh => {
                    // x/2 (1 + tanh(y)) = x / (1 + e^{-2y}).
                    let c = (2.0 / std::f64::consts::PI).sqrt();
                    x / (1.0 + (-2.0 * c * (x + 0.044715 * x * x * x)).exp())
                }
                _ => unreachable!(),
            }
        };
        for a in [
            Activation::Sigmoid,
            Activation::Silu,
            Activation::Gelu,
            Activation::GeluTanh,
        ] {
            let (bound, _) = a.zero_tail().unwrap();
            assert!(exact(a, bound as f64).abs() < 2f64.powi(-150), "{a:?}");
            assert!(a.apply(bound).abs() < 1e-30, "{a:?}({bound})");
        }
    }
}
