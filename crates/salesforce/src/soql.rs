//! Injection-proof SOQL: string-literal escaping, validated identifiers, typed literals and a
//! small query builder.
//!
//! Every value reaches the query text through [`Literal`], and every string literal through
//! [`quote`], which escapes all characters SOQL gives meaning to inside quotes. Field and object
//! names are checked against `[A-Za-z][A-Za-z0-9_]*(\.[A-Za-z][A-Za-z0-9_]*)*`, so nothing but a
//! name can appear where a name is expected.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};

use crate::ids::SalesforceId;

/// Why a query could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SoqlError {
    /// A field or object name is not a plain (optionally dotted) identifier.
    #[error("{0:?} is not a valid SOQL field or object name")]
    InvalidIdentifier(String),
    /// NaN and infinities have no SOQL spelling.
    #[error("{0} cannot be written as a SOQL number")]
    NonFiniteNumber(f64),
    /// `SELECT` needs at least one field.
    #[error("a SOQL query needs at least one field")]
    NoFields,
    /// `IN ()` is a syntax error in SOQL.
    #[error("IN/NOT IN on {0} needs at least one value")]
    EmptyInList(String),
    /// `AND`/`OR` of nothing.
    #[error("AND/OR needs at least one condition")]
    EmptyGroup,
    /// A parent-to-child subquery that SOQL does not allow (OFFSET, or a subquery of its own).
    #[error("subquery on {0}: {1}")]
    InvalidSubquery(String, &'static str),
}

/// Escapes `value` for use between single quotes in SOQL (the quotes are not added).
///
/// Backslash, both quote characters, newline, carriage return, tab, backspace and form feed get
/// backslash escapes; everything else is kept verbatim, which is safe because only an unescaped
/// `'` ends a SOQL string.
#[must_use]
pub fn escape_str(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\'' => out.push_str("\\'"),
        '"' => out.push_str("\\\""),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\u{8}' => out.push_str("\\b"),
        '\u{c}' => out.push_str("\\f"),
        other => out.push(other),
    }
}

/// `value` as a complete single-quoted SOQL string literal.
#[must_use]
pub fn quote(value: &str) -> String {
    format!("'{}'", escape_str(value))
}

/// Escapes `value` for use inside a `LIKE` pattern: as [`escape_str`], plus `%` and `_`, so the
/// text matches literally. Add your own unescaped `%` around it for "contains"/"starts with".
#[must_use]
pub fn escape_like(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        match c {
            '%' => out.push_str("\\%"),
            '_' => out.push_str("\\_"),
            other => push_escaped(&mut out, other),
        }
    }
    out
}

fn is_simple_ident(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic()) && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether `s` is a valid object or field API name (`Account`, `Pendo_Id__c`); no dots.
#[must_use]
pub fn is_valid_name(s: &str) -> bool {
    is_simple_ident(s)
}

/// Whether `s` is a valid field path (`Name`, `Account.Owner.Email`).
#[must_use]
pub fn is_valid_field_path(s: &str) -> bool {
    !s.is_empty() && s.split('.').all(is_simple_ident)
}

/// Checks a field path, returning it unchanged.
///
/// # Errors
/// [`SoqlError::InvalidIdentifier`] when it is not a dotted identifier.
pub fn field(s: &str) -> Result<&str, SoqlError> {
    if is_valid_field_path(s) { Ok(s) } else { Err(SoqlError::InvalidIdentifier(s.to_owned())) }
}

/// Checks an object name (no dots), returning it unchanged.
///
/// # Errors
/// [`SoqlError::InvalidIdentifier`] when it is not an identifier.
pub fn object(s: &str) -> Result<&str, SoqlError> {
    if is_valid_name(s) { Ok(s) } else { Err(SoqlError::InvalidIdentifier(s.to_owned())) }
}

