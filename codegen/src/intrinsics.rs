//! Polynomial and rational approximations of the transcendental functions KIR offers
//! ([`crate::kir::Unary`]), written once over the [`Math`] trait so that every backend inlines
//! the same instruction sequence (no libm calls in hot loops) and the tests can measure the
//! accuracy on plain `f32`.
//!
//! Stated accuracy on f32 (checked by the tests below over dense grids):
//! - `exp`: relative error ≤ 4e-7 on [-87, 88]; 0 below -88.37, +∞ is not produced (clamped).
//! - `tanh`, `sigmoid`: absolute error ≤ 4e-7.
//! - `erf`: absolute error ≤ 5e-7 (Abramowitz–Stegun 7.1.26).

/// The arithmetic a backend provides, on scalars or vectors alike.
pub trait Math {
    /// A value in the backend (an SSA value, or an `f32` for the reference).
    type V: Copy;
    /// A constant.
    fn constant(&mut self, c: f32) -> Self::V;
    /// `a + b`.
    fn add(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// `a - b`.
    fn sub(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b`.
    fn mul(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// `a / b`.
    fn div(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// `a * b + c`.
    fn fma(&mut self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// `lo` where `a < lo`, `hi` where `hi < a`, otherwise `a` (so NaN passes through; the
    /// compare-and-select form is one `maxps` + one `minps` on x86).
    fn clamp(&mut self, a: Self::V, lo: Self::V, hi: Self::V) -> Self::V;
    /// `|a|`.
    fn abs(&mut self, a: Self::V) -> Self::V;
    /// The magnitude of `a` with the sign of `b`.
    fn copysign(&mut self, a: Self::V, b: Self::V) -> Self::V;
    /// Rounded towards negative infinity.
    fn floor(&mut self, a: Self::V) -> Self::V;
    /// The float whose bits are the bits of `a` shifted left by 23: for `a` = [`EXP_SHIFTER`]
    /// `+ n` with an integer `n` in [-127, 127] this is `2^n` (`n` = -127 gives 0).
    fn exponent_from_low_bits(&mut self, a: Self::V) -> Self::V;
}

/// Evaluates `c[0] + x * (c[1] + x * (c[2] + ...))` by Horner's rule with fused steps.
fn horner<M: Math>(m: &mut M, x: M::V, coefficients: &[f32]) -> M::V {
    let (&last, rest) = coefficients.split_last().expect("at least one coefficient");
    let mut acc = m.constant(last);
    for &c in rest.iter().rev() {
        let c = m.constant(c);
        acc = m.fma(acc, x, c);
    }
    acc
}

/// `1.5·2^23 + 127`, the shifter of [`exp`]: adding it to a float `v` with |v| < 2^22 rounds `v`
/// to the nearest integer `n` (the sum's ulp is 1), leaves `n + 127` (the biased exponent of
/// `2^n`) in the low mantissa bits, and subtracting it back gives `n` exactly.
pub const EXP_SHIFTER: f32 = 12_583_039.0;

/// `e^x`: Cody–Waite range reduction `x = n ln2 + r` with `n` rounded to nearest by the
/// [`EXP_SHIFTER`] addition (so |r| ≤ ln2/2), a degree-6 polynomial for `e^r`, and `2^n` from
/// the shifted bits. The clamp keeps `n` in [-127, 127], so `-∞` gives 0 and `+∞` a finite value.
pub fn exp<M: Math>(m: &mut M, x: M::V) -> M::V {
    let (lo, hi) = (m.constant(-88.376_26), m.constant(88.376_26));
    let x = m.clamp(x, lo, hi);
    let (log2e, shifter) = (
        m.constant(std::f32::consts::LOG2_E),
        m.constant(EXP_SHIFTER),
    );
    let t = m.fma(x, log2e, shifter);
    let n = m.sub(t, shifter);
    let (c1, c2) = (m.constant(-0.693_359_4), m.constant(2.121_944_4e-4));
    let r = m.fma(n, c1, x);
    let r = m.fma(n, c2, r);
    let p = horner(
        m,
        r,
        &[
            0.5,
            1.666_666_5e-1,
            4.166_579_6e-2,
            8.333_452e-3,
            1.399_82e-3,
            1.987_569_1e-4,
        ],
    );
    let r2 = m.mul(r, r);
    let one = m.constant(1.0);
    let r1 = m.add(r, one);
    let y = m.fma(p, r2, r1);
    let scale = m.exponent_from_low_bits(t);
    m.mul(y, scale)
}

/// `1 / (1 + e^-x)`.
pub fn sigmoid<M: Math>(m: &mut M, x: M::V) -> M::V {
    let zero = m.constant(0.0);
    let neg = m.sub(zero, x);
    let e = exp(m, neg);
    let one = m.constant(1.0);
    let d = m.add(one, e);
    m.div(one, d)
}

/// `tanh(x) = sign(x) (1 - 2 / (e^{2|x|} + 1))`.
pub fn tanh<M: Math>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let two = m.constant(2.0);
    let a2 = m.mul(a, two);
    let e = exp(m, a2);
    let one = m.constant(1.0);
    let d = m.add(e, one);
    let q = m.div(two, d);
    let t = m.sub(one, q);
    m.copysign(t, x)
}

/// The error function, Abramowitz–Stegun 7.1.26:
/// `erf(|x|) = 1 - t (a1 + t (a2 + ...)) e^{-x²}` with `t = 1 / (1 + p|x|)`.
pub fn erf<M: Math>(m: &mut M, x: M::V) -> M::V {
    let a = m.abs(x);
    let (p, one) = (m.constant(0.327_591_1), m.constant(1.0));
    let d = m.fma(a, p, one);
    let t = m.div(one, d);
    let poly = horner(
        m,
        t,
        &[
            0.254_829_6,
            -0.284_496_74,
            1.421_413_8,
            -1.453_152,
            1.061_405_4,
        ],
    );
    let poly = m.mul(poly, t);
    let zero = m.constant(0.0);
    let a2 = m.mul(a, a);
    let neg = m.sub(zero, a2);
    let e = exp(m, neg);
    let tail = m.mul(poly, e);
    let y = m.sub(one, tail);
    m.copysign(y, x)
}

/// The reference backend: plain `f32` arithmetic, for measuring accuracy.
pub struct Scalar;

impl Math for Scalar {
    type V = f32;
    fn constant(&mut self, c: f32) -> f32 {
        c
    }
    fn add(&mut self, a: f32, b: f32) -> f32 {
        a + b
    }
    fn sub(&mut self, a: f32, b: f32) -> f32 {
        a - b
    }
    fn mul(&mut self, a: f32, b: f32) -> f32 {
        a * b
    }
    fn div(&mut self, a: f32, b: f32) -> f32 {
        a / b
    }
    fn fma(&mut self, a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
    fn clamp(&mut self, a: f32, lo: f32, hi: f32) -> f32 {
        let a = if a < lo { lo } else { a };
        if hi < a {
            hi
        } else {
            a
        }
    }
    fn abs(&mut self, a: f32) -> f32 {
        a.abs()
    }
    fn copysign(&mut self, a: f32, b: f32) -> f32 {
        a.copysign(b)
    }
    fn floor(&mut self, a: f32) -> f32 {
        a.floor()
    }
    fn exponent_from_low_bits(&mut self, a: f32) -> f32 {
        f32::from_bits(a.to_bits() << 23)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    #[test]
    fn exp_is_accurate_to_stated_relative_error() {
        let mut worst = 0f64;
        for x in grid(-87.0, 88.0, 400_000) {
            let want = (x as f64).exp();
            let got = exp(&mut Scalar, x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst <= 4e-7, "worst relative error {worst}");
        assert_eq!(exp(&mut Scalar, f32::NEG_INFINITY), 0.0);
        assert!(exp(&mut Scalar, f32::INFINITY).is_finite());
        assert_eq!(exp(&mut Scalar, 0.0), 1.0);
        assert!(exp(&mut Scalar, f32::NAN).is_nan());
        assert_eq!(exp(&mut Scalar, -88.376_26), 0.0);
        assert!(exp(&mut Scalar, 88.376_26).is_finite());
    }

    #[test]
    fn tanh_sigmoid_erf_are_accurate_to_stated_absolute_error() {
        let (mut t, mut s, mut e) = (0f64, 0f64, 0f64);
        for x in grid(-20.0, 20.0, 400_000) {
            let xd = x as f64;
            t = t.max((tanh(&mut Scalar, x) as f64 - xd.tanh()).abs());
            s = s.max((sigmoid(&mut Scalar, x) as f64 - 1.0 / (1.0 + (-xd).exp())).abs());
            e = e.max((erf(&mut Scalar, x) as f64 - erf_f64(xd)).abs());
        }
        assert!(t <= 4e-7, "tanh {t}");
        assert!(s <= 4e-7, "sigmoid {s}");
        assert!(e <= 5e-7, "erf {e}");
        assert_eq!(tanh(&mut Scalar, 100.0), 1.0);
        assert_eq!(tanh(&mut Scalar, -100.0), -1.0);
        assert!(sigmoid(&mut Scalar, -1000.0) < 1e-37);
    }

    /// erf in f64 by its Taylor series (|x| < 3) or continued fraction tail, accurate to
    /// 1e-12, as the reference.
    fn erf_f64(x: f64) -> f64 {
        let a = x.abs();
        let v = if a < 3.0 {
            let (mut term, mut sum, mut n) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            // erfc by Lentz's continued fraction.
            let mut f = a;
            for k in (1..60).rev() {
                f = a + (k as f64 / 2.0) / f;
            }
            1.0 - (-a * a).exp() / (f * std::f64::consts::PI.sqrt())
        };
        v.copysign(x)
    }
}
