//! The `.rules` parser (the format is described in the parent module).

use super::apply::Template;
use super::condition::Condition;
use super::schema::{attr_type, check_arity};
use super::{AttrBinding, Exactness, Rule};
use crate::lang::{parse_attr_token, split_top_level};
use egg::{Pattern, Var};
use kiln_ir::{Attr, Attrs, OpKind};
use std::collections::BTreeSet;
use std::fmt;

/// A parse error: file, line and what was expected.
#[derive(Clone, Debug, PartialEq)]
pub struct ParseError {
    /// The rule file.
    pub file: String,
    /// 1-based line number.
    pub line: usize,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Debug)]
struct Token {
    text: String,
    line: usize,
}

#[derive(Clone, Debug)]
enum Sexp {
    Atom(Token),
    List(Token, Vec<Sexp>),
}

impl Sexp {
    fn line(&self) -> usize {
        match self {
            Sexp::Atom(t) | Sexp::List(t, _) => t.line,
        }
    }
}

/// Parses every rule of a file; `file` is used in error messages.
pub fn parse_rules(file: &str, text: &str) -> Result<Vec<Rule>, ParseError> {
    // Quoted input may hold control characters (a lone `\r`): escaped, so errors stay one line.
    let err = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message: message
            .chars()
            .flat_map(|c| {
                let escaped: Vec<char> = if c.is_control() {
                    c.escape_default().collect()
                } else {
                    vec![c]
                };
                escaped
            })
            .collect(),
    };
    let mut blocks: Vec<(usize, &str, Vec<Token>)> = vec![];
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = raw.split('#').next().unwrap_or("").trim_end();
        if content.trim().is_empty() {
            continue;
        }
        if let Some(header) = content.strip_prefix("rule ") {
            blocks.push((line, header.trim(), vec![]));
            continue;
        }
        let Some(block) = blocks.last_mut() else {
            return Err(err(
                line,
                format!("expected `rule NAME (exact):`, found `{}`", content.trim()),
            ));
        };
        block
            .2
            .extend(tokenize(content, line).map_err(|m| err(line, m))?);
    }
    let mut rules = vec![];
    let mut names = BTreeSet::new();
    for (line, header, tokens) in blocks {
        let rule = parse_rule(file, line, header, tokens).map_err(|(l, m)| err(l, m))?;
        if !names.insert(rule.name.clone()) {
            return Err(err(line, format!("rule `{}` is defined twice", rule.name)));
        }
        rules.push(rule);
    }
    Ok(rules)
}

/// Splits a line into `(`, `)`, `,` and atoms (commas inside `[...]` stay in the atom).
fn tokenize(s: &str, line: usize) -> Result<Vec<Token>, String> {
    let mut out = vec![];
    let mut cur = String::new();
    let mut depth = 0i32;
    let flush = |cur: &mut String, out: &mut Vec<Token>| {
        if !cur.is_empty() {
            out.push(Token {
                text: std::mem::take(cur),
                line,
            });
        }
    };
    for c in s.chars() {
        match c {
            '[' => {
                depth += 1;
                cur.push(c);
            }
            ']' => {
                depth -= 1;
                if depth < 0 {
                    return Err("unbalanced `]`".into());
                }
                cur.push(c);
            }
            _ if depth > 0 => {
                if c.is_whitespace() {
                    return Err("spaces are not allowed inside `[...]` attribute lists".into());
                }
                cur.push(c);
            }
            '(' | ')' | ',' => {
                flush(&mut cur, &mut out);
                out.push(Token {
                    text: c.to_string(),
                    line,
                });
            }
            c if c.is_whitespace() => flush(&mut cur, &mut out),
            c => cur.push(c),
        }
    }
    if depth != 0 {
        return Err("unbalanced `[`".into());
    }
    flush(&mut cur, &mut out);
    Ok(out)
}

type Res<T> = Result<T, (usize, String)>;

