//! Building expression strings for `filter`, `eval` and `select` without injection: string
//! literals are always double-quoted with `\` and `"` escaped, field paths are validated, and
//! every combinator parenthesises its operands.

use std::fmt;

/// A literal value inside an expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Lit {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
}

impl From<&str> for Lit {
    fn from(s: &str) -> Self {
        Lit::Str(s.to_string())
    }
}
impl From<String> for Lit {
    fn from(s: String) -> Self {
        Lit::Str(s)
    }
}
impl From<i64> for Lit {
    fn from(i: i64) -> Self {
        Lit::Int(i)
    }
}
impl From<bool> for Lit {
    fn from(b: bool) -> Self {
        Lit::Bool(b)
    }
}
impl From<f64> for Lit {
    fn from(f: f64) -> Self {
        Lit::Float(f)
    }
}

/// Quotes a string for the expression language: `"` and `\` are backslash-escaped.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

impl fmt::Display for Lit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lit::Str(s) => f.write_str(&quote(s)),
            Lit::Int(i) => write!(f, "{i}"),
            // Always with a fraction or exponent so it reads back as a float.
            Lit::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            Lit::Float(_) | Lit::Null => f.write_str("null"),
            Lit::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// Whether `path` is a valid field reference: dot-separated identifiers, each optionally
/// followed by `[n]` indexes.
pub fn valid_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('.').all(|seg| {
            let (name, idx) = match seg.find('[') {
                Some(i) => (&seg[..i], &seg[i..]),
                None => (seg, ""),
            };
            let mut chars = name.chars();
            let name_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
            let mut rest = idx;
            let mut idx_ok = true;
            while !rest.is_empty() {
                match rest.strip_prefix('[').and_then(|r| r.split_once(']')) {
                    Some((n, tail))
                        if !n.is_empty() && n.trim_start_matches('-').chars().all(|c| c.is_ascii_digit()) =>
                    {
                        rest = tail
                    }
                    _ => {
                        idx_ok = false;
                        break;
                    }
                }
            }
            name_ok && idx_ok
        })
}

/// An expression, or the reason it could not be built (reported when the request is built).
#[derive(Clone, Debug, PartialEq)]
pub struct Expr(pub(crate) Result<String, String>);

impl Expr {
    /// A field reference such as `metadata.auto.lastupdated` or `polls[0].id`.
    pub fn field(path: &str) -> Expr {
        if valid_path(path) { Expr(Ok(path.to_string())) } else { Expr(Err(format!("invalid field path {path:?}"))) }
    }

    pub fn lit(v: impl Into<Lit>) -> Expr {
        Expr(Ok(v.into().to_string()))
    }

    /// `now()`.
    pub fn now() -> Expr {
        Expr(Ok("now()".into()))
    }

    /// Raw expression text, for constructs the builder does not cover. The caller owns quoting.
    pub fn raw(text: impl Into<String>) -> Expr {
        Expr(Ok(text.into()))
    }

    fn bin(self, op: &str, rhs: Expr) -> Expr {
        match (self.0, rhs.0) {
            (Ok(a), Ok(b)) => Expr(Ok(format!("({a} {op} {b})"))),
            (Err(e), _) | (_, Err(e)) => Expr(Err(e)),
        }
    }

    pub fn eq(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("==", rhs.into())
    }
    pub fn ne(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("!=", rhs.into())
    }
    pub fn lt(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("<", rhs.into())
    }
    pub fn le(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("<=", rhs.into())
    }
    pub fn gt(self, rhs: impl Into<Expr>) -> Expr {
        self.bin(">", rhs.into())
    }
    pub fn ge(self, rhs: impl Into<Expr>) -> Expr {
        self.bin(">=", rhs.into())
    }
    pub fn and(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("&&", rhs.into())
    }
    pub fn or(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("||", rhs.into())
    }
    pub fn plus(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("+", rhs.into())
    }
    pub fn minus(self, rhs: impl Into<Expr>) -> Expr {
        self.bin("-", rhs.into())
    }
    #[allow(clippy::should_implement_trait)]
    pub fn not(self) -> Expr {
        Expr(self.0.map(|a| format!("!({a})")))
    }

    /// The expression text.
    ///
    /// # Errors
    /// The reason the expression is invalid (e.g. a bad field path).
    pub fn build(&self) -> Result<String, String> {
        self.0.clone()
    }
}

impl From<Lit> for Expr {
    fn from(l: Lit) -> Self {
        Expr(Ok(l.to_string()))
    }
}
impl From<&str> for Expr {
    /// A string *literal* (not a field): the safe default for values from data.
    fn from(s: &str) -> Self {
        Expr::lit(s)
    }
}
impl From<String> for Expr {
    fn from(s: String) -> Self {
        Expr::lit(s)
    }
}
impl From<i64> for Expr {
    fn from(i: i64) -> Self {
        Expr::lit(i)
    }
}
impl From<bool> for Expr {
    fn from(b: bool) -> Self {
        Expr::lit(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference unescaper for the language's double-quoted strings.
    fn unquote(s: &str) -> Option<String> {
        let inner = s.strip_prefix('"')?.strip_suffix('"')?;
        let mut out = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => out.push(chars.next()?),
                '"' => return None,
                c => out.push(c),
            }
        }
        Some(out)
    }

    #[test]
    fn builds_parenthesised() {
        let e = Expr::field("visitorId").gt("a\"b").and(Expr::field("day").ge(5i64));
        assert_eq!(e.build().as_deref(), Ok(r#"((visitorId > "a\"b") && (day >= 5))"#));
        assert!(Expr::field("bad path").eq(1i64).build().is_err());
        assert!(Expr::field("polls[0].id").build().is_ok());
        assert!(!valid_path("a..b"));
        assert!(!valid_path("a[x]"));
    }

    proptest::proptest! {
        #[test]
        fn quoting_round_trips(s in "\\PC*") {
            let q = quote(&s);
            proptest::prop_assert_eq!(unquote(&q), Some(s));
        }

        #[test]
        fn quoted_strings_never_end_early(s in "[\"\\\\a-z ]{0,20}") {
            // An unescaped quote would terminate the literal before its end.
            let q = quote(&s);
            let body = &q[1..q.len() - 1];
            let mut escaped = false;
            for c in body.chars() {
                if escaped { escaped = false; continue; }
                if c == '\\' { escaped = true; continue; }
                proptest::prop_assert!(c != '"');
            }
            proptest::prop_assert!(!escaped);
        }
    }
}
