//! The rules a model is optimised with: the built-in ones (unless left out) and the user's,
//! each name defined once. The one place `kiln optimize|explain --rules` and the Python
//! package's `rules=` assemble them.

use kiln_passes::rules::{builtin_rules, Rule};

/// The built-in rules (when `builtin`) followed by `extra`; an error naming the rule and where
/// it was defined when two rules share a name.
///
/// ```
/// let rules = kiln::rule_set::rule_set(true, vec![]).unwrap();
/// assert_eq!(rules.len(), kiln_passes::rules::builtin_rules().len());
/// let twice = [rules[0].clone()];
/// assert!(kiln::rule_set::rule_set(true, twice.to_vec()).unwrap_err().contains("already defined"));
/// ```
pub fn rule_set(builtin: bool, extra: Vec<Rule>) -> Result<Vec<Rule>, String> {
    let mut rules = if builtin { builtin_rules() } else { vec![] };
    rules.extend(extra);
    let mut names = std::collections::BTreeSet::new();
    for r in &rules {
        if !names.insert(r.name.as_str()) {
            return Err(format!(
                "{}: rule `{}` is already defined",
                r.origin, r.name
            ));
        }
    }
    Ok(rules)
}