fn parse_rule(file: &str, line: usize, header: &str, tokens: Vec<Token>) -> Res<Rule> {
    let header = header.strip_suffix(':').ok_or((
        line,
        "expected `:` at the end of the rule header".to_string(),
    ))?;
    let (name, tag) = header.split_once(' ').ok_or((
        line,
        "expected `rule NAME (exact):` or `(approximate):`".to_string(),
    ))?;
    let exactness = match tag.trim() {
        "(exact)" => Exactness::Exact,
        "(approximate)" => Exactness::Approximate,
        other => {
            return Err((
                line,
                format!("expected `(exact)` or `(approximate)`, found `{other}`"),
            ))
        }
    };
    let arrow = tokens.iter().position(|t| t.text == "=>").ok_or((
        line,
        "expected `=>` between the left and right sides".to_string(),
    ))?;
    let where_at = tokens
        .iter()
        .position(|t| t.text == "where")
        .unwrap_or(tokens.len());
    if where_at < arrow {
        return Err((
            tokens[where_at].line,
            "`where` must come after the right side".into(),
        ));
    }
    let (lhs_tokens, rhs_tokens, cond_tokens) = (
        &tokens[..arrow],
        &tokens[arrow + 1..where_at],
        tokens.get(where_at + 1..).unwrap_or(&[]),
    );
    let text_of = |ts: &[Token]| {
        ts.iter()
            .map(|t| t.text.as_str())
            .collect::<Vec<_>>()
            .join(" ")
            .replace("( ", "(")
            .replace(" )", ")")
    };

    let mut conditions = vec![];
    let mut literals = 0;
    let mut lhs = vec![];
    let mut attr_bindings = vec![];
    for (binding, sexp) in bound_parts(lhs_tokens, line)? {
        if let Sexp::Atom(t) = &sexp {
            return Err((
                t.line,
                format!("a left side is an op `(Kind ...)`, found `{}`", t.text),
            ));
        }
        let mut part_bindings = vec![];
        let text = pattern_text(
            &sexp,
            &mut literals,
            &mut conditions,
            Some(&mut part_bindings),
        )?;
        attr_bindings.push(part_bindings);
        let pattern: Pattern<crate::lang::Node> = text
            .parse()
            .map_err(|e| (sexp.line(), format!("bad pattern: {e}")))?;
        lhs.push((binding, pattern));
    }
    let bound: BTreeSet<Var> = lhs
        .iter()
        .flat_map(|(b, p)| {
            p.vars()
                .into_iter()
                .chain(b.as_ref().map(|v| v.parse().expect("checked")))
        })
        .chain(attr_bindings.iter().flatten().map(|a| a.var))
        .collect();
    let mut rhs = vec![];
    for (binding, sexp) in bound_parts(rhs_tokens, line)? {
        let template = template(&sexp)?;
        if template == Template::Absent {
            return Err((sexp.line(), "a right side cannot be `_`".into()));
        }
        for v in template.vars() {
            if !bound.contains(&v) {
                return Err((
                    sexp.line(),
                    format!("variable `{v}` on the right side is not bound on the left"),
                ));
            }
        }
        rhs.push((binding, template));
    }
    if (lhs.len() > 1 || lhs[0].0.is_some()) != (rhs.iter().any(|(b, _)| b.is_some()))
        || rhs.is_empty()
    {
        return Err((line, "a multi-pattern rule binds every part on both sides (`?a = ...`); a plain rule binds none".into()));
    }
    for (b, _) in &rhs {
        if let Some(b) = b {
            if !lhs.iter().any(|(l, _)| l.as_ref() == Some(b)) {
                return Err((
                    line,
                    format!("right side binds `{b}`, which no left part binds"),
                ));
            }
        }
    }
    if where_at < tokens.len() && cond_tokens.is_empty() {
        return Err((
            tokens[where_at].line,
            "empty `where` clause (expected conditions after `where`)".into(),
        ));
    }
    let parts = cond_tokens.split(|t| t.text == ",");
    for part in parts.filter(|_| where_at < tokens.len()) {
        let Some(first) = part.first() else {
            return Err((
                tokens[where_at].line,
                "empty condition in the `where` clause (two commas, or a comma at an end)".into(),
            ));
        };
        let c = Condition::parse(&text_of(part)).map_err(|m| (first.line, m))?;
        for v in c.vars() {
            if !bound.contains(&v) {
                return Err((
                    first.line,
                    format!("condition on `{v}`, which the left side does not bind"),
                ));
            }
        }
        conditions.push(c);
    }
    let rule = Rule {
        name: name.to_string(),
        exactness,
        origin: format!("{file}:{line}"),
        lhs,
        rhs,
        conditions,
        attr_bindings,
        lhs_text: text_of(lhs_tokens),
        rhs_text: text_of(rhs_tokens),
    };
    rule.rewrite()
        .map_err(|e| (line, format!("rule `{name}`: {e}")))?;
    Ok(rule)
}

