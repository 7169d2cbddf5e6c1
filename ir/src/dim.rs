//! Symbolic dimensions: integer polynomials over named symbols such as `batch` and `seq`.
//!
//! A [`Dim`] is kept in a canonical form (a sum of monomials with non-zero integer
//! coefficients), so two dims that are equal as polynomials compare equal with `==`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

/// A dimension size: a constant, a named symbol, or a polynomial over symbols (`batch*seq`, `seq+1`).
/// Arithmetic whose coefficients overflow i64 gives [`Dim::unknown`], left to run-time checks.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Dim {
    /// Monomial (sorted symbol names, repeated for powers; empty for the constant term) to coefficient.
    terms: BTreeMap<Vec<String>, i64>,
}

impl Dim {
    /// A constant dim.
    pub fn known(value: i64) -> Dim {
        let mut terms = BTreeMap::new();
        if value != 0 {
            terms.insert(Vec::new(), value);
        }
        Dim { terms }
    }

    /// A dim whose size is not known until run time (printed `?`; each `?` is independent,
    /// so two unknown dims are not assumed equal by anything but the run-time checks).
    pub fn unknown() -> Dim {
        Dim::sym("?")
    }

    /// True if the dim depends on an unknown (`?`) size.
    pub fn is_unknown(&self) -> bool {
        self.terms.keys().flatten().any(|s| s == "?")
    }

    /// A dim that is one named symbol.
    pub fn sym(name: &str) -> Dim {
        Dim {
            terms: BTreeMap::from([(vec![name.to_string()], 1)]),
        }
    }

