//! Fuzzing of the rule-file reader and the rule checker.
//!
//! A fixed-seed run (the seed is [`SEED`]; `KILN_FUZZ_CASES=N` runs N variants instead of
//! [`CASES`], `KILN_FUZZ_MODEL_RUNS=N` optimises up to N models instead of [`MODEL_RUNS`])
//! mutates the built-in rule files and small generated ones, by bytes (truncation, deleted,
//! duplicated and inserted ranges) and by tokens (deleted, duplicated and swapped tokens; op
//! names, attribute names and values, variables and numbers replaced; expressions wrapped in an
//! op or unwrapped; the two sides of a rule swapped; the exactness tag flipped; conditions
//! replaced or dropped). For every variant:
//!
//! - `parse_rules` returns `Ok`, or an error that is one line and starts with `FILE:LINE: ` for a
//!   line of the file; a panic fails the test, naming the variant.
//! - Every rule of an accepted variant that differs from the rules of the file it came from is
//!   run through the checker ([`check_rule`]), which must not panic.
//! - For a bounded subset of accepted variants, a fixture model (`tests/models/{bert,gpt2,llama}`)
//!   is optimised with the built-in rules, the variant's rules in place of its file's, and run on
//!   the interpreter: if the output is more than 1e-4 from the fixture's reference output, the
//!   checker must have reported one of the variant's changed rules as wrong or unchecked;
//!   otherwise it is a silent wrong answer and the test fails. Variants whose changed rules all
//!   passed the checker are optimised first, as they are the ones that could go wrong silently.
//!
//! Counts are printed with `cargo test --test fuzz_rules -- --nocapture`.

mod common;

use kiln_ir::{interp, npy::read_npy, Graph, OpKind, Tensor};
use kiln_passes::check::{check_rule, CheckOutcome, XorShift};
use kiln_passes::optimize::{optimize, Limits};
use kiln_passes::rules::{builtin_rules, parse_rules, Exactness, Rule};
use std::collections::{BTreeSet, HashMap};

/// Variants per run (`KILN_FUZZ_CASES` overrides).
const CASES: usize = 4_000;
/// Model optimisations per run (`KILN_FUZZ_MODEL_RUNS` overrides).
const MODEL_RUNS: usize = 400;
/// The seed of the mutations and of the checker.
const SEED: u64 = 0x5eed_f022;
/// Random trials per changed rule.
const TRIALS: usize = 5;

/// The built-in rule files: the mutation corpus.
const BUILTIN: &[(&str, &str)] = &[
    (
        "cleanup.rules",
        include_str!("../passes/rules/cleanup.rules"),
    ),
    (
        "activations.rules",
        include_str!("../passes/rules/activations.rules"),
    ),
    ("norms.rules", include_str!("../passes/rules/norms.rules")),
    (
        "attention.rules",
        include_str!("../passes/rules/attention.rules"),
    ),
];

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---------------------------------------------------------------------------------------------
// Generated rule files and mutations.

const UNARY: &[&str] = &[
    "Neg", "Abs", "Exp", "Tanh", "Sigmoid", "Relu", "Identity", "Erf",
];
const BINARY: &[&str] = &["Add", "Sub", "Mul", "Div", "Max", "Min", "MatMul"];
const VARS: &[&str] = &["?x", "?y", "?a", "?b", "?w", "?z"];
const NUMBERS: &[&str] = &[
    "0",
    "1",
    "2",
    "0.5",
    "-1",
    "3",
    "1e-5",
    "1.4142135",
    "-0",
    "7.0",
];
const ATTR_NAMES: &[&str] = &[
    "axis",
    "axes",
    "perm",
    "epsilon",
    "to",
    "keepdims",
    "approximate",
    "activation",
    "scale",
    "allowzero",
    "alpha",
    "foo",
    "",
];
const ATTR_VALUES: &[&str] = &[
    "0",
    "1",
    "-1",
    "2",
    "[0,2,1,3]",
    "[0,1,3,2]",
    "[1,0]",
    "[-1]",
    "*",
    "abc",
    "1.5",
    "tanh",
    "none",
    "gelu",
    "f16",
    "f32",
    "?eps",
    "?s*?s",
    "",
    "[",
];
const CONDITIONS: &[&str] = &[
    "float ?x",
    "const ?x",
    "scalar ?x",
    "rank ?x = 1",
    "rank ?x = 4",
    "dtype ?x = f16",
    "same-shape ?a ?b",
    "dim ?x -1 = 2",
    "const ?y = 0",
    "distinct ?a ?b",
    "half ?x ?y",
    "last-axis ?a ?x",
    "wobbly ?x",
    "",
];
const INSERTS: &[&str] = &[
    "(",
    ")",
    ",",
    "=>",
    "where",
    "?x",
    "_",
    "[",
    "]",
    "=",
    "*",
    "#",
    "\n",
    " ",
    "?",
    "Get1",
    "\nrule extra (exact):\n",
    "(approximate)",
    "1e400",
    "nan",
    "\t",
    "\r",
];

