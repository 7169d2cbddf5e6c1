//! Schedules: the tunable parameters of a kernel template (tile sizes, vector width, unroll
//! factors, parallel axis), by name ([`Schedule`]), each template's parameters declared as
//! data ([`Space`], [`Param`]) so that a tuner can enumerate them, and where lowering takes a
//! kernel's schedule from ([`ScheduleSource`]: the templates' heuristics, [`Heuristic`], or,
//! later, a tuning database).
//!
//! ```
//! use kiln_codegen::templates::gemm;
//! use kiln_codegen::Schedule;
//! let space = gemm::space();
//! // Defaults fill what a schedule leaves out; a value outside the declared ones is an error.
//! let resolved = space.resolve(&Schedule::default().with("lanes", 16)).unwrap();
//! assert_eq!(resolved.get("nr", 0), 32);
//! let err = space.resolve(&Schedule::default().with("mr", 17)).unwrap_err();
//! assert!(err.contains("gemm.mr = 17"), "{err}");
//! ```

use std::collections::BTreeMap;

/// Named integer parameters of one template instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    params: BTreeMap<String, i64>,
}

impl Schedule {
    /// The value of `name`, or `default` when the schedule does not set it.
    pub fn get(&self, name: &str, default: i64) -> i64 {
        self.params.get(name).copied().unwrap_or(default)
    }

    /// The value of `name` in a schedule its template's [`Space::resolve`] made, which sets
    /// every declared parameter (templates read their parameters so, and own no defaults).
    ///
    /// # Panics
    /// If `name` is not set: a template read a parameter it does not declare.
    pub fn value(&self, name: &str) -> i64 {
        match self.params.get(name) {
            Some(&v) => v,
            None => panic!("schedule parameter `{name}` is read but not declared"),
        }
    }

    /// This schedule with `name` set to `value`.
    pub fn with(mut self, name: &str, value: i64) -> Schedule {
        self.params.insert(name.to_string(), value);
        self
    }

    /// The parameters that are set, in name order.
    pub fn params(&self) -> impl Iterator<Item = (&str, i64)> {
        self.params.iter().map(|(k, &v)| (k.as_str(), v))
    }
}

/// One tunable parameter of a template.
pub struct Param {
    /// Its name within the template (`mr`); [`Space::resolve`] names it with the template's
    /// (`gemm.mr`).
    pub name: &'static str,
    /// What it controls.
    pub doc: &'static str,
    /// The values it may take, given the parameters declared before it (already resolved).
    pub values: fn(&Schedule) -> Vec<i64>,
    /// Its default, given the parameters declared before it (already resolved).
    pub default: fn(&Schedule) -> i64,
}

/// The parameters a template declares, in resolution order.
pub struct Space {
    /// The template's name (`gemm`).
    pub template: &'static str,
    /// The template's version: bumped whenever its code for a given schedule changes, so
    /// that tuning records of an older version are not reused.
    pub version: u32,
    /// Its parameters.
    pub params: Vec<Param>,
}

impl Space {
    /// `requested` with every declared parameter set: its value where it sets one (checked
    /// against the declared values), else the default. A name the template does not declare,
    /// or a value it does not allow, is an error naming the parameter.
    pub fn resolve(&self, requested: &Schedule) -> Result<Schedule, String> {
        if let Some((name, _)) = requested
            .params()
            .find(|(n, _)| !self.params.iter().any(|p| p.name == *n))
        {
            let known: Vec<&str> = self.params.iter().map(|p| p.name).collect();
            return Err(format!(
                "schedule: `{}.{name}` is not a parameter of {} (it has {})",
                self.template,
                self.template,
                known.join(", ")
            ));
        }
        let mut resolved = Schedule::default();
        for p in &self.params {
            let allowed = (p.values)(&resolved);
            let value = match requested.params.get(p.name) {
                Some(&v) => v,
                None => (p.default)(&resolved),
            };
            if !allowed.contains(&value) {
                return Err(format!(
                    "schedule: {}.{} = {value} is not one of {}",
                    self.template,
                    p.name,
                    list(&allowed)
                ));
            }
            resolved = resolved.with(p.name, value);
        }
        Ok(resolved)
    }

    /// The defaults of every parameter, given the backend's widest vector.
    pub fn defaults(&self, lanes: u8) -> Result<Schedule, String> {
        self.resolve(&Schedule::default().with("lanes", i64::from(lanes)))
    }
}

/// Values as a short list (`4, 8, ..., 64`).
fn list(values: &[i64]) -> String {
    let shown: Vec<String> = values.iter().map(i64::to_string).collect();
    match shown.len() {
        0..=8 => shown.join(", "),
        n => format!("{}, ..., {}", shown[..3].join(", "), shown[n - 1]),
    }
}

/// What lowering asks a [`ScheduleSource`] for: the template and the shapes of one kernel.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRequest<'a> {
    /// The template (`gemm`).
    pub template: &'a str,
    /// The kernel's shapes, as `kiln explain` prints them (its inputs', then outputs').
    pub shapes: &'a str,
    /// The backend's widest vector, in f32 lanes.
    pub lanes: u8,
}

/// Where lowering takes each kernel's schedule from.
pub trait ScheduleSource: Sync {
    /// The schedule for `request` and a name for where it came from (a tuning database, a
    /// file), or None for the template's defaults. Parameters it leaves out take their
    /// defaults; `lanes` is the backend's.
    fn schedule(&self, request: &ScheduleRequest) -> Option<(Schedule, String)>;
}

/// The templates' own defaults for every kernel.
#[derive(Clone, Copy, Debug, Default)]
pub struct Heuristic;

impl ScheduleSource for Heuristic {
    fn schedule(&self, _: &ScheduleRequest) -> Option<(Schedule, String)> {
        None
    }
}

/// The `lanes` parameter of a template that also runs scalar: the widest vector (lowering
/// sets it to the backend's).
pub(crate) fn lanes_or_scalar() -> Param {
    Param {
        name: "lanes",
        doc: "the widest vector in f32 lanes (the backend's; 1 = scalar)",
        values: |_| vec![1, 4, 8, 16],
        default: |_| 4,
    }
}

/// `lo..=hi`, as declared values.
pub(crate) fn range(lo: i64, hi: i64) -> Vec<i64> {
    (lo..=hi).collect()
}