/// Relative date literals (`TODAY`, `LAST_N_DAYS:30`…).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateLiteral {
    /// `YESTERDAY`
    Yesterday,
    /// `TODAY`
    Today,
    /// `TOMORROW`
    Tomorrow,
    /// `LAST_N_DAYS:n`
    LastNDays(u32),
    /// `NEXT_N_DAYS:n`
    NextNDays(u32),
    /// `THIS_MONTH`
    ThisMonth,
    /// `LAST_MONTH`
    LastMonth,
}

impl DateLiteral {
    fn render(self) -> String {
        match self {
            Self::Yesterday => "YESTERDAY".into(),
            Self::Today => "TODAY".into(),
            Self::Tomorrow => "TOMORROW".into(),
            Self::LastNDays(n) => format!("LAST_N_DAYS:{n}"),
            Self::NextNDays(n) => format!("NEXT_N_DAYS:{n}"),
            Self::ThisMonth => "THIS_MONTH".into(),
            Self::LastMonth => "LAST_MONTH".into(),
        }
    }
}

/// A typed SOQL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// Integer.
    Int(i64),
    /// Decimal; must be finite.
    Decimal(f64),
    /// Quoted, escaped string.
    String(String),
    /// Date `2024-05-01` (unquoted).
    Date(NaiveDate),
    /// Datetime `2024-05-01T10:00:00Z` (unquoted, UTC). Sub-second precision is dropped, as
    /// SOQL datetime literals have none; for `>` filters this re-reads rather than skips rows.
    DateTime(DateTime<Utc>),
    /// Relative date.
    Relative(DateLiteral),
    /// A record ID (quoted).
    Id(SalesforceId),
}

impl Literal {
    /// The literal as SOQL text.
    ///
    /// # Errors
    /// [`SoqlError::NonFiniteNumber`] for NaN or infinite decimals.
    pub fn render(&self) -> Result<String, SoqlError> {
        Ok(match self {
            Self::Null => "null".into(),
            Self::Bool(b) => b.to_string(),
            Self::Int(i) => i.to_string(),
            Self::Decimal(f) if f.is_finite() => f.to_string(),
            Self::Decimal(f) => return Err(SoqlError::NonFiniteNumber(*f)),
            Self::String(s) => quote(s),
            Self::Date(d) => d.format("%Y-%m-%d").to_string(),
            Self::DateTime(dt) => dt.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            Self::Relative(r) => r.render(),
            Self::Id(id) => quote(id.as_str()),
        })
    }
}

macro_rules! literal_from {
    ($($t:ty => $variant:ident $(via $conv:ty)?),* $(,)?) => {
        $(impl From<$t> for Literal {
            fn from(v: $t) -> Self {
                Self::$variant((v $(as $conv)?).into())
            }
        })*
    };
}

literal_from! {
    bool => Bool,
    i64 => Int,
    i32 => Int via i64,
    u32 => Int via i64,
    f64 => Decimal,
    String => String,
    NaiveDate => Date,
    DateTime<Utc> => DateTime,
    DateLiteral => Relative,
    SalesforceId => Id,
}

impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Self::String(v.to_owned())
    }
}

impl From<&SalesforceId> for Literal {
    fn from(v: &SalesforceId) -> Self {
        Self::Id(v.clone())
    }
}

impl<T: Into<Literal>> From<Option<T>> for Literal {
    fn from(v: Option<T>) -> Self {
        v.map_or(Self::Null, Into::into)
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Self::Eq => "=",
            Self::Ne => "!=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// A `WHERE` condition tree.
#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    /// `field op value`
    Compare {
        /// Field path.
        field: String,
        /// Operator.
        op: Op,
        /// Value.
        value: Literal,
    },
    /// `field [NOT] IN (values)`
    In {
        /// Field path.
        field: String,
        /// `NOT IN` when true.
        negated: bool,
        /// Values; must be non-empty.
        values: Vec<Literal>,
    },
    /// `field LIKE 'pattern'`; the pattern keeps its `%`/`_` wildcards, see [`escape_like`].
    Like {
        /// Field path.
        field: String,
        /// LIKE pattern with wildcards; quotes and backslashes are escaped on render.
        pattern: String,
    },
    /// All must hold.
    And(Vec<Condition>),
    /// Any must hold.
    Or(Vec<Condition>),
    /// Negation.
    Not(Box<Condition>),
}

impl Condition {
    fn compare(field: &str, op: Op, value: impl Into<Literal>) -> Self {
        Self::Compare { field: field.to_owned(), op, value: value.into() }
    }