fn pick<'a>(rng: &mut XorShift, items: &[&'a str]) -> &'a str {
    items[rng.range(0, items.len() - 1)]
}

/// A random expression over `vars` of nesting depth at most `depth`.
fn gen_expr(rng: &mut XorShift, vars: &[&str], depth: usize) -> String {
    match if depth == 0 { 0 } else { rng.range(0, 4) } {
        0 | 1 => {
            if rng.range(0, 5) == 0 {
                pick(rng, NUMBERS).to_string()
            } else {
                vars[rng.range(0, vars.len() - 1)].to_string()
            }
        }
        2 => format!("({} {})", pick(rng, UNARY), gen_expr(rng, vars, depth - 1)),
        _ => format!(
            "({} {} {})",
            pick(rng, BINARY),
            gen_expr(rng, vars, depth - 1),
            gen_expr(rng, vars, depth - 1)
        ),
    }
}

/// A small generated rule file: a few random rules, most of them wrong.
fn gen_file(rng: &mut XorShift) -> String {
    let mut text = String::from("# generated\n");
    for i in 0..rng.range(1, 3) {
        let vars = &VARS[..rng.range(1, 3)];
        let lhs = loop {
            let e = gen_expr(rng, vars, 3);
            if e.starts_with('(') {
                break e;
            }
        };
        let used: Vec<&str> = vars.iter().copied().filter(|v| lhs.contains(v)).collect();
        let rhs = if used.is_empty() || rng.range(0, 2) == 0 {
            gen_expr(rng, if used.is_empty() { vars } else { &used }, 2)
        } else {
            used[rng.range(0, used.len() - 1)].to_string()
        };
        let tag = if rng.range(0, 5) == 0 {
            "approximate"
        } else {
            "exact"
        };
        text.push_str(&format!("rule gen-{i} ({tag}):\n    {lhs}\n    => {rhs}\n"));
        if rng.range(0, 3) == 0 {
            text.push_str(&format!("    where {}\n", pick(rng, &CONDITIONS[..6])));
        }
    }
    text
}

/// The text split into pieces: whitespace runs, `(`, `)`, `,`, and atoms.
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = vec![];
    for c in text.chars() {
        let class = |c: char| {
            if c.is_whitespace() {
                0
            } else if "(),".contains(c) {
                1
            } else {
                2
            }
        };
        match out.last_mut() {
            Some(last) if class(c) != 1 && last.chars().next().map(class) == Some(class(c)) => {
                last.push(c)
            }
            _ => out.push(c.to_string()),
        }
    }
    out
}

/// Indices of the pieces that are not whitespace (optionally only those `keep` accepts).
fn tokens(ps: &[String], keep: impl Fn(&str) -> bool) -> Vec<usize> {
    (0..ps.len())
        .filter(|&i| !ps[i].trim().is_empty() && keep(&ps[i]))
        .collect()
}

fn is_op_head(p: &str) -> bool {
    let kind = &p[..p.find('[').unwrap_or(p.len())];
    kind.parse::<OpKind>().is_ok()
}

