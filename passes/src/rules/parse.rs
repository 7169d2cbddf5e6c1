//! The `.rules` parser (the format is described in the parent module).

use super::apply::Template;
use super::condition::Condition;
use super::{AttrBinding, Exactness, Rule};
use crate::lang::{parse_attr_token, parse_op_token, split_top_level};
use egg::{Pattern, Var};
use kiln_ir::{Attrs, OpKind};
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
    let err = |line: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        message,
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
    for part in cond_tokens.split(|t| t.text == ",") {
        let Some(first) = part.first() else { continue };
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
    Ok(Rule {
        name: name.to_string(),
        exactness,
        origin: format!("{file}:{line}"),
        lhs,
        rhs,
        conditions,
        attr_bindings,
        lhs_text: text_of(lhs_tokens),
        rhs_text: text_of(rhs_tokens),
    })
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
                pos += 2;
                Some(v.text.clone())
            }
            _ => None,
        };
        let (sexp, next) = parse_sexp(tokens, pos)?;
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

fn parse_sexp(tokens: &[Token], pos: usize) -> Res<(Sexp, usize)> {
    let t = tokens.get(pos).ok_or_else(|| {
        (
            tokens.last().map_or(0, |t| t.line),
            "unexpected end of expression".to_string(),
        )
    })?;
    match t.text.as_str() {
        "(" => {
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
                        let (s, next) = parse_sexp(tokens, p)?;
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

fn is_number(s: &str) -> bool {
    s.parse::<f64>().is_ok() && s.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.')
}

/// The egg pattern text of a left side; number literals become fresh variables with a
/// `const ?v = N` condition.
fn pattern_text(
    s: &Sexp,
    literals: &mut usize,
    conditions: &mut Vec<Condition>,
    attr_vars: Option<&mut Vec<AttrBinding>>,
) -> Res<String> {
    match s {
        Sexp::Atom(t) if is_number(&t.text) => {
            *literals += 1;
            let var: Var = format!("?literal{literals}")
                .parse()
                .expect("valid variable");
            conditions.push(Condition::ConstEq(var, t.text.parse().expect("checked")));
            Ok(var.to_string())
        }
        Sexp::Atom(t) if t.text.starts_with('?') || t.text == "_" => Ok(t.text.clone()),
        Sexp::Atom(t) => Err((
            t.line,
            format!(
                "expected a variable, `_`, a number or `(op ...)`, found `{}`",
                t.text
            ),
        )),
        Sexp::List(head, items) => {
            check_head(head)?;
            let bindings = attr_var_items(head);
            if !bindings.is_empty() {
                let sink = attr_vars.ok_or((head.line, "attribute variables (`key=?v`) are only allowed on the outermost op of a left side".to_string()))?;
                let kind: OpKind = head.text[..head.text.find('[').unwrap_or(head.text.len())]
                    .parse()
                    .map_err(|e| (head.line, e))?;
                let children = items
                    .iter()
                    .map(|i| match i {
                        Sexp::Atom(t) if t.text.starts_with('?') => t.text.parse().ok(),
                        _ => None,
                    })
                    .collect::<Vec<Option<Var>>>();
                for (key, var) in bindings {
                    let var = var
                        .parse()
                        .map_err(|_| (head.line, format!("bad variable `{var}`")))?;
                    sink.push(AttrBinding {
                        kind,
                        key,
                        var,
                        children: children.clone(),
                    });
                }
            }
            let mut out = format!("({}", complete_pattern_op(head)?);
            for i in items {
                out.push(' ');
                out.push_str(&pattern_text(i, literals, conditions, None)?);
            }
            out.push(')');
            Ok(out)
        }
    }
}

/// The `key=?var` items of an op token: attributes bound to variables.
fn attr_var_items(head: &Token) -> Vec<(String, String)> {
    let Some(i) = head.text.find('[') else {
        return vec![];
    };
    split_top_level(head.text[i + 1..].strip_suffix(']').unwrap_or(""))
        .into_iter()
        .filter_map(|item| {
            item.split_once("=?")
                .map(|(k, v)| (k.to_string(), format!("?{v}")))
        })
        .collect()
}

/// A left-side op token with every attribute the pattern does not name set to its default,
/// except those written `key=*`, which match any value. (Complete tokens also let egg look a
/// subterm up directly once its variables are bound.)
fn complete_pattern_op(head: &Token) -> Res<String> {
    if head.text.starts_with("Get") {
        return Ok(head.text.clone());
    }
    let (kind, inner) = match head.text.find('[') {
        Some(i) => (
            &head.text[..i],
            head.text[i + 1..].strip_suffix(']').unwrap_or(""),
        ),
        None => (head.text.as_str(), ""),
    };
    let (wild, given): (Vec<&str>, Vec<&str>) = split_top_level(inner)
        .into_iter()
        .partition(|item| item.ends_with("=*") || item.contains("=?"));
    let given_token = if given.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}[{}]", given.join(","))
    };
    let op = parse_op_token(&given_token).map_err(|e| (head.line, e))?;
    let mut complete = kiln_ir::Op::new(op.kind, op.attrs);
    for w in wild {
        complete.attrs.0.remove(w.split('=').next().unwrap_or(w));
    }
    Ok(crate::lang::op_token(&complete))
}

fn check_head(head: &Token) -> Res<()> {
    if let Some(i) = head.text.strip_prefix("Get") {
        return i.parse::<u32>().map(drop).map_err(|_| {
            (
                head.line,
                format!("bad projection `{}` (expected Get1, Get2, ...)", head.text),
            )
        });
    }
    complete_pattern_op(head).map(drop)
}

/// A right-side template.
fn template(s: &Sexp) -> Res<Template> {
    match s {
        Sexp::Atom(t) if t.text == "_" => Ok(Template::Absent),
        Sexp::Atom(t) if t.text.starts_with('?') => t
            .text
            .parse()
            .map(Template::Var)
            .map_err(|_| (t.line, format!("bad variable `{}`", t.text))),
        Sexp::Atom(t) => Err((
            t.line,
            format!(
                "expected a variable, `_` or `(op ...)` on the right side, found `{}`",
                t.text
            ),
        )),
        Sexp::List(head, items) => {
            if let Some(i) = head.text.strip_prefix("Get") {
                let i: u32 = i
                    .parse()
                    .map_err(|_| (head.line, format!("bad projection `{}`", head.text)))?;
                let [inner] = items.as_slice() else {
                    return Err((head.line, format!("`{}` takes one argument", head.text)));
                };
                return Ok(Template::Get(i, Box::new(template(inner)?)));
            }
            let (kind, attr_text) = match head.text.find('[') {
                Some(i) => (&head.text[..i], head.text[i + 1..].strip_suffix(']')),
                None => (head.text.as_str(), Some("")),
            };
            let kind: OpKind = kind.parse().map_err(|e| (head.line, e))?;
            let attr_text =
                attr_text.ok_or((head.line, format!("unbalanced brackets in `{}`", head.text)))?;
            let (mut attrs, mut attr_vars) = (Attrs::default(), vec![]);
            for item in split_top_level(attr_text) {
                let (k, v) = item
                    .split_once('=')
                    .ok_or((head.line, format!("expected key=value in `{}`", head.text)))?;
                if v.starts_with('?') {
                    let vars = v
                        .split('*')
                        .map(|x| {
                            x.parse()
                                .map_err(|_| (head.line, format!("bad variable `{x}`")))
                        })
                        .collect::<Res<_>>()?;
                    attr_vars.push((k.to_string(), vars));
                } else {
                    attrs.set(k, parse_attr_token(v).map_err(|e| (head.line, e))?);
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
        for (text, line, msg) in cases {
            let e = parse_rules("bad.rules", text).unwrap_err();
            assert_eq!(e.line, line, "{text:?}: {e}");
            assert!(
                e.to_string().starts_with(&format!("bad.rules:{line}: ")),
                "{e}"
            );
            assert!(e.message.contains(msg), "{text:?}: {e}");
        }
    }
}
