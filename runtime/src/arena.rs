//! Where a run's intermediates live. Which values kernels write into the arena, and the
//! steps each is alive for, are fixed by the plan and found once, when the program is made.
//! Their sizes, and so their offsets, depend on the run's bindings: the offsets are planned
//! ([`crate::memory`]) when the sizes differ from the last run's, and reused otherwise (a
//! decode step's intermediates keep their sizes step after step, whatever the cache holds).

use crate::memory::{plan as plan_arena, ArenaPlan, Lifetime};
use crate::plan::{Binding, Plan, Step, ValueIndex};
use crate::sizes::Sizes;
use kiln_ir::interp::RunError;

/// The values of a plan that own an arena buffer, and the steps each is alive for.
pub(crate) struct ArenaValues {
    /// Each buffer: the value that owns it, the step that writes it first and the last that
    /// reads it (or past the last step, for outputs).
    buffers: Vec<(ValueIndex, usize, usize)>,
    /// For each plan value, the buffer it owns, if any.
    buffer_of: Vec<Option<usize>>,
}

impl ArenaValues {
    /// The arena buffers of `plan`: one per value a kernel writes; views and in-place updates
    /// share their input's.
    pub fn of(plan: &Plan) -> ArenaValues {
        // Views share their input's buffer: each value resolves to the value that owns it.
        let mut owner: Vec<ValueIndex> = (0..plan.values.len()).collect();
        let mut buffers: Vec<(ValueIndex, usize, usize)> = vec![];
        let mut buffer_of: Vec<Option<usize>> = vec![None; plan.values.len()];
        let touch = |v: ValueIndex, step: usize, buffers: &mut Vec<_>, of: &[Option<usize>]| {
            if let Some(b) = of[v] {
                let (_, _, last): &mut (ValueIndex, usize, usize) = &mut buffers[b];
                *last = (*last).max(step);
            }
        };
        for (s, step) in plan.steps.iter().enumerate() {
            match step {
                Step::View { input, output, .. } => {
                    owner[*output] = owner[*input];
                    touch(owner[*input], s, &mut buffers, &buffer_of);
                }
                Step::Interp(i) => {
                    for v in i.inputs.iter().flatten() {
                        touch(owner[*v], s, &mut buffers, &buffer_of);
                    }
                }
                Step::Kernel(k) => {
                    // Indices checked before the call are read then, bound or not.
                    if let Some(check) = &k.index_check {
                        touch(owner[check.value], s, &mut buffers, &buffer_of);
                    }
                    for arg in &k.args {
                        match arg {
                            Binding::Read(v) => touch(owner[*v], s, &mut buffers, &buffer_of),
                            // The updated buffer is the input's, under the output's name.
                            Binding::Update { input, output } => {
                                owner[*output] = owner[*input];
                                touch(owner[*input], s, &mut buffers, &buffer_of);
                            }
                            _ => {}
                        }
                    }
                    for arg in &k.args {
                        if let Binding::Write(v) = arg {
                            buffer_of[*v] = Some(buffers.len());
                            buffers.push((*v, s, s));
                        }
                    }
                }
            }
        }
        let end = plan.steps.len();
        for (_, v) in &plan.outputs {
            touch(owner[*v], end, &mut buffers, &buffer_of);
        }
        ArenaValues { buffers, buffer_of }
    }
}

/// The memory of a program's intermediates, reused across its runs (which take turns on it),
/// and the offsets planned for the last run's sizes.
#[derive(Default)]
pub(crate) struct Arena {
    memory: Vec<f32>,
    /// The bytes of each buffer in the last run, and where they were placed.
    last: Option<(Vec<usize>, ArenaPlan)>,
}