fn char_floor(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One random mutation of `text`, and its name.
fn mutate(text: &str, rng: &mut XorShift) -> (String, &'static str) {
    let mut ps = pieces(text);
    let n = text.len();
    let any = |rng: &mut XorShift, idx: &[usize]| -> Option<usize> {
        (!idx.is_empty()).then(|| idx[rng.range(0, idx.len() - 1)])
    };
    let kind = rng.range(0, 16);
    let name = match kind {
        0 => {
            let at = char_floor(text, rng.range(0, n));
            return (text[..at].to_string(), "truncate");
        }
        1 | 2 => {
            let a = char_floor(text, rng.range(0, n));
            let b = char_floor(text, (a + rng.range(1, 12)).min(n));
            let out = if kind == 1 {
                format!("{}{}", &text[..a], &text[b..])
            } else {
                format!("{}{}{}", &text[..b], &text[a..b], &text[b..])
            };
            return (
                out,
                if kind == 1 {
                    "delete bytes"
                } else {
                    "duplicate bytes"
                },
            );
        }
        3 => {
            let at = char_floor(text, rng.range(0, n));
            let ins = pick(rng, INSERTS);
            return (format!("{}{ins}{}", &text[..at], &text[at..]), "insert");
        }
        4..=6 => {
            let idx = tokens(&ps, |_| true);
            let (Some(i), Some(j)) = (any(rng, &idx), any(rng, &idx)) else {
                return (text.to_string(), "none");
            };
            match kind {
                4 => ps[i].clear(),
                5 => ps[i] = format!("{} {}", ps[i], ps[i]),
                _ => ps.swap(i, j),
            }
            ["delete token", "duplicate token", "swap tokens"][kind - 4]
        }
        7 => {
            let Some(i) = any(rng, &tokens(&ps, is_op_head)) else {
                return (text.to_string(), "none");
            };
            let p = &ps[i];
            let rest = &p[p.find('[').unwrap_or(p.len())..];
            let new = if rng.range(0, 3) == 0 {
                "Frob"
            } else {
                OpKind::ALL[rng.range(0, OpKind::ALL.len() - 1)].name()
            };
            ps[i] = format!("{new}{rest}");
            "op name"
        }
        8 | 9 => {
            let Some(i) = any(rng, &tokens(&ps, |p| p.contains('['))) else {
                return (text.to_string(), "none");
            };
            let p = ps[i].clone();
            let open = p.find('[').expect("has [");
            let inner = &p[open + 1..p.len().saturating_sub(1).max(open + 1)];
            let mut items: Vec<String> = inner.split(',').map(str::to_string).collect();
            let k = rng.range(0, items.len() - 1);
            let (key, value) = items[k]
                .split_once('=')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .unwrap_or_default();
            items[k] = if kind == 8 {
                format!("{}={value}", pick(rng, ATTR_NAMES))
            } else if rng.range(0, 4) == 0 {
                format!(
                    "{key}={value},{}={}",
                    pick(rng, ATTR_NAMES),
                    pick(rng, ATTR_VALUES)
                )
            } else {
                format!("{key}={}", pick(rng, ATTR_VALUES))
            };
            ps[i] = format!("{}[{}]", &p[..open], items.join(","));
            if kind == 8 {
                "attribute name"
            } else {
                "attribute value"
            }
        }
        10 => {
            let Some(i) = any(rng, &tokens(&ps, |p| p.starts_with('?'))) else {
                return (text.to_string(), "none");
            };
            ps[i] = pick(rng, VARS).to_string();
            "variable"
        }
        11 => {
            let numeric = |p: &str| p.parse::<f64>().is_ok();
            let Some(i) = any(rng, &tokens(&ps, numeric)) else {
                return (text.to_string(), "none");
            };
            ps[i] = pick(rng, NUMBERS).to_string();
            "number"
        }
        12 => {
            // Wrap an expression in an op, or take an op's first argument in its place.
            let Some(open) = any(rng, &tokens(&ps, |p| p == "(")) else {
                return (text.to_string(), "none");
            };
            let mut depth = 0;
            let mut close = None;
            for (j, p) in ps.iter().enumerate().skip(open) {
                match p.as_str() {
                    "(" => depth += 1,
                    ")" => {
                        depth -= 1;
                        if depth == 0 {
                            close = Some(j);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let Some(close) = close else {
                return (text.to_string(), "none");
            };
            if rng.range(0, 1) == 0 {
                ps[open] = format!("({} (", pick(rng, UNARY));
                ps[close] = "))".into();
                "wrap"
            } else {
                ps[open + 1].clear();
                ps[open].clear();
                ps[close].clear();
                "unwrap"
            }
        }
        13 => {
            // Swap the two sides of one rule.
            let arrows = tokens(&ps, |p| p == "=>");
            let Some(a) = any(rng, &arrows) else {
                return (text.to_string(), "none");
            };
            let start = (0..a)
                .rev()
                .find(|&j| ps[j].contains(':'))
                .map_or(0, |j| j + 1);
            let end = (a + 1..ps.len())
                .find(|&j| ps[j] == "where" || ps[j] == "rule" || ps[j].ends_with(':'))
                .unwrap_or(ps.len());
            let end = if ps.get(end).is_some_and(|p| p == "rule") {
                // Stop before the whitespace that precedes the next header.
                (a + 1..end)
                    .rev()
                    .find(|&j| !ps[j].trim().is_empty())
                    .map_or(end, |j| j + 1)
            } else {
                end
            };
            let lhs: String = ps[start..a].concat();
            let rhs: String = ps[a + 1..end].concat();
            for p in &mut ps[start..end] {
                p.clear();
            }
            ps[start] = format!(" {} => {} ", rhs.trim(), lhs.trim());
            "swap sides"
        }
        14 => {
            let out = if text.contains("(exact)") && rng.range(0, 1) == 0 {
                text.replacen("(exact)", "(approximate)", 1)
            } else {
                text.replacen("(approximate)", "(exact)", 1).replacen(
                    "(exact)",
                    "(exatc)",
                    rng.range(0, 1),
                )
            };
            return (out, "exactness");
        }
        _ => {
            let wheres = tokens(&ps, |p| p == "where");
            let Some(w) = any(rng, &wheres) else {
                return (text.to_string(), "none");
            };
            if rng.range(0, 2) == 0 {
                ps[w].clear();
                "drop where"
            } else {
                ps[w] = format!("where {},", pick(rng, CONDITIONS));
                "condition"
            }
        }
    };
    (ps.concat(), name)
}

// ---------------------------------------------------------------------------------------------
// Models.

/// A fixture model with its `b1_s16` inputs and reference output.
struct Model {
    name: &'static str,
    graph: Graph,
    feeds: HashMap<String, Tensor>,
    expected: Tensor,
}

fn load(name: &'static str) -> Model {
    let dir = common::model_dir(name);
    let io = dir.join("io");
    let graph = kiln_frontends::onnx::load_model(&dir.join("model.onnx")).unwrap();
    let feeds = ["input_ids", "attention_mask"]
        .into_iter()
        .map(|n| {
            let t = read_npy(&io.join(format!("b1_s16.{n}.npy"))).unwrap();
            (n.to_string(), t)
        })
        .collect();
    let expected = read_npy(&io.join("b1_s16.output.npy")).unwrap();
    Model {
        name,
        graph,
        feeds,
        expected,
    }
}

/// Whether `rules` change the model's answer (an optimiser or interpreter error counts as
/// a change of answer, since `kiln run` would not give the reference output).
fn answer_changes(model: &Model, rules: &[Rule]) -> Result<bool, String> {
    let run = || -> Result<f64, String> {
        let (optimized, _) = optimize(&model.graph, rules, &Limits::default())?;
        let out = interp::run(&optimized, &model.feeds).map_err(|e| e.to_string())?;
        common::max_abs_diff(&out[0].1, &model.expected)
    };
    match common::panics::catching(run) {
        Ok(Ok(err)) => Ok(err.is_nan() || err > 1e-4),
        Ok(Err(_)) => Ok(true),
        Err(panic) => Err(panic),
    }
}

/// A rule's identity, to tell the rules a mutation changed from those it kept.
fn key(r: &Rule) -> String {
    format!(
        "{} {:?} {} => {} {:?} {:?}",
        r.name, r.exactness, r.lhs_text, r.rhs_text, r.conditions, r.attr_bindings
    )
}

/// An accepted variant waiting for a model run: whether every changed rule passed the checker,
/// the case, the text, its rules, and the built-in file it came from.
type Candidate = (bool, usize, String, Vec<Rule>, Option<usize>);

#[derive(Default, Debug)]
struct Counts {
    cases: usize,
    parse_errors: usize,
    accepted: usize,
    accepted_changed: usize,
    rules_checked: usize,
    checked_passed: usize,
    checked_wrong: usize,
    unchecked: usize,
    model_runs: usize,
    answer_changed: usize,
    answer_changed_and_caught: usize,
}

#[test]
fn mutated_rule_files_parse_or_fail_cleanly_and_wrong_answers_are_caught() {
    let cases = env_count("KILN_FUZZ_CASES", CASES);
    let model_budget = env_count("KILN_FUZZ_MODEL_RUNS", MODEL_RUNS);
    let mut rng = XorShift::new(SEED);
    let builtin = builtin_rules();
    let base_keys: BTreeSet<String> = builtin.iter().map(key).collect();
    let models = [load("bert"), load("gpt2"), load("llama")];
    let mut counts = Counts::default();
    let mut by_mutation: HashMap<&str, usize> = HashMap::new();
    let mut candidates: Vec<Candidate> = vec![];
    for case in 0..cases {
        counts.cases += 1;
        let (base_file, base) = if rng.range(0, 3) == 0 {
            (None, gen_file(&mut rng))
        } else {
            let i = rng.range(0, BUILTIN.len() - 1);
            (Some(i), BUILTIN[i].1.to_string())
        };
        let mut text = base.clone();
        for _ in 0..rng.range(1, 2) {
            let (t, name) = mutate(&text, &mut rng);
            *by_mutation.entry(name).or_default() += 1;
            text = t;
        }
        let file = format!("fuzz-{case}.rules");
        let parsed = common::panics::catching(|| parse_rules(&file, &text))
            .unwrap_or_else(|p| panic!("case {case}: parse_rules panicked at {p}\n{text}"));
        let rules = match parsed {
            Err(e) => {
                counts.parse_errors += 1;
                let msg = e.to_string();
                let lines = text.lines().count().max(1);
                assert!(
                    !msg.contains(['\n', '\r']) && msg.starts_with(&format!("{file}:{}: ", e.line)),
                    "case {case}: error is not one line naming the file and line: {msg:?}\n{text}"
                );
                assert!(
                    (1..=lines).contains(&e.line) && !e.message.is_empty(),
                    "case {case}: line {} of a {lines}-line file: {msg}\n{text}",
                    e.line
                );
                continue;
            }
            Ok(rules) => rules,
        };
        counts.accepted += 1;
        let changed: Vec<&Rule> = rules
            .iter()
            .filter(|r| !base_keys.contains(&key(r)))
            .collect();
        if changed.is_empty() {
            continue;
        }
        counts.accepted_changed += 1;
        let mut all_passed = true;
        for r in &changed {
            let outcome =
                common::panics::catching(|| check_rule(r, SEED, TRIALS)).unwrap_or_else(|p| {
                    panic!(
                        "case {case}: the checker panicked on `{}` at {p}\n{text}",
                        r.name
                    )
                });
            counts.rules_checked += 1;
            match outcome {
                Ok(CheckOutcome::Passed { .. }) => counts.checked_passed += 1,
                Ok(CheckOutcome::Failed { .. }) => {
                    counts.checked_wrong += 1;
                    all_passed = false;
                }
                Ok(CheckOutcome::Unchecked { .. }) | Err(_) => {
                    counts.unchecked += 1;
                    all_passed = false;
                }
            }
        }
        let approximate = changed
            .iter()
            .any(|r| r.exactness == Exactness::Approximate);
        candidates.push((all_passed && !approximate, case, text, rules, base_file));
    }
    // Silent wrong answers can only come from variants whose changed rules all passed: those
    // first, then others to see that their wrong answers are caught.
    candidates.sort_by_key(|(passed, case, ..)| (!passed, *case));
    for (passed, case, text, rules, base_file) in candidates {
        if counts.model_runs >= model_budget {
            break;
        }
        let origin = base_file.map(|i| format!("passes/rules/{}", BUILTIN[i].0));
        let mut all: Vec<Rule> = builtin
            .iter()
            .filter(|r| Some(r.origin.split(':').next().unwrap_or("")) != origin.as_deref())
            .cloned()
            .collect();
        if rules.iter().any(|r| all.iter().any(|b| b.name == r.name)) {
            // `kiln optimize` refuses a rule defined twice.
            continue;
        }
        all.extend(rules);
        let model = &models[case % models.len()];
        counts.model_runs += 1;
        let changed = answer_changes(model, &all).unwrap_or_else(|p| {
            panic!(
                "case {case}: optimising {} panicked at {p}\n{text}",
                model.name
            )
        });
        if changed {
            counts.answer_changed += 1;
            assert!(
                !passed,
                "case {case}: silent wrong answer on {}: every changed rule passed the checker\n{text}",
                model.name
            );
            counts.answer_changed_and_caught += 1;
        }
    }
    let mut mutations: Vec<_> = by_mutation.into_iter().collect();
    mutations.sort();
    println!("mutations: {mutations:?}");
    println!(
        "cases {}, parse errors {}, accepted {} ({} with changed rules), changed rules checked {} \
         (passed {}, wrong {}, unchecked {}), model runs {}, answer changed {}, answer changed and caught {}",
        counts.cases,
        counts.parse_errors,
        counts.accepted,
        counts.accepted_changed,
        counts.rules_checked,
        counts.checked_passed,
        counts.checked_wrong,
        counts.unchecked,
        counts.model_runs,
        counts.answer_changed,
        counts.answer_changed_and_caught
    );
    assert!(counts.parse_errors > 0 && counts.accepted_changed > 0);
}