/// Parses `SEXP` or `?a = SEXP, ?b = SEXP, ...`.
fn bound_parts(tokens: &[Token], line: usize) -> Res<Vec<(Option<String>, Sexp)>> {
    if tokens.is_empty() {
        return Err((line, "expected an s-expression".into()));
    }
    let mut parts = vec![];
    let mut pos = 0;
    loop {
        let binding = match (tokens.get(pos), tokens.get(pos + 1)) {
            (Some(v), Some(eq)) if v.text.starts_with('?') && eq.text == "=" => {
                parse_var(&v.text).map_err(|m| (v.line, m))?;
                pos += 2;
                Some(v.text.clone())
            }
            _ => None,
        };
        let (sexp, next) = parse_sexp(tokens, pos, 0)?;
        parts.push((binding, sexp));
        pos = next;
        match tokens.get(pos) {
            None => break,
            Some(t) if t.text == "," => pos += 1,
            Some(t) => {
                return Err((
                    t.line,
                    format!("expected `,` or the end of the side, found `{}`", t.text),
                ))
            }
        }
    }
    if parts.len() > 1 && parts.iter().any(|(b, _)| b.is_none()) {
        return Err((
            tokens[0].line,
            "every part of a multi-pattern side needs a binding `?a = ...`".into(),
        ));
    }
    Ok(parts)
}

/// The deepest nesting of `(...)` a rule may have (deeper input is an error, not a stack
/// overflow in the recursive functions over rules).
pub const MAX_NESTING: usize = 256;

fn parse_sexp(tokens: &[Token], pos: usize, depth: usize) -> Res<(Sexp, usize)> {
    let t = tokens.get(pos).ok_or_else(|| {
        (
            tokens.last().map_or(0, |t| t.line),
            "unexpected end of expression".to_string(),
        )
    })?;
    match t.text.as_str() {
        "(" => {
            if depth >= MAX_NESTING {
                return Err((
                    t.line,
                    format!("expressions nest deeper than {MAX_NESTING} levels"),
                ));
            }
            let head = tokens
                .get(pos + 1)
                .filter(|h| !["(", ")", ","].contains(&h.text.as_str()));
            let head = head.ok_or((t.line, "expected an op name after `(`".to_string()))?;
            let mut items = vec![];
            let mut p = pos + 2;
            loop {
                match tokens.get(p) {
                    Some(c) if c.text == ")" => {
                        return Ok((Sexp::List(head.clone(), items), p + 1))
                    }
                    Some(_) => {
                        let (s, next) = parse_sexp(tokens, p, depth + 1)?;
                        items.push(s);
                        p = next;
                    }
                    None => return Err((t.line, "expected `)`".into())),
                }
            }
        }
        ")" | "," | "=" | "=>" => Err((
            t.line,
            format!("expected an expression, found `{}`", t.text),
        )),
        _ => Ok((Sexp::Atom(t.clone()), pos + 1)),
    }
}