impl Arena {
    /// Places the buffers of `values` for a run of these `sizes` (reusing the last run's
    /// offsets when every size is the same) and grows the memory to hold them; returns the
    /// arena's peak and total bytes. An error names a value too large for this machine.
    pub fn prepare(
        &mut self,
        values: &ArenaValues,
        plan: &Plan,
        sizes: &Sizes,
    ) -> Result<(usize, usize), RunError> {
        let mut bytes = Vec::with_capacity(values.buffers.len());
        for &(v, _, _) in &values.buffers {
            let element = plan.values[v].ty.dtype.size();
            let b = sizes.elements(v).and_then(|n| n.checked_mul(element));
            // The value is named only when it does not fit (this runs for every buffer of
            // every run).
            if b.is_none() || kiln_ir::host::check_fits(b, "").is_err() {
                let name = &plan.values[v].name;
                let shape = sizes.shape(v).ok_or_else(|| {
                    RunError(format!(
                        "value `{name}`: its shape is not determined by the inputs"
                    ))
                })?;
                let what = format!("value `{name}` {shape:?}");
                kiln_ir::host::check_fits(b, &what).map_err(RunError)?;
            }
            bytes.push(b.unwrap_or_default());
        }
        let unchanged = matches!(&self.last, Some((last, _)) if *last == bytes);
        if !unchanged {
            let lifetimes: Vec<Lifetime> = values
                .buffers
                .iter()
                .zip(&bytes)
                .map(|(&(_, first, last), &bytes)| Lifetime { bytes, first, last })
                .collect();
            self.last = Some((bytes, plan_arena(&lifetimes)));
        }
        let placed = &self.last.as_ref().expect("planned above").1;
        let (peak, total) = (placed.peak, placed.total);
        if self.memory.len() < peak / 4 + 16 {
            let what = "the run's intermediates (the arena)";
            kiln_ir::host::check_fits(Some(peak), what).map_err(RunError)?;
            // Written, not just reserved (`vec![0.0; n]` maps untouched pages), so that the
            // memory checks of later allocations see the arena as taken.
            self.memory.clear();
            self.memory.shrink_to_fit();
            self.memory.resize(peak / 4 + 16, 0.0);
        }
        Ok((peak, total))
    }

    /// The start of the memory, 64-byte aligned (valid for the peak of the last
    /// [`Arena::prepare`]).
    pub fn base(&mut self) -> *mut u8 {
        let shift = self.memory.as_ptr().align_offset(64);
        // SAFETY: `shift` < 16 elements and `prepare` left 16 spare elements.
        unsafe { self.memory.as_mut_ptr().add(shift) }.cast::<u8>()
    }

    /// The byte offset of value `v`'s buffer in the last prepared run, if it owns one.
    pub fn offset(&self, values: &ArenaValues, v: ValueIndex) -> Option<usize> {
        let b = values.buffer_of.get(v).copied().flatten()?;
        Some(self.last.as_ref()?.1.offsets[b])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::KernelStep;
    use crate::sizes::SizeTable;
    use kiln_ir::interp::Bindings;
    use kiln_ir::{DType, Dim, Value, ValueType};

    /// `x -> a -> b -> view c -> d`, the outputs `d` and `c`, all of `n` floats.
    fn chain() -> Plan {
        let value = |name: &str| Value {
            name: name.into(),
            ty: ValueType::new(DType::F32, vec![Dim::sym("n")]),
        };
        let kernel = |args| {
            Step::Kernel(KernelStep {
                kernel: 0,
                args,
                sizes: vec![],
                parallel: Dim::known(1),
                index_check: None,
                node: "k".into(),
            })
        };
        Plan {
            values: ["x", "a", "b", "c", "d"].map(value).to_vec(),
            inputs: vec![0],
            outputs: vec![("d".into(), 4), ("c".into(), 3)],
            steps: vec![
                kernel(vec![Binding::Read(0), Binding::Write(1)]),
                kernel(vec![Binding::Read(1), Binding::Write(2)]),
                Step::View {
                    input: 2,
                    output: 3,
                    node: "v".into(),
                },
                kernel(vec![Binding::Read(3), Binding::Write(4)]),
            ],
            ..Plan::default()
        }
    }

    #[test]
    fn views_extend_their_owners_life_and_offsets_follow_the_sizes() {
        let plan = chain();
        let values = ArenaValues::of(&plan);
        // `b` lives until the end through its view `c`, an output; `a` dies at step 1.
        assert_eq!(values.buffers, vec![(1, 0, 1), (2, 1, 4), (4, 3, 4)]);
        let table = SizeTable::of(&plan);
        let mut arena = Arena::default();
        let run = |n: i64, arena: &mut Arena| {
            let bindings: Bindings = [("n".to_string(), n)].into_iter().collect();
            let placed = arena
                .prepare(&values, &plan, &table.evaluate(&bindings))
                .unwrap();
            let offsets: Vec<usize> = [1, 2, 4].map(|v| arena.offset(&values, v).unwrap()).into();
            (placed, offsets)
        };
        // `a` and `d` are never alive together: they share memory.
        let ((peak, total), offsets) = run(100, &mut arena);
        assert_eq!((peak, total), (2 * 448, 3 * 448));
        assert_eq!(offsets[0], offsets[2]);
        assert_ne!(offsets[0], offsets[1]);
        assert_eq!(run(100, &mut arena), ((peak, total), offsets));
        // Other sizes are placed anew.
        assert_eq!(run(1000, &mut arena).0, (2 * 4032, 3 * 4032));
        assert!(arena.offset(&values, 3).is_none(), "a view owns no buffer");
    }
}
