//! The parsed, not yet schema-checked, form of a query. Names are kept as written (with their
//! positions) so that the planner can report unknown fields exactly where they appear.

use chrono::{DateTime, NaiveDate, Utc};

use super::lexer::{CmpOp, StrLit};

/// A field path as written: `Name`, `Owner.Email`, `Account.Owner.Name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path {
    pub parts: Vec<String>,
    /// Byte offset of the path's first character.
    pub pos: usize,
}

impl Path {
    pub fn text(&self) -> String {
        self.parts.join(".")
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Select {
    /// `SELECT COUNT()`: only the number of matching rows is answered.
    Count,
    Fields(Vec<Path>),
}

/// The relative date literals that are implemented; each names a range of whole days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFn {
    Today,
    Yesterday,
    Tomorrow,
    LastNDays(u32),
    NextNDays(u32),
    NDaysAgo(u32),
    ThisWeek,
    LastWeek,
    NextWeek,
    ThisMonth,
    LastMonth,
    NextMonth,
    ThisYear,
    LastYear,
    NextYear,
}

#[derive(Debug, Clone, PartialEq)]
pub enum LitKind {
    Str(StrLit),
    /// Kept as written; parsed as f64 once the field is known to be numeric.
    Num(String),
    Bool(bool),
    Null,
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    DateFn(DateFn),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Literal {
    pub kind: LitKind,
    pub pos: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
    Cmp { path: Path, op: CmpOp, value: Literal },
    In { path: Path, negated: bool, values: Vec<Literal> },
    Like { path: Path, pattern: Literal },
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub path: Path,
    pub descending: bool,
    /// `None` is Salesforce's default: nulls first ascending, last descending.
    pub nulls_first: Option<bool>,
}

/// A parent-to-child subquery in the SELECT list: `(SELECT LastName FROM Contacts WHERE ...)`.
#[derive(Debug, Clone, PartialEq)]
pub struct SubQuery {
    pub fields: Vec<Path>,
    /// Grandchildren: subqueries inside this one, with the number of plain fields before each.
    pub subqueries: Vec<(usize, SubQuery)>,
    /// The child relationship name as written (`Contacts`).
    pub relationship: String,
    pub relationship_pos: usize,
    pub filter: Option<Cond>,
    pub order: Vec<OrderItem>,
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ast {
    pub select: Select,
    /// Subqueries with the number of plain fields written before each (for column order).
    pub subqueries: Vec<(usize, SubQuery)>,
    pub object: String,
    pub object_pos: usize,
    pub filter: Option<Cond>,
    pub order: Vec<OrderItem>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
    pub offset_pos: usize,
}