/// A rule variable: `?` then a letter or `_`, then letters, digits and `_`.
pub(crate) fn parse_var(w: &str) -> Result<Var, String> {
    let Some(name) = w.strip_prefix('?') else {
        return Err(format!("expected a variable like `?x`, found `{w}`"));
    };
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(format!(
            "bad variable `{w}` (expected `?` then a letter or `_`, then letters, digits or `_`)"
        ));
    }
    w.parse().map_err(|_| format!("bad variable `{w}`"))
}

/// A number literal of a rule or a condition: finite.
pub(crate) fn parse_number(w: &str) -> Result<f64, String> {
    match w.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(format!("number `{w}` is not finite")),
        Err(_) => Err(format!("expected a number, found `{w}`")),
    }
}

fn is_number(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') && s.parse::<f64>().is_ok()
}

/// One `key=value` item of an op token.
enum AttrItem {
    /// A literal value, of the attribute's type.
    Value(Attr),
    /// `key=*`: any value (left sides only).
    Any,
    /// `key=?v` or `key=?a*?b`: variables.
    Vars(Vec<Var>),
}

/// An op token `Kind` or `Kind[key=value,...]`: the kind and its attribute items, each an
/// attribute the op has, given once, with a value of the attribute's type.
fn parse_head(head: &Token) -> Res<(OpKind, Vec<(String, AttrItem)>)> {
    let fail = |m: String| (head.line, m);
    let (kind, inner) = match head.text.find('[') {
        Some(i) => (
            &head.text[..i],
            head.text[i + 1..]
                .strip_suffix(']')
                .ok_or_else(|| fail(format!("unbalanced brackets in `{}`", head.text)))?,
        ),
        None => (head.text.as_str(), ""),
    };
    let kind: OpKind = kind.parse().map_err(fail)?;
    let mut items: Vec<(String, AttrItem)> = vec![];
    for item in split_top_level(inner) {
        let (key, value) = item.split_once('=').ok_or_else(|| {
            fail(format!(
                "expected key=value in `{}`, found `{item}`",
                head.text
            ))
        })?;
        let ty = attr_type(kind, key).map_err(fail)?;
        if items.iter().any(|(k, _)| k == key) {
            return Err(fail(format!(
                "attribute `{key}` is given twice in `{}`",
                head.text
            )));
        }
        let value = if value == "*" {
            AttrItem::Any
        } else if value.starts_with('?') {
            AttrItem::Vars(
                value
                    .split('*')
                    .map(parse_var)
                    .collect::<Result<_, _>>()
                    .map_err(fail)?,
            )
        } else {
            let wrong = || {
                fail(format!(
                    "attribute `{key}` of {kind} takes {}, found `{value}`",
                    ty.describe()
                ))
            };
            AttrItem::Value(
                parse_attr_token(value)
                    .ok()
                    .and_then(|a| ty.accept(a))
                    .ok_or_else(wrong)?,
            )
        };
        items.push((key.to_string(), value));
    }
    Ok((kind, items))
}

/// The index of a `GetN` projection head (`None` for an op head).
fn projection(head: &Token) -> Res<Option<u32>> {
    let Some(i) = head.text.strip_prefix("Get") else {
        return Ok(None);
    };
    match i.parse::<u32>() {
        Ok(i) if i >= 1 => Ok(Some(i)),
        _ => Err((
            head.line,
            format!("bad projection `{}` (expected Get1, Get2, ...)", head.text),
        )),
    }
}

/// Checks the number of inputs written for `head`.
fn check_inputs(head: &Token, kind: Option<OpKind>, n: usize) -> Res<()> {
    match kind {
        Some(kind) => {
            check_arity(kind, n).map_err(|m| (head.line, format!("`{}`: {m}", head.text)))
        }
        None if n == 1 => Ok(()),
        None => Err((
            head.line,
            format!("`{}` takes one argument, found {n}", head.text),
        )),
    }
}

