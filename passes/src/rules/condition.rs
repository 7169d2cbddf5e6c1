//! The condition vocabulary of rules: predicates on the shapes, dtypes and constant values of
//! the e-classes a rule's left side binds.
//!
//! | condition | holds when |
//! |---|---|
//! | `const ?v` | `?v` is a constant (a weight or literal) |
//! | `const ?v = N` | every element of constant `?v` equals `N` (relative tolerance 1e-6) |
//! | `scalar ?v` | `?v` has exactly one element |
//! | `float ?v` | `?v` has a float dtype |
//! | `dtype ?v = T` | `?v` has dtype `T` (`f32`, `i64`, ...) |
//! | `rank ?v = N` | `?v` has rank `N` |
//! | `same-shape ?a ?b` | `?a` and `?b` have equal (symbolic) shapes |
//! | `dim ?a I = N` | dim `I` of `?a` (negative counts from the end) is the constant `N` |
//! | `dim ?a I = dim ?b J` | those two dims are equal (symbolically) |
//! | `distinct ?a ?b` | `?a` and `?b` are different e-classes |
//! | `ordered ?a ?b` | `?a`'s e-class id is below `?b`'s (breaks the symmetry of multi-patterns) |
//! | `half ?c ?x` | constant `?c` is half of the last dim of `?x` |
//! | `last-axis ?c ?x` | constant `?c` names the last axis of `?x` (-1 or rank - 1) |

use crate::analysis::{ClassData, KilnEGraph};
use egg::{Subst, Var};
use kiln_ir::{DType, Dim};

/// One condition; see the module docs for the syntax.
#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    /// `const ?v`.
    IsConst(Var),
    /// `const ?v = N`.
    ConstEq(Var, f64),
    /// `scalar ?v`.
    Scalar(Var),
    /// `float ?v`.
    Float(Var),
    /// `dtype ?v = T`.
    DType(Var, DType),
    /// `rank ?v = N`.
    Rank(Var, usize),
    /// `same-shape ?a ?b`.
    SameShape(Var, Var),
    /// `dim ?a I = N`.
    DimIs(Var, i64, i64),
    /// `dim ?a I = dim ?b J`.
    DimEq(Var, i64, Var, i64),
    /// `distinct ?a ?b`.
    Distinct(Var, Var),
    /// `ordered ?a ?b`.
    Ordered(Var, Var),
    /// `half ?c ?x`.
    Half(Var, Var),
    /// `last-axis ?c ?x`.
    LastAxis(Var, Var),
}

impl Condition {
    /// The variables the condition reads.
    pub fn vars(&self) -> Vec<Var> {
        use Condition::*;
        match self {
            IsConst(v)
            | ConstEq(v, _)
            | Scalar(v)
            | Float(v)
            | DType(v, _)
            | Rank(v, _)
            | DimIs(v, _, _) => vec![*v],
            SameShape(a, b)
            | DimEq(a, _, b, _)
            | Distinct(a, b)
            | Ordered(a, b)
            | Half(a, b)
            | LastAxis(a, b) => {
                vec![*a, *b]
            }
        }
    }

