//! The sizes of a run. Every size expression of a plan (value shapes, kernel size arguments,
//! parallel extents, scratch lengths, index ranges) is interned once, when the program is
//! made, and each distinct one is evaluated once per run. A decode step launches hundreds of
//! kernels of a few microseconds each; walking every argument's polynomial at every launch
//! (each symbol looked up by name) cost more than some of the kernels.

use crate::plan::{Binding, KernelStep, Plan, Step};
use kiln_ir::interp::Bindings;
use kiln_ir::Dim;
use std::collections::HashMap;

/// A size expression of a [`SizeTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SizeId(u32);

/// The sizes one kernel step reads, as expressions of its table.
pub(crate) struct KernelSizes {
    /// Size arguments 2.. of the kernel ([`crate::plan::KernelStep::sizes`]).
    pub sizes: Vec<SizeId>,
    /// Extent of the parallel axis.
    pub parallel: SizeId,
    /// The length (f32 elements) of each scratch buffer, by argument; `None` for others.
    pub scratch: Vec<Option<SizeId>>,
    /// The ranges `low..high` the step's indices must lie in, if it checks them
    /// ([`crate::plan::IndexCheck::ranges`]).
    pub index_ranges: Option<Vec<(SizeId, SizeId)>>,
}

/// The distinct size expressions of a plan, and which of them each value's shape and each
/// kernel step's arguments are.
pub(crate) struct SizeTable {
    dims: Vec<Dim>,
    /// The shape of each plan value, by value index.
    shapes: Vec<Vec<SizeId>>,
    /// The sizes of each step, by step index; `None` for steps that launch no kernel.
    kernels: Vec<Option<KernelSizes>>,
}

impl SizeTable {
    /// The table of `plan`'s sizes.
    pub fn of(plan: &Plan) -> SizeTable {
        let mut interner = Interner::default();
        let shapes = plan
            .values
            .iter()
            .map(|v| v.ty.shape.iter().map(|d| interner.id(d)).collect())
            .collect();
        let kernels = plan
            .steps
            .iter()
            .map(|step| match step {
                Step::Kernel(k) => Some(interner.kernel(k)),
                _ => None,
            })
            .collect();
        SizeTable {
            dims: interner.dims,
            shapes,
            kernels,
        }
    }

    /// The table of one kernel step's sizes (its step index 0), for a step run alone.
    pub fn of_step(step: &KernelStep) -> SizeTable {
        let mut interner = Interner::default();
        let kernel = interner.kernel(step);
        SizeTable {
            dims: interner.dims,
            shapes: vec![],
            kernels: vec![Some(kernel)],
        }
    }

    /// The sizes of step `step`, if it launches a kernel.
    pub fn kernel(&self, step: usize) -> Option<&KernelSizes> {
        self.kernels.get(step).and_then(Option::as_ref)
    }

    /// The shape of value `v`.
    pub fn shape(&self, v: usize) -> &[SizeId] {
        &self.shapes[v]
    }

    /// The expression `id` stands for (to name it in errors).
    pub fn dim(&self, id: SizeId) -> &Dim {
        &self.dims[id.0 as usize]
    }

    /// Every size evaluated with `bindings`.
    pub fn evaluate(&self, bindings: &Bindings) -> Sizes<'_> {
        Sizes {
            table: self,
            values: self.dims.iter().map(|d| d.eval(bindings)).collect(),
        }
    }
}

/// Gives each distinct expression one id.
#[derive(Default)]
struct Interner {
    ids: HashMap<Dim, SizeId>,
    dims: Vec<Dim>,
}

impl Interner {
    fn id(&mut self, d: &Dim) -> SizeId {
        *self.ids.entry(d.clone()).or_insert_with(|| {
            self.dims.push(d.clone());
            SizeId(self.dims.len() as u32 - 1)
        })
    }

    fn kernel(&mut self, k: &KernelStep) -> KernelSizes {
        KernelSizes {
            sizes: k.sizes.iter().map(|d| self.id(d)).collect(),
            parallel: self.id(&k.parallel),
            scratch: k
                .args
                .iter()
                .map(|a| match a {
                    Binding::Scratch(d) => Some(self.id(d)),
                    _ => None,
                })
                .collect(),
            index_ranges: k.index_check.as_ref().map(|c| {
                c.ranges
                    .iter()
                    .map(|(low, high)| (self.id(low), self.id(high)))
                    .collect()
            }),
        }
    }
}

/// The values of a [`SizeTable`]'s sizes in one run.
pub(crate) struct Sizes<'t> {
    table: &'t SizeTable,
    /// By size id; `None` where a symbol is unbound or the value overflows.
    values: Vec<Option<i64>>,
}

impl<'t> Sizes<'t> {
    /// The table these are the values of.
    pub fn table(&self) -> &'t SizeTable {
        self.table
    }

    /// The value of size `id`, if it is bound.
    pub fn value(&self, id: SizeId) -> Option<i64> {
        self.values[id.0 as usize]
    }

    /// The value of size `id` as a count, if it is bound and not negative.
    pub fn count(&self, id: SizeId) -> Option<usize> {
        self.value(id).and_then(|v| usize::try_from(v).ok())
    }

    /// The concrete shape of value `v`, if its sizes are bound.
    pub fn shape(&self, v: usize) -> Option<Vec<usize>> {
        self.table.shape(v).iter().map(|&d| self.count(d)).collect()
    }

    /// The number of elements of value `v`, if its sizes are bound (and it fits a `usize`).
    pub fn elements(&self, v: usize) -> Option<usize> {
        self.table
            .shape(v)
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(self.count(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_expressions_share_one_size_and_evaluate_with_the_bindings() {
        let value = |name: &str| kiln_ir::Value {
            name: name.into(),
            ty: kiln_ir::ValueType::new(kiln_ir::DType::F32, vec![Dim::sym("seq"), Dim::known(4)]),
        };
        let plan = Plan {
            values: vec![value("a"), value("b")],
            ..Plan::default()
        };
        let table = SizeTable::of(&plan);
        assert_eq!(table.dims.len(), 2, "`seq` and 4, once each");
        assert_eq!(table.shape(0), table.shape(1));
        let bindings: Bindings = [("seq".to_string(), 7)].into_iter().collect();
        let sizes = table.evaluate(&bindings);
        assert_eq!(sizes.shape(1), Some(vec![7, 4]));
        assert_eq!(sizes.elements(0), Some(28));
        assert_eq!(table.evaluate(&Bindings::new()).shape(0), None);
    }
}
