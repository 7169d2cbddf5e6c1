//! Rewrite rules as data. A `.rules` file holds blocks like
//!
//! ```text
//! # GELU, erf form, as exported by torch: x * (0.5 * (1 + erf(x / sqrt 2)))
//! rule gelu-erf (exact):
//!     (Mul ?x (Mul (Add (Erf (Div ?x 1.4142135)) 1) 0.5))
//!     => (Gelu[approximate=none] ?x)
//!     where float ?x
//! ```
//!
//! - `rule NAME (exact|approximate):` opens a rule; its body runs to the next `rule` line.
//! - The left side is an s-expression over ops (`Kind` or `Kind[key=value,...]`: attributes a
//!   pattern does not name must have their default value; `key=*` matches any value), variables `?x`, `_` for an absent input, and
//!   number literals, which match a constant whose every element equals the number (relative
//!   tolerance 1e-6). A multi-pattern rule writes `?a = PATTERN, ?b = PATTERN, ...` on the left
//!   and `?a = TEMPLATE, ...` on the right: each right template is merged with its left binding.
//! - The right side (after `=>`) is a template: ops take every attribute not written from the
//!   IR defaults; an attribute value may be a variable bound on the left to a one-element
//!   constant (`LayerNormalization[epsilon=?eps]`) or a product of such (`scale=?s*?s`).
//!   `(Get1 ?t)` reads output 1 of `?t`. The outermost op of a left side may bind an attribute
//!   to a variable (`(LayerNormalization[epsilon=?eps] ...)`) for the right side to reuse.
//! - `where` lists conditions, comma separated (at least one); see [`condition::Condition`] for
//!   the vocabulary.
//! - Every op is given the number of inputs it takes, and only attributes it has, each once,
//!   with a value of the attribute's type ([`schema`]); expressions nest at most
//!   [`parse::MAX_NESTING`] deep; variables are `?` then a letter or `_`, then letters, digits
//!   or `_`; numbers are finite.
//! - `#` starts a comment. Every parse error names the file, the line and what was expected.
//!
//! Exact rules keep outputs equal up to float reassociation; approximate ones change values
//! and are applied only under an explicit policy.

pub mod apply;
pub mod condition;
pub mod parse;
pub mod schema;

use egg::{Pattern, Rewrite};
use std::path::Path;

pub use parse::{parse_rules, ParseError};

use crate::analysis::KilnAnalysis;
use crate::lang::Node;

/// Whether a rule preserves values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exactness {
    /// Equal outputs up to float reassociation.
    Exact,
    /// Changes values (quantisation, pruning); needs an explicit policy.
    Approximate,
}

/// An attribute of a left part's outermost op bound to a variable: the op kind, the attribute,
/// the variable, and the variables of the op's inputs (to find the matched e-node).
#[derive(Clone, Debug, PartialEq)]
pub struct AttrBinding {
    /// The op kind.
    pub kind: kiln_ir::OpKind,
    /// The attribute's name.
    pub key: String,
    /// The variable it binds.
    pub var: egg::Var,
    /// The op's inputs that are plain variables (`None` for sub-patterns).
    pub children: Vec<Option<egg::Var>>,
}

/// One parsed rule.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Its name (unique within a rule set).
    pub name: String,
    /// Exact or approximate.
    pub exactness: Exactness,
    /// Where it was defined: `file:line`.
    pub origin: String,
    /// The left side: one `(binding, pattern)` per part (binding `None` for a plain rule).
    pub lhs: Vec<(Option<String>, Pattern<Node>)>,
    /// The right side, with the binding each template is merged into.
    pub rhs: Vec<(Option<String>, apply::Template)>,
    /// Conditions on the bound variables.
    pub conditions: Vec<condition::Condition>,
    /// Attributes of each left part's outermost op bound to variables (`epsilon=?eps`).
    pub attr_bindings: Vec<Vec<AttrBinding>>,
    /// Left-side text, for reports.
    pub lhs_text: String,
    /// Right-side text, for reports.
    pub rhs_text: String,
}

impl Rule {
    /// The egg rewrite that applies this rule.
    pub fn rewrite(&self) -> Result<Rewrite<Node, KilnAnalysis>, String> {
        let applier = apply::RuleApplier::new(self);
        if self.lhs.len() == 1 && self.lhs[0].0.is_none() {
            Rewrite::new(self.name.clone(), self.lhs[0].1.clone(), applier)
        } else {
            let parts = self
                .lhs
                .iter()
                .map(|(v, p)| {
                    let var = v
                        .as_ref()
                        .expect("multi-pattern parts are bound")
                        .parse()
                        .map_err(|e| format!("{e:?}"))?;
                    Ok((var, p.ast.clone()))
                })
                .collect::<Result<Vec<_>, String>>()?;
            Rewrite::new(self.name.clone(), egg::MultiPattern::new(parts), applier)
        }
    }
}

/// The built-in rules: the same text files a user's rules come from, embedded in the binary.
pub fn builtin_rules() -> Vec<Rule> {
    BUILTIN
        .iter()
        .flat_map(|(name, text)| {
            parse_rules(name, text).unwrap_or_else(|e| panic!("built-in rules do not parse: {e}"))
        })
        .collect()
}

/// The built-in rule files, embedded at compile time.
const BUILTIN: &[(&str, &str)] = &[
    (
        "passes/rules/cleanup.rules",
        include_str!("../../rules/cleanup.rules"),
    ),
    (
        "passes/rules/activations.rules",
        include_str!("../../rules/activations.rules"),
    ),
    (
        "passes/rules/norms.rules",
        include_str!("../../rules/norms.rules"),
    ),
    (
        "passes/rules/attention.rules",
        include_str!("../../rules/attention.rules"),
    ),
];

/// Reads and parses a rule file.
pub fn load_rule_file(path: &Path) -> Result<Vec<Rule>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    parse_rules(&path.display().to_string(), &text).map_err(|e| e.to_string())
}