    /// Parses one condition.
    pub fn parse(text: &str) -> Result<Condition, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let var = super::parse::parse_var;
        let num = super::parse::parse_number;
        let int = |w: &str| -> Result<i64, String> {
            w.parse()
                .map_err(|_| format!("expected an integer, found `{w}`"))
        };
        let count = |w: &str| -> Result<usize, String> {
            w.parse()
                .map_err(|_| format!("expected a non-negative integer, found `{w}`"))
        };
        use Condition::*;
        Ok(match words.as_slice() {
            ["const", v] => IsConst(var(v)?),
            ["const", v, "=", n] => ConstEq(var(v)?, num(n)?),
            ["scalar", v] => Scalar(var(v)?),
            ["float", v] => Float(var(v)?),
            ["dtype", v, "=", t] => DType(var(v)?, t.parse()?),
            ["rank", v, "=", n] => Rank(var(v)?, count(n)?),
            ["same-shape", a, b] => SameShape(var(a)?, var(b)?),
            ["dim", a, i, "=", "dim", b, j] => DimEq(var(a)?, int(i)?, var(b)?, int(j)?),
            ["dim", a, i, "=", n] => DimIs(var(a)?, int(i)?, int(n)?),
            ["distinct", a, b] => Distinct(var(a)?, var(b)?),
            ["ordered", a, b] => Ordered(var(a)?, var(b)?),
            ["half", c, x] => Half(var(c)?, var(x)?),
            ["last-axis", c, x] => LastAxis(var(c)?, var(x)?),
            _ => {
                return Err(format!(
                    "unknown condition `{text}` (expected const, scalar, float, dtype, rank, same-shape, dim, distinct, ordered, half or last-axis)"
                ))
            }
        })
    }

    /// Whether the condition holds for the classes `subst` binds.
    pub fn holds(&self, egraph: &KilnEGraph, subst: &Subst) -> bool {
        let data = |v: &Var| -> &ClassData { &egraph[subst[*v]].data };
        let dim = |v: &Var, i: i64| -> Option<Dim> {
            let shape = &data(v).ty()?.shape;
            let i = if i < 0 { i + shape.len() as i64 } else { i };
            shape.get(usize::try_from(i).ok()?).cloned()
        };
        use Condition::*;
        match self {
            IsConst(v) => is_constant(egraph, subst[*v]),
            ConstEq(v, n) => const_is(egraph, subst, v, *n),
            Scalar(v) => data(v)
                .ty()
                .is_some_and(|t| t.shape.iter().all(|d| d.is(1))),
            Float(v) => data(v).ty().is_some_and(|t| t.dtype.is_float()),
            DType(v, d) => data(v).ty().is_some_and(|t| t.dtype == *d),
            Rank(v, r) => data(v).ty().is_some_and(|t| t.shape.len() == *r),
            SameShape(a, b) => {
                matches!((data(a).ty(), data(b).ty()), (Some(x), Some(y)) if x.shape == y.shape)
            }
            DimIs(v, i, n) => dim(v, *i).is_some_and(|d| d.is(*n)),
            DimEq(a, i, b, j) => matches!((dim(a, *i), dim(b, *j)), (Some(x), Some(y)) if x == y),
            Distinct(a, b) => egraph.find(subst[*a]) != egraph.find(subst[*b]),
            Ordered(a, b) => egraph.find(subst[*a]) < egraph.find(subst[*b]),
            Half(c, x) => {
                let last = data(x)
                    .ty()
                    .and_then(|t| t.shape.last())
                    .and_then(Dim::as_known);
                last.is_some_and(|d| d % 2 == 0 && const_is(egraph, subst, c, (d / 2) as f64))
            }
            LastAxis(c, x) => data(x).ty().is_some_and(|t| {
                const_is(egraph, subst, c, -1.0)
                    || const_is(egraph, subst, c, t.shape.len() as f64 - 1.0)
            }),
        }
    }
}

/// True if `?v` is a constant whose every element is `n`.
fn const_is(egraph: &KilnEGraph, subst: &Subst, v: &Var, n: f64) -> bool {
    is_constant(egraph, subst[*v])
        && egraph[subst[*v]]
            .data
            .value
            .as_ref()
            .is_some_and(|vals| !vals.is_empty() && vals.iter().all(|x| close(*x, n)))
}

fn is_constant(egraph: &KilnEGraph, id: egg::Id) -> bool {
    egraph[id]
        .nodes
        .iter()
        .any(|n| matches!(n, crate::lang::Node::Const(_)))
}

fn close(x: f64, n: f64) -> bool {
    (x - n).abs() <= 1e-6 * n.abs().max(1e-30) || x == n
}