    /// `field = value` (`= null` for `None`).
    pub fn eq(field: &str, value: impl Into<Literal>) -> Self {
        Self::compare(field, Op::Eq, value)
    }
    /// `field != value`
    pub fn ne(field: &str, value: impl Into<Literal>) -> Self {
        Self::compare(field, Op::Ne, value)
    }
    /// `field < value`
    pub fn lt(field: &str, value: impl Into<Literal>) -> Self {
        Self::compare(field, Op::Lt, value)
    }
    /// `field <= value`
    pub fn le(field: &str, value: impl Into<Literal>) -> Self {
        Self::compare(field, Op::Le, value)
    }
    /// `field > value`
    pub fn gt(field: &str, value: impl Into<Literal>) -> Self {
        Self::compare(field, Op::Gt, value)
    }
    /// `field >= value`
    pub fn ge(field: &str, value: impl Into<Literal>) -> Self {
        Self::compare(field, Op::Ge, value)
    }
    /// `field = null`
    #[must_use]
    pub fn is_null(field: &str) -> Self {
        Self::compare(field, Op::Eq, Literal::Null)
    }
    /// `field IN (…)`
    pub fn in_list<I, V>(field: &str, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Literal>,
    {
        Self::In { field: field.to_owned(), negated: false, values: values.into_iter().map(Into::into).collect() }
    }
    /// `field NOT IN (…)`
    pub fn not_in<I, V>(field: &str, values: I) -> Self
    where
        I: IntoIterator<Item = V>,
        V: Into<Literal>,
    {
        Self::In { field: field.to_owned(), negated: true, values: values.into_iter().map(Into::into).collect() }
    }
    /// `field LIKE pattern`, with `%`/`_` in `pattern` acting as wildcards.
    #[must_use]
    pub fn like(field: &str, pattern: &str) -> Self {
        Self::Like { field: field.to_owned(), pattern: pattern.to_owned() }
    }
    /// `field LIKE '%text%'`, matching `text` literally.
    #[must_use]
    pub fn contains(field: &str, text: &str) -> Self {
        Self::like_raw(field, format!("%{}%", escape_like_wildcards(text)))
    }
    /// `field LIKE 'text%'`, matching `text` literally.
    #[must_use]
    pub fn starts_with(field: &str, text: &str) -> Self {
        Self::like_raw(field, format!("{}%", escape_like_wildcards(text)))
    }
    fn like_raw(field: &str, pattern: String) -> Self {
        Self::Like { field: field.to_owned(), pattern }
    }
    /// `(self AND other)`
    #[must_use]
    pub fn and(self, other: Condition) -> Self {
        match self {
            Self::And(mut v) => {
                v.push(other);
                Self::And(v)
            }
            first => Self::And(vec![first, other]),
        }
    }
    /// `(self OR other)`
    #[must_use]
    pub fn or(self, other: Condition) -> Self {
        match self {
            Self::Or(mut v) => {
                v.push(other);
                Self::Or(v)
            }
            first => Self::Or(vec![first, other]),
        }
    }
    /// `(NOT self)`
    #[must_use]
    pub fn negate(self) -> Self {
        Self::Not(Box::new(self))
    }

    /// The condition as SOQL text.
    ///
    /// # Errors
    /// Any [`SoqlError`] from names, numbers or empty lists.
    pub fn render(&self) -> Result<String, SoqlError> {
        let mut out = String::new();
        self.render_into(&mut out)?;
        Ok(out)
    }

    fn render_into(&self, out: &mut String) -> Result<(), SoqlError> {
        match self {
            Self::Compare { field: f, op, value } => {
                let _ = write!(out, "{} {} {}", field(f)?, op.as_str(), value.render()?);
            }
            Self::In { field: f, negated, values } => {
                if values.is_empty() {
                    return Err(SoqlError::EmptyInList(f.clone()));
                }
                let rendered = values.iter().map(Literal::render).collect::<Result<Vec<_>, _>>()?;
                let kw = if *negated { "NOT IN" } else { "IN" };
                let _ = write!(out, "{} {kw} ({})", field(f)?, rendered.join(", "));
            }
            Self::Like { field: f, pattern } => {
                // The pattern's own `\%`/`\_` escapes must survive, so only quote-breaking
                // characters are escaped here; a lone backslash is doubled unless it already
                // escapes a wildcard.
                let _ = write!(out, "{} LIKE '{}'", field(f)?, escape_like_pattern(pattern));
            }
            Self::And(items) | Self::Or(items) => {
                if items.is_empty() {
                    return Err(SoqlError::EmptyGroup);
                }
                let joiner = if matches!(self, Self::And(_)) { " AND " } else { " OR " };
                out.push('(');
                for (i, c) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(joiner);
                    }
                    c.render_into(out)?;
                }
                out.push(')');
            }
            Self::Not(inner) => {
                out.push_str("(NOT ");
                inner.render_into(out)?;
                out.push(')');
            }
        }
        Ok(())
    }
}