/// The egg pattern text of a left side; number literals become fresh variables with a
/// `const ?v = N` condition. `attr_vars` collects the `key=?v` bindings of the outermost op
/// (`None` below it, where they are not allowed).
fn pattern_text(
    s: &Sexp,
    literals: &mut usize,
    conditions: &mut Vec<Condition>,
    attr_vars: Option<&mut Vec<AttrBinding>>,
) -> Res<String> {
    match s {
        Sexp::Atom(t) if is_number(&t.text) => {
            let n = parse_number(&t.text).map_err(|m| (t.line, m))?;
            *literals += 1;
            // `-` cannot occur in a written variable, so literals never capture one.
            let var: Var = format!("?literal-{literals}")
                .parse()
                .expect("valid variable");
            conditions.push(Condition::ConstEq(var, n));
            Ok(var.to_string())
        }
        Sexp::Atom(t) if t.text.starts_with('?') => {
            parse_var(&t.text).map_err(|m| (t.line, m))?;
            Ok(t.text.clone())
        }
        Sexp::Atom(t) if t.text == "_" => Ok(t.text.clone()),
        Sexp::Atom(t) => Err((
            t.line,
            format!(
                "expected a variable, `_`, a number or `(op ...)`, found `{}`",
                t.text
            ),
        )),
        Sexp::List(head, items) => {
            let token = match projection(head)? {
                Some(_) => {
                    check_inputs(head, None, items.len())?;
                    head.text.clone()
                }
                None => {
                    let (kind, attrs) = parse_head(head)?;
                    check_inputs(head, Some(kind), items.len())?;
                    let children: Vec<Option<Var>> = items
                        .iter()
                        .map(|i| match i {
                            Sexp::Atom(t) if t.text.starts_with('?') => t.text.parse().ok(),
                            _ => None,
                        })
                        .collect();
                    let mut sink = attr_vars;
                    let mut given = Attrs::default();
                    let mut free = vec![];
                    for (key, item) in attrs {
                        match item {
                            AttrItem::Value(v) => given.set(&key, v),
                            AttrItem::Any => free.push(key),
                            AttrItem::Vars(vars) => {
                                let [var] = vars.as_slice() else {
                                    return Err((head.line, format!("a left side binds attribute `{key}` to one variable (`{key}=?v`)")));
                                };
                                let sink = sink.as_deref_mut().ok_or((head.line, "attribute variables (`key=?v`) are only allowed on the outermost op of a left side".to_string()))?;
                                sink.push(AttrBinding {
                                    kind,
                                    key: key.clone(),
                                    var: *var,
                                    children: children.clone(),
                                });
                                free.push(key);
                            }
                        }
                    }
                    // Attributes the pattern does not name must have their default value;
                    // free ones match any value. (Complete tokens also let egg look a subterm
                    // up directly once its variables are bound.)
                    let mut complete = kiln_ir::Op::new(kind, given);
                    for key in free {
                        complete.attrs.0.remove(&key);
                    }
                    crate::lang::op_token(&complete)
                }
            };
            let mut out = format!("({token}");
            for i in items {
                out.push(' ');
                out.push_str(&pattern_text(i, literals, conditions, None)?);
            }
            out.push(')');
            Ok(out)
        }
    }
}