    /// The value if the dim does not depend on any symbol.
    pub fn as_known(&self) -> Option<i64> {
        match self.terms.len() {
            0 => Some(0),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// True if this dim is exactly the constant `v`.
    pub fn is(&self, v: i64) -> bool {
        self.as_known() == Some(v)
    }

    /// The symbols this dim mentions, sorted and without repeats.
    pub fn symbols(&self) -> Vec<&str> {
        let mut s: Vec<&str> = self.terms.keys().flatten().map(String::as_str).collect();
        s.sort_unstable();
        s.dedup();
        s
    }

    /// Evaluates the dim with the given symbol values; `None` if a symbol is unbound.
    pub fn eval(&self, bindings: &HashMap<String, i64>) -> Option<i64> {
        let mut total = 0i64;
        for (mono, coeff) in &self.terms {
            let mut v = *coeff;
            for s in mono {
                v = v.checked_mul(*bindings.get(s)?)?;
            }
            total = total.checked_add(v)?;
        }
        Some(total)
    }

    /// The exact quotient `self / divisor`, if every term divides evenly.
    pub fn div_exact(&self, divisor: &Dim) -> Option<Dim> {
        if let Some(d) = divisor.as_known() {
            if d == 0 {
                return None;
            }
            let mut terms = BTreeMap::new();
            for (m, c) in &self.terms {
                if c % d != 0 {
                    return None;
                }
                terms.insert(m.clone(), c / d);
            }
            return Some(Dim { terms });
        }
        // A monomial divisor (c * s1 * s2 ...) divides each term that contains its symbols.
        if divisor.terms.len() != 1 {
            return (self == divisor).then(|| Dim::known(1));
        }
        let (dm, dc) = divisor.terms.iter().next()?;
        let mut terms = BTreeMap::new();
        for (m, c) in &self.terms {
            if c % dc != 0 {
                return None;
            }
            let mut rest = m.clone();
            for s in dm {
                let pos = rest.iter().position(|x| x == s)?;
                rest.remove(pos);
            }
            *terms.entry(rest).or_insert(0) += c / dc;
        }
        terms.retain(|_, c| *c != 0);
        Some(Dim { terms })
    }

    fn combine(&self, other: &Dim, sign: i64) -> Dim {
        let mut terms = self.terms.clone();
        for (m, c) in &other.terms {
            let entry = terms.entry(m.clone()).or_insert(0);
            match c.checked_mul(sign).and_then(|c| entry.checked_add(c)) {
                Some(v) => *entry = v,
                None => return Dim::unknown(),
            }
        }
        terms.retain(|_, c| *c != 0);
        Dim { terms }
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Dim {
        Dim::known(v)
    }
}

impl From<usize> for Dim {
    fn from(v: usize) -> Dim {
        Dim::known(v as i64)
    }
}

impl std::ops::Add for &Dim {
    type Output = Dim;
    fn add(self, rhs: &Dim) -> Dim {
        self.combine(rhs, 1)
    }
}

impl std::ops::Sub for &Dim {
    type Output = Dim;
    fn sub(self, rhs: &Dim) -> Dim {
        self.combine(rhs, -1)
    }
}

impl std::ops::Mul for &Dim {
    type Output = Dim;
    fn mul(self, rhs: &Dim) -> Dim {
        let mut terms: BTreeMap<Vec<String>, i64> = BTreeMap::new();
        for (ma, ca) in &self.terms {
            for (mb, cb) in &rhs.terms {
                let mut m: Vec<String> = ma.iter().chain(mb).cloned().collect();
                m.sort();
                let entry = terms.entry(m).or_insert(0);
                match ca.checked_mul(*cb).and_then(|p| entry.checked_add(p)) {
                    Some(v) => *entry = v,
                    None => return Dim::unknown(),
                }
            }
        }
        terms.retain(|_, c| *c != 0);
        Dim { terms }
    }
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        // Symbolic terms first (highest degree first), the constant last: `batch*seq+2`.
        let mut ordered: Vec<(&Vec<String>, &i64)> = self.terms.iter().collect();
        ordered.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(b.0)));
        for (i, (mono, coeff)) in ordered.into_iter().enumerate() {
            let coeff = *coeff;
            if i > 0 {
                f.write_str(if coeff < 0 { "-" } else { "+" })?;
            } else if coeff < 0 {
                f.write_str("-")?;
            }
            let abs = coeff.unsigned_abs();
            if mono.is_empty() {
                write!(f, "{abs}")?;
            } else {
                if abs != 1 {
                    write!(f, "{abs}*")?;
                }
                f.write_str(&mono.join("*"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl FromStr for Dim {
    type Err = String;
    /// Parses `expr := term (('+'|'-') term)*`, `term := factor ('*' factor)*`,
    /// `factor := integer | identifier | '(' expr ')'`.
    fn from_str(s: &str) -> Result<Dim, String> {
        let tokens = tokenize(s)?;
        let mut pos = 0;
        let d = parse_expr(&tokens, &mut pos)?;
        if pos != tokens.len() {
            return Err(format!("unexpected `{}` in dim `{s}`", tokens[pos]));
        }
        Ok(d)
    }
}

fn tokenize(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if "+-*()".contains(c) {
            out.push(c.to_string());
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == '?' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_.?".contains(chars[i]))
            {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else {
            return Err(format!("unexpected character `{c}` in dim `{s}`"));
        }
    }
    Ok(out)
}

fn parse_expr(t: &[String], pos: &mut usize) -> Result<Dim, String> {
    let mut acc = if t.get(*pos).map(String::as_str) == Some("-") {
        *pos += 1;
        &Dim::known(0) - &parse_term(t, pos)?
    } else {
        parse_term(t, pos)?
    };
    while let Some(op) = t.get(*pos).map(String::as_str) {
        match op {
            "+" => {
                *pos += 1;
                acc = &acc + &parse_term(t, pos)?;
            }
            "-" => {
                *pos += 1;
                acc = &acc - &parse_term(t, pos)?;
            }
            _ => break,
        }
    }
    Ok(acc)
}

fn parse_term(t: &[String], pos: &mut usize) -> Result<Dim, String> {
    let mut acc = parse_factor(t, pos)?;
    while t.get(*pos).map(String::as_str) == Some("*") {
        *pos += 1;
        acc = &acc * &parse_factor(t, pos)?;
    }
    Ok(acc)
}

fn parse_factor(t: &[String], pos: &mut usize) -> Result<Dim, String> {
    let tok = t.get(*pos).ok_or("dim expression ends early")?;
    *pos += 1;
    if tok == "(" {
        let d = parse_expr(t, pos)?;
        if t.get(*pos).map(String::as_str) != Some(")") {
            return Err("expected `)` in dim expression".into());
        }
        *pos += 1;
        Ok(d)
    } else if tok.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        tok.parse::<i64>()
            .map(Dim::known)
            .map_err(|_| format!("bad integer `{tok}` in dim expression"))
    } else if tok
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '?')
    {
        Ok(Dim::sym(tok))
    } else {
        Err(format!("unexpected `{tok}` in dim expression"))
    }
}

impl Serialize for Dim {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.as_known() {
            Some(v) => s.serialize_i64(v),
            None => s.serialize_str(&self.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Dim {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Dim, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Int(i64),
            Expr(String),
        }
        match Repr::deserialize(d)? {
            Repr::Int(v) => Ok(Dim::known(v)),
            Repr::Expr(s) => s.parse().map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_is_canonical() {
        let b = Dim::sym("batch");
        let s = Dim::sym("seq");
        let bs = &b * &s;
        assert_eq!(bs, &s * &b);
        assert_eq!((&bs + &Dim::known(2)).to_string(), "batch*seq+2");
        assert_eq!(&(&bs + &b) - &b, bs);
        assert_eq!(bs.div_exact(&s), Some(b.clone()));
        let twelve_bs = &bs * &Dim::known(12);
        assert_eq!(
            twelve_bs.div_exact(&Dim::known(4)).unwrap().to_string(),
            "3*batch*seq"
        );
        assert_eq!(twelve_bs.div_exact(&Dim::known(5)), None);
    }

    #[test]
    fn parse_round_trips() {
        for text in ["batch*seq+2", "seq", "7", "0", "-3*seq+1", "2*past*seq-seq"] {
            let d: Dim = text.parse().unwrap();
            assert_eq!(d.to_string().parse::<Dim>().unwrap(), d, "{text}");
        }
        assert_eq!("(seq+1)*2".parse::<Dim>().unwrap().to_string(), "2*seq+2");
        assert!("seq+".parse::<Dim>().is_err());
        assert!("seq$".parse::<Dim>().is_err());
    }

    #[test]
    fn eval_binds_symbols() {
        let d: Dim = "batch*seq+1".parse().unwrap();
        let b = HashMap::from([("batch".to_string(), 2), ("seq".to_string(), 5)]);
        assert_eq!(d.eval(&b), Some(11));
        assert_eq!(d.eval(&HashMap::new()), None);
    }
}