/// Escapes only `%` and `_` with a backslash marker that [`escape_like_pattern`] keeps.
fn escape_like_wildcards(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            other => out.push(other),
        }
    }
    out
}

/// Escapes a LIKE pattern for the quoted string: `\%`, `\_` and `\\` pass through as escapes; a
/// backslash before anything else is doubled; everything else as [`escape_str`].
fn escape_like_pattern(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 2);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.peek() {
                Some('%' | '_' | '\\') => {
                    out.push('\\');
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                }
                _ => out.push_str("\\\\"),
            }
        } else {
            push_escaped(&mut out, c);
        }
    }
    out
}

/// Sort direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// `ASC`
    Asc,
    /// `DESC`
    Desc,
}

/// Salesforce's limit on nested parent-to-child subqueries (from API v58.0; one level before).
pub const MAX_CHILD_LEVELS: usize = 5;

/// A `SELECT … FROM … [WHERE …] [ORDER BY …] [LIMIT n] [OFFSET n]` builder, with optional
/// parent-to-child subqueries in the SELECT list (nested up to [`MAX_CHILD_LEVELS`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SoqlQuery {
    fields: Vec<String>,
    children: Vec<SoqlQuery>,
    from: String,
    filter: Option<Condition>,
    order_by: Vec<(String, Order)>,
    limit: Option<u32>,
    offset: Option<u32>,
}

