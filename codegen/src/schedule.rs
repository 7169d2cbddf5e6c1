//! [`Schedule`]: the tunable parameters of a kernel template (tile sizes, vector width, unroll
//! factors, loop order, parallel axis), by name. Each template documents the names it reads
//! and their defaults; the autotuner searches over them.

use std::collections::BTreeMap;

/// Named integer parameters of one template instance; a missing name takes the template's
/// default.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Schedule {
    params: BTreeMap<String, i64>,
}

impl Schedule {
    /// The value of `name`, or `default` when the schedule does not set it.
    pub fn get(&self, name: &str, default: i64) -> i64 {
        self.params.get(name).copied().unwrap_or(default)
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