/// A right-side template.
fn template(s: &Sexp) -> Res<Template> {
    match s {
        Sexp::Atom(t) if t.text == "_" => Ok(Template::Absent),
        Sexp::Atom(t) if t.text.starts_with('?') => parse_var(&t.text)
            .map(Template::Var)
            .map_err(|m| (t.line, m)),
        Sexp::Atom(t) => Err((
            t.line,
            format!(
                "expected a variable, `_` or `(op ...)` on the right side, found `{}`",
                t.text
            ),
        )),
        Sexp::List(head, items) => {
            if let Some(i) = projection(head)? {
                check_inputs(head, None, items.len())?;
                return Ok(Template::Get(i, Box::new(template(&items[0])?)));
            }
            let (kind, items_given) = parse_head(head)?;
            check_inputs(head, Some(kind), items.len())?;
            let (mut attrs, mut attr_vars) = (Attrs::default(), vec![]);
            for (key, item) in items_given {
                match item {
                    AttrItem::Value(v) => attrs.set(&key, v),
                    AttrItem::Vars(vars) => attr_vars.push((key, vars)),
                    AttrItem::Any => {
                        return Err((
                            head.line,
                            format!("`{key}=*` is only allowed on the left side"),
                        ))
                    }
                }
            }
            let args = items.iter().map(template).collect::<Res<_>>()?;
            Ok(Template::Op {
                kind,
                attrs,
                attr_vars,
                args,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_multi_rules() {
        let text = "# comment\nrule double-neg (exact):\n  (Neg (Neg ?x))\n  => (Identity ?x)\n\
                    rule scale (exact):\n  (Mul ?x 1.0) => (Identity ?x) where float ?x\n\
                    rule pair (exact):\n  ?a = (Neg ?x), ?b = (Abs ?x)\n  => ?a = (Neg ?x), ?b = (Abs ?x)\n";
        let rules = parse_rules("t.rules", text).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(
            rules[1].conditions.len(),
            2,
            "the literal adds a const condition"
        );
        assert_eq!(rules[2].lhs.len(), 2);
        for r in &rules {
            r.rewrite().unwrap();
        }
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "rule a (exact):\n (Neg ?x)\n => (Frob ?x)\n",
                3,
                "unknown op `Frob`",
            ),
            (
                "rule a (exact):\n (Neg ?x)\n => (Neg ?y)\n",
                3,
                "`?y` on the right side is not bound",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Neg ?x)\n where float ?z\n",
                3,
                "condition on `?z`",
            ),
            (
                "rule a (exact):\n (Neg ?x (Abs ?x)\n => (Neg ?x)\n",
                2,
                "expected `)`",
            ),
            ("(Neg ?x)\n", 1, "expected `rule NAME (exact):`"),
            (
                "rule a (maybe):\n (Neg ?x) => (Neg ?x)\n",
                1,
                "expected `(exact)`",
            ),
            ("rule a (exact):\n (Neg ?x) (Neg ?x)\n", 1, "expected `=>`"),
            (
                "rule a (exact):\n (Neg ?x) => (Neg ?x) where wobbly ?x\n",
                2,
                "unknown condition",
            ),
        ];
        check_errors(&cases);
    }

    fn check_errors(cases: &[(&str, usize, &str)]) {
        for &(text, line, msg) in cases {
            let e = parse_rules("bad.rules", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(
                e.to_string().starts_with(&format!("bad.rules:{line}: ")),
                "{e}"
            );
            assert!(e.message.contains(msg), "{text:?}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let depth = 30_000;
        let text = format!(
            "rule deep (exact):\n  {}?x{}\n  => ?x\n",
            "(Neg ".repeat(depth),
            ")".repeat(depth)
        );
        let e = parse_rules("deep.rules", &text).unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        assert!(e.message.contains("deeper than 256"), "{e}");
        // The same on the right side, and exactly at the limit it parses.
        let text = format!(
            "rule deep (exact):\n  (Neg ?x)\n  => {}?x{}\n",
            "(Neg ".repeat(depth),
            ")".repeat(depth)
        );
        let e = parse_rules("deep.rules", &text).unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        let at_limit = format!(
            "rule deep (exact):\n  {}?x{}\n  => (Neg ?x)\n",
            "(Neg ".repeat(MAX_NESTING),
            ")".repeat(MAX_NESTING)
        );
        assert_eq!(parse_rules("ok.rules", &at_limit).unwrap().len(), 1);
        let over = format!(
            "rule deep (exact):\n  {}?x{}\n  => (Neg ?x)\n",
            "(Neg ".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert!(parse_rules("over.rules", &over).is_err());
    }

    #[test]
    fn arity_attributes_and_where_are_checked() {
        check_errors(&[
            (
                "rule a (exact):\n (Add ?x)\n => ?x\n",
                2,
                "`Add`: Add takes 2 inputs, found 1",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Add ?x ?x ?x)\n",
                2,
                "Add takes 2 inputs, found 3",
            ),
            (
                "rule a (exact):\n (Neg (Neg ?x)) =>\n (Concat)\n",
                3,
                "Concat takes at least 1 input",
            ),
            (
                "rule a (exact):\n (Neg (Get1 ?x ?x)) => ?x\n",
                2,
                "`Get1` takes one argument, found 2",
            ),
            (
                "rule a (exact):\n (Transpose[=1] ?x) => ?x\n",
                2,
                "empty attribute name",
            ),
            (
                "rule a (exact):\n (Transpose[foo=1] ?x) => ?x\n",
                2,
                "Transpose has no attribute `foo` (it has perm)",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Neg[foo=1] ?x)\n",
                2,
                "Neg has no attribute `foo`",
            ),
            (
                "rule a (exact):\n (Transpose[perm=abc] ?x) => ?x\n",
                2,
                "attribute `perm` of Transpose takes a list of integers",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Cast[to=f99] ?x)\n",
                2,
                "attribute `to` of Cast takes a dtype name",
            ),
            (
                "rule a (exact):\n (Softmax[axis=1.5] ?x) => ?x\n",
                2,
                "takes an integer, found `1.5`",
            ),
            (
                "rule a (exact):\n (Softmax[axis=1,axis=2] ?x) => ?x\n",
                2,
                "attribute `axis` is given twice",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Softmax[axis=*] ?x)\n",
                2,
                "`axis=*` is only allowed on the left side",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Neg ?x)\n where\n",
                3,
                "empty `where` clause",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Neg ?x)\n where float ?x,\n",
                3,
                "empty condition",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Neg ?x)\n where float ?x, , scalar ?x\n",
                3,
                "empty condition",
            ),
            (
                "rule a (exact):\n (Neg ?x) => (Neg ?x) where rank ?x = -1\n",
                2,
                "non-negative integer",
            ),
            (
                "rule a (exact):\n ?x => (Neg ?x)\n",
                2,
                "a left side is an op",
            ),
            ("rule a (exact):\n (Neg ?x) => _\n", 2, "cannot be `_`"),
            ("rule a (exact):\n (Mul ?x 1e400) => ?x\n", 2, "not finite"),
            (
                "rule a (exact):\n ? = (Neg ?x), ?b = (Abs ?x) => ? = (Neg ?x), ?b = (Abs ?x)\n",
                2,
                "bad variable `?`",
            ),
            ("rule a (exact):\n (Neg ?x\"y) => ?x\n", 2, "bad variable"),
        ]);
        // Float attributes read integer literals as floats, so the pattern matches.
        let rules = parse_rules(
            "ok.rules",
            "rule g (exact):\n (Gemm[alpha=1,beta=1.0] ?a ?b) => (MatMul ?a ?b)\n",
        )
        .unwrap();
        assert!(rules[0].lhs[0].1.to_string().contains("alpha=1.0"));
    }

    #[test]
    fn errors_stay_one_line_with_control_characters() {
        let e = parse_rules("cr.rules", "rule a (\rexact):\n (Neg ?x) => ?x\n").unwrap_err();
        assert!(!e.to_string().contains(['\r', '\n']), "{e:?}");
        assert!(
            e.to_string().starts_with("cr.rules:1: ") && e.message.contains("\\r"),
            "{e}"
        );
    }

    #[test]
    fn literals_never_capture_a_written_variable() {
        let rules = parse_rules(
            "ok.rules",
            "rule m (exact):\n (Mul ?literal1 2) => ?literal1\n",
        )
        .unwrap();
        let vars = rules[0].lhs[0].1.vars();
        assert_eq!(vars.len(), 2, "{vars:?}");
    }
}