impl SoqlQuery {
    /// Starts a query on `object` selecting `fields`.
    pub fn select<I, S>(fields: I, object: &str) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            fields: fields.into_iter().map(Into::into).collect(),
            children: Vec::new(),
            from: object.to_owned(),
            filter: None,
            order_by: Vec::new(),
            limit: None,
            offset: None,
        }
    }

    /// Levels of parent-to-child subqueries below this query.
    fn depth(&self) -> usize {
        self.children.iter().map(|c| 1 + c.depth()).max().unwrap_or(0)
    }

    /// Adds a parent-to-child subquery: `sub` selects from a child relationship name
    /// (`SoqlQuery::select(["LastName"], "Contacts")`), with its own filter, order and limit. Each
    /// row then carries that relationship's children (see [`crate::Children`]).
    #[must_use]
    pub fn with_children(mut self, sub: SoqlQuery) -> Self {
        self.children.push(sub);
        self
    }

    /// Adds a condition (ANDed with any earlier one).
    #[must_use]
    pub fn filter(mut self, condition: Condition) -> Self {
        self.filter = Some(match self.filter.take() {
            Some(existing) => existing.and(condition),
            None => condition,
        });
        self
    }

    /// Appends a sort key.
    #[must_use]
    pub fn order_by(mut self, field: &str, order: Order) -> Self {
        self.order_by.push((field.to_owned(), order));
        self
    }

    /// `LIMIT n`
    #[must_use]
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// `OFFSET n`
    #[must_use]
    pub fn offset(mut self, n: u32) -> Self {
        self.offset = Some(n);
        self
    }

    /// The query text.
    ///
    /// # Errors
    /// Any [`SoqlError`] from names, values or an empty field list.
    pub fn build(&self) -> Result<String, SoqlError> {
        if self.fields.is_empty() {
            return Err(SoqlError::NoFields);
        }
        let mut fields = self.fields.iter().map(|f| field(f).map(str::to_owned)).collect::<Result<Vec<_>, _>>()?;
        if self.depth() > MAX_CHILD_LEVELS {
            return Err(SoqlError::InvalidSubquery(self.from.clone(), "subqueries nest at most five levels"));
        }
        for sub in &self.children {
            // SOQL allows no OFFSET inside a subquery.
            if sub.offset.is_some() {
                return Err(SoqlError::InvalidSubquery(sub.from.clone(), "OFFSET is not allowed in a subquery"));
            }
            fields.push(format!("({})", sub.build()?));
        }
        let mut out = format!("SELECT {} FROM {}", fields.join(", "), object(&self.from)?);
        if let Some(filter) = &self.filter {
            out.push_str(" WHERE ");
            filter.render_into(&mut out)?;
        }
        if !self.order_by.is_empty() {
            let keys = self
                .order_by
                .iter()
                .map(|(f, o)| {
                    field(f).map(|f| match o {
                        Order::Asc => format!("{f} ASC"),
                        Order::Desc => format!("{f} DESC"),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let _ = write!(out, " ORDER BY {}", keys.join(", "));
        }
        if let Some(n) = self.limit {
            let _ = write!(out, " LIMIT {n}");
        }
        if let Some(n) = self.offset {
            let _ = write!(out, " OFFSET {n}");
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reference un-escaper: reads a quoted SOQL string starting at `s[0] == '\''` and returns
    /// the decoded value and how many bytes the literal spans, or `None` if unterminated or it
    /// contains an escape SOQL does not define.
    fn unquote(s: &str, like: bool) -> Option<(String, usize)> {
        let mut chars = s.char_indices();
        if chars.next()?.1 != '\'' {
            return None;
        }
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '\'' => return Some((out, i + 1)),
                '\\' => {
                    let (_, e) = chars.next()?;
                    out.push(match e {
                        'n' | 'N' => '\n',
                        'r' | 'R' => '\r',
                        't' | 'T' => '\t',
                        'b' | 'B' => '\u{8}',
                        'f' | 'F' => '\u{c}',
                        '"' => '"',
                        '\'' => '\'',
                        '\\' => '\\',
                        '%' | '_' if like => e,
                        _ => return None,
                    });
                }
                other => out.push(other),
            }
        }
        None
    }

    fn hostile() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            "[\\\\'\"\n\r\t\u{8}\u{c}%_ a-zA-Z;()=]{0,40}",
            Just("' OR Name != '".to_owned()),
            Just("\\' OR Id != null OR Name = '\\".to_owned()),
            Just("x\\".to_owned()),
        ]
    }

    #[test]
    fn escapes_every_special_character() {
        assert_eq!(escape_str("a'b"), "a\\'b");
        assert_eq!(escape_str("a\\b"), "a\\\\b");
        assert_eq!(escape_str("\"\n\r\t\u{8}\u{c}"), "\\\"\\n\\r\\t\\b\\f");
        assert_eq!(quote("O'Brien"), "'O\\'Brien'");
        assert_eq!(escape_like("50%_off"), "50\\%\\_off");
    }

    #[test]
    fn builds_a_query() {
        let q = SoqlQuery::select(["Id", "Name", "Owner.Email"], "Account")
            .filter(Condition::eq("Name", "O'Brien & Co"))
            .filter(Condition::gt(
                "SystemModstamp",
                DateTime::parse_from_rfc3339("2024-01-01T00:00:00.750Z").unwrap().with_timezone(&Utc),
            ))
            .filter(Condition::in_list("Type", ["Customer", "Partner"]).or(Condition::is_null("Type")))
            .order_by("Name", Order::Asc)
            .limit(10)
            .build()
            .unwrap();
        assert_eq!(
            q,
            "SELECT Id, Name, Owner.Email FROM Account WHERE (Name = 'O\\'Brien & Co' AND \
             SystemModstamp > 2024-01-01T00:00:00Z AND (Type IN ('Customer', 'Partner') OR Type = null)) \
             ORDER BY Name ASC LIMIT 10"
        );
    }

    #[test]
    fn builds_parent_to_child_subqueries() {
        let contacts = SoqlQuery::select(["LastName", "Email"], "Contacts")
            .filter(Condition::ne("Email", Literal::Null))
            .order_by("LastName", Order::Asc)
            .limit(5);
        let q = SoqlQuery::select(["Id", "Name"], "Account")
            .with_children(contacts.clone())
            .with_children(SoqlQuery::select(["Name"], "Opportunities"))
            .filter(Condition::eq("Name", "Acme"))
            .build()
            .unwrap();
        assert_eq!(
            q,
            "SELECT Id, Name, (SELECT LastName, Email FROM Contacts WHERE Email != null ORDER BY LastName ASC LIMIT 5), \
             (SELECT Name FROM Opportunities) FROM Account WHERE Name = 'Acme'"
        );
        let offset = SoqlQuery::select(["Id"], "Account").with_children(contacts.clone().offset(1)).build();
        assert!(matches!(offset, Err(SoqlError::InvalidSubquery(..))));
        let two = SoqlQuery::select(["Id"], "Account")
            .with_children(SoqlQuery::select(["Id"], "Contacts").with_children(SoqlQuery::select(["Subject"], "Cases")))
            .build()
            .unwrap();
        assert_eq!(two, "SELECT Id, (SELECT Id, (SELECT Subject FROM Cases) FROM Contacts) FROM Account");
        let nest = |levels: usize| {
            let mut q = SoqlQuery::select(["Name"], "ChildAccounts");
            for _ in 1..levels {
                q = SoqlQuery::select(["Name"], "ChildAccounts").with_children(q);
            }
            SoqlQuery::select(["Name"], "Account").with_children(q).build()
        };
        assert!(nest(MAX_CHILD_LEVELS).is_ok());
        assert!(matches!(nest(MAX_CHILD_LEVELS + 1), Err(SoqlError::InvalidSubquery(..))));
        let bad = SoqlQuery::select(["Id"], "Account").with_children(SoqlQuery::select(["Id"], "Con tacts")).build();
        assert!(matches!(bad, Err(SoqlError::InvalidIdentifier(_))));
    }

    #[test]
    fn typed_literals() {
        let d = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        assert_eq!(Literal::from(d).render().unwrap(), "2024-05-01");
        assert_eq!(Literal::from(true).render().unwrap(), "true");
        assert_eq!(Literal::from(-3i32).render().unwrap(), "-3");
        assert_eq!(Literal::from(1.5f64).render().unwrap(), "1.5");
        assert_eq!(Literal::from(1e21f64).render().unwrap(), "1000000000000000000000");
        assert!(Literal::from(f64::NAN).render().is_err());
        assert_eq!(Literal::from(None::<&str>).render().unwrap(), "null");
        assert_eq!(Literal::from(DateLiteral::LastNDays(30)).render().unwrap(), "LAST_N_DAYS:30");
        let id = SalesforceId::parse("001R00000064wdt").unwrap();
        assert_eq!(Literal::from(&id).render().unwrap(), "'001R00000064wdtIAA'");
    }

    #[test]
    fn rejects_bad_identifiers() {
        for bad in ["", "1Name", "Name; DELETE", "Name__c'", "a..b", ".a", "a.", "Na me", "Námé"] {
            assert!(!is_valid_field_path(bad), "{bad:?}");
            let q = SoqlQuery::select([bad], "Account").build();
            assert!(matches!(q, Err(SoqlError::InvalidIdentifier(_))), "{bad:?}");
        }
        assert!(is_valid_field_path("Account.Owner.Pendo_Id__c"));
        assert!(!is_valid_name("Account.Owner"));
        assert!(SoqlQuery::select(["Id"], "Account x").build().is_err());
        assert!(Condition::eq("Id = '1' OR Id", 1).render().is_err());
        assert!(Condition::in_list("Id", Vec::<&str>::new()).render().is_err());
        assert!(SoqlQuery::select(Vec::<String>::new(), "Account").build().is_err());
    }

    #[test]
    fn like_patterns() {
        assert_eq!(Condition::contains("Name", "50%_a'\\").render().unwrap(), "Name LIKE '%50\\%\\_a\\'\\\\%'");
        assert_eq!(Condition::like("Name", "Acme%").render().unwrap(), "Name LIKE 'Acme%'");
        // A lone trailing backslash must not escape the closing quote.
        assert_eq!(Condition::like("Name", "x\\").render().unwrap(), "Name LIKE 'x\\\\'");
    }

    proptest! {
        #[test]
        fn quoted_literal_round_trips(s in hostile()) {
            let q = quote(&s);
            let (decoded, used) = unquote(&q, false).expect("literal must parse");
            prop_assert_eq!(&decoded, &s);
            // The literal ends exactly at its last character: nothing leaks past the quote.
            prop_assert_eq!(used, q.len());
        }

        #[test]
        fn like_escape_round_trips(s in hostile()) {
            let q = format!("'{}'", escape_like(&s));
            let (decoded, used) = unquote(&q, true).expect("literal must parse");
            prop_assert_eq!(decoded, s);
            prop_assert_eq!(used, q.len());
        }

        #[test]
        fn contains_condition_stays_one_literal(s in hostile()) {
            let text = Condition::contains("Name", &s).render().unwrap();
            let rest = text.strip_prefix("Name LIKE ").unwrap();
            let (decoded, used) = unquote(rest, true).expect("literal must parse");
            prop_assert_eq!(used, rest.len());
            prop_assert_eq!(decoded, format!("%{s}%"));
        }

        #[test]
        fn raw_like_pattern_never_breaks_out(s in hostile()) {
            let text = Condition::like("Name", &s).render().unwrap();
            let rest = text.strip_prefix("Name LIKE ").unwrap();
            let (_, used) = unquote(rest, true).expect("literal must parse");
            prop_assert_eq!(used, rest.len());
        }

        #[test]
        fn builder_where_value_is_one_literal(s in hostile()) {
            let q = SoqlQuery::select(["Id"], "Contact")
                .filter(Condition::eq("Email", s.as_str()))
                .build()
                .unwrap();
            let rest = q.strip_prefix("SELECT Id FROM Contact WHERE Email = ").unwrap();
            let (decoded, used) = unquote(rest, false).expect("literal must parse");
            prop_assert_eq!(decoded, s);
            prop_assert_eq!(used, rest.len());
        }
    }
}
