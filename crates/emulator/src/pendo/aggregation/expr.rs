//! The aggregation expression language used by `filter`, `eval`, `select`, group arguments and
//! `timeSeries.first/last`: literals (numbers, `"double"` strings with `\"`/`\\` escapes,
//! `` `backtick` `` strings, true/false/null), dotted paths with `[n]` indexing, `! - * / % + -`,
//! comparisons, `&&`/`||`, parentheses and a small function library (`now()`,
//! `expandAppIds("*")`, `hash`, `isNull`, `contains`, `date`, `dateAdd`, ...).
//!
//! Parsing never panics: every malformed input is a [`ParseError`] with a position, which the
//! handler turns into a 400.

use std::fmt;

use super::super::val::Val;

#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub pos: usize,
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.msg, self.pos)
    }
}

/// Row columns that have a fast path on event rows; anything else is `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Col {
    VisitorId,
    AccountId,
    AccountIds,
    AppId,
    Day,
    Hour,
    NumEvents,
    NumMinutes,
    PageId,
    FeatureId,
    TrackTypeId,
    RemoteIp,
    Server,
    ServerName,
    UserAgent,
    LastTime,
    Parameters,
    Properties,
    GuideId,
    GuideStepId,
    Type,
    BrowserTime,
    GuideTimestamp,
    PollId,
    PollResponse,
    Url,
    Country,
    Region,
    Latitude,
    Longitude,
    LoadTime,
    Other,
}

impl Col {
    pub fn of(name: &str) -> Col {
        match name {
            "visitorId" => Col::VisitorId,
            "accountId" => Col::AccountId,
            "accountIds" => Col::AccountIds,
            "appId" => Col::AppId,
            "day" => Col::Day,
            "hour" => Col::Hour,
            "numEvents" => Col::NumEvents,
            "numMinutes" => Col::NumMinutes,
            "pageId" => Col::PageId,
            "featureId" => Col::FeatureId,
            "trackTypeId" => Col::TrackTypeId,
            "remoteIp" => Col::RemoteIp,
            "server" => Col::Server,
            "serverName" => Col::ServerName,
            "userAgent" => Col::UserAgent,
            "lastTime" => Col::LastTime,
            "parameters" => Col::Parameters,
            "properties" => Col::Properties,
            "guideId" => Col::GuideId,
            "guideStepId" => Col::GuideStepId,
            "type" => Col::Type,
            "browserTime" => Col::BrowserTime,
            "guideTimestamp" => Col::GuideTimestamp,
            "pollId" => Col::PollId,
            "pollResponse" => Col::PollResponse,
            "url" => Col::Url,
            "country" => Col::Country,
            "region" => Col::Region,
            "latitude" => Col::Latitude,
            "longitude" => Col::Longitude,
            "loadTime" => Col::LoadTime,
            _ => Col::Other,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Seg {
    Key(String),
    Index(i64),
}

/// A field reference: `head` (with its fast-path column) then keys and indexes.
#[derive(Clone, Debug, PartialEq)]
pub struct Path {
    pub head: String,
    pub col: Col,
    pub rest: Vec<Seg>,
}

impl Path {
    /// Parses a plain dotted path (`metadata.auto.id`, `polls[0].id`).
    pub fn parse(s: &str) -> Result<Path, ParseError> {
        match parse(s)? {
            Expr::Path(p) => Ok(p),
            _ => Err(ParseError { pos: 0, msg: format!("expected a field path, got {s:?}") }),
        }
    }

    /// Walks the tail of the path below an already-resolved head value.
    pub fn walk(&self, mut v: Val) -> Val {
        for s in &self.rest {
            v = match s {
                Seg::Key(k) => v.field(k).clone(),
                Seg::Index(i) => v.at(*i).clone(),
            };
        }
        v
    }

    pub fn dotted(&self) -> String {
        let mut s = self.head.clone();
        for seg in &self.rest {
            match seg {
                Seg::Key(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                Seg::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Func {
    Now,
    ExpandAppIds,
    Hash,
    IsNull,
    IsNotNull,
    Contains,
    Len,
    Date,
    DateAdd,
    StartOfDay,
    If,
    Lower,
    Upper,
    Round,
    Floor,
    Abs,
    Min,
    Max,
}

impl Func {
    fn of(name: &str) -> Option<(Func, usize, usize)> {
        // (function, min args, max args)
        Some(match name {
            "now" => (Func::Now, 0, 0),
            "expandAppIds" => (Func::ExpandAppIds, 1, 1),
            "hash" => (Func::Hash, 1, 1),
            "isNull" => (Func::IsNull, 1, 1),
            "isNotNull" => (Func::IsNotNull, 1, 1),
            "contains" => (Func::Contains, 2, 2),
            "len" => (Func::Len, 1, 1),
            "date" => (Func::Date, 3, 6),
            "dateAdd" => (Func::DateAdd, 3, 3),
            "startOfDay" => (Func::StartOfDay, 1, 1),
            "if" => (Func::If, 3, 3),
            "lower" => (Func::Lower, 1, 1),
            "upper" => (Func::Upper, 1, 1),
            "round" => (Func::Round, 1, 1),
            "floor" => (Func::Floor, 1, 1),
            "abs" => (Func::Abs, 1, 1),
            "min" => (Func::Min, 2, 2),
            "max" => (Func::Max, 2, 2),
            _ => return None,
        })
    }
}

#[derive(Clone, Debug)]
pub enum Expr {
    Lit(Val),
    Path(Path),
    Not(Box<Expr>),
    Neg(Box<Expr>),
    Bin(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// Whether every path the expression reads meets `ok`.
    pub fn reads_only(&self, ok: &impl Fn(&Path) -> bool) -> bool {
        match self {
            Expr::Lit(_) => true,
            Expr::Path(p) => ok(p),
            Expr::Not(e) | Expr::Neg(e) => e.reads_only(ok),
            Expr::Bin(_, a, b) => a.reads_only(ok) && b.reads_only(ok),
            Expr::Call(_, args) => args.iter().all(|a| a.reads_only(ok)),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Int(i64),
    Float(f64),
    Str(String),
    Ident(String),
    Op(&'static str),
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    Dot,
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |pos: usize, msg: &str| ParseError { pos, msg: msg.to_string() };
    while i < b.len() {
        let c = b[i];
        let start = i;
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'(' => {
                out.push((start, Tok::LParen));
                i += 1
            }
            b')' => {
                out.push((start, Tok::RParen));
                i += 1
            }
            b'[' => {
                out.push((start, Tok::LBrack));
                i += 1
            }
            b']' => {
                out.push((start, Tok::RBrack));
                i += 1
            }
            b',' => {
                out.push((start, Tok::Comma));
                i += 1
            }
            b'.' if !b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push((start, Tok::Dot));
                i += 1
            }
            b'"' => {
                i += 1;
                let mut s = String::new();
                let mut closed = false;
                while i < b.len() {
                    match b[i] {
                        b'\\' => {
                            let Some(&n) = b.get(i + 1) else { break };
                            match n {
                                b'"' => s.push('"'),
                                b'\\' => s.push('\\'),
                                b'n' => s.push('\n'),
                                b't' => s.push('\t'),
                                b'/' => s.push('/'),
                                _ => return Err(err(i, "invalid escape in string literal")),
                            }
                            i += 2;
                        }
                        b'"' => {
                            closed = true;
                            i += 1;
                            break;
                        }
                        _ => {
                            // Copy one UTF-8 character.
                            let ch_len = utf8_len(b[i]);
                            let end = (i + ch_len).min(b.len());
                            s.push_str(src.get(i..end).ok_or_else(|| err(i, "invalid UTF-8"))?);
                            i = end;
                        }
                    }
                }
                if !closed {
                    return Err(err(start, "unterminated string literal"));
                }
                out.push((start, Tok::Str(s)));
            }
            b'`' => {
                let rest = src.get(i + 1..).unwrap_or("");
                let Some(end) = rest.find('`') else {
                    return Err(err(start, "unterminated backtick string"));
                };
                out.push((start, Tok::Str(rest[..end].to_string())));
                i += end + 2;
            }
            b'0'..=b'9' | b'.' => {
                while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e' || b[i] == b'E') {
                    if (b[i] == b'e' || b[i] == b'E') && matches!(b.get(i + 1), Some(b'-' | b'+')) {
                        i += 1;
                    }
                    i += 1;
                }
                let text = &src[start..i];
                if text.contains(['.', 'e', 'E']) {
                    let f: f64 = text.parse().map_err(|_| err(start, "invalid number"))?;
                    out.push((start, Tok::Float(f)));
                } else {
                    match text.parse::<i64>() {
                        Ok(n) => out.push((start, Tok::Int(n))),
                        Err(_) => {
                            let f: f64 = text.parse().map_err(|_| err(start, "invalid number"))?;
                            out.push((start, Tok::Float(f)));
                        }
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == b'_' || c == b'$' => {
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b'$') {
                    i += 1;
                }
                out.push((start, Tok::Ident(src[start..i].to_string())));
            }
            _ => {
                let two = src.get(i..i + 2).unwrap_or("");
                let op: &'static str = match two {
                    "==" => "==",
                    "!=" => "!=",
                    "<=" => "<=",
                    ">=" => ">=",
                    "&&" => "&&",
                    "||" => "||",
                    _ => match c {
                        b'<' => "<",
                        b'>' => ">",
                        b'!' => "!",
                        b'+' => "+",
                        b'-' => "-",
                        b'*' => "*",
                        b'/' => "/",
                        b'%' => "%",
                        b'=' => "=",
                        _ => {
                            let ch = src[i..].chars().next().unwrap_or('?');
                            return Err(err(i, &format!("unexpected character {ch:?}")));
                        }
                    },
                };
                i += op.len();
                // A lone `=` is accepted as equality: people write it, and rejecting it would be
                // a guess about the real parser either way.
                out.push((start, Tok::Op(if op == "=" { "==" } else { op })));
            }
        }
    }
    Ok(out)
}

fn utf8_len(first: u8) -> usize {
    match first {
        0x00..=0x7F => 1,
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        _ => 4,
    }
}

// ------------------------------------------------------------------------------------------
// Parser (precedence climbing)

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    depth: usize,
}

const MAX_DEPTH: usize = 200;

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src)?;
    let mut p = Parser { toks, pos: 0, end: src.len(), depth: 0 };
    let e = p.expr(0)?;
    if let Some((at, t)) = p.toks.get(p.pos) {
        return Err(ParseError { pos: *at, msg: format!("unexpected {t:?} after expression") });
    }
    Ok(e)
}

fn binop(t: &Tok) -> Option<(BinOp, u8)> {
    let Tok::Op(o) = t else { return None };
    Some(match *o {
        "||" => (BinOp::Or, 1),
        "&&" => (BinOp::And, 2),
        "==" => (BinOp::Eq, 3),
        "!=" => (BinOp::Ne, 3),
        "<" => (BinOp::Lt, 4),
        "<=" => (BinOp::Le, 4),
        ">" => (BinOp::Gt, 4),
        ">=" => (BinOp::Ge, 4),
        "+" => (BinOp::Add, 5),
        "-" => (BinOp::Sub, 5),
        "*" => (BinOp::Mul, 6),
        "/" => (BinOp::Div, 6),
        "%" => (BinOp::Rem, 6),
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.end, |(p, _)| *p)
    }
    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError { pos: self.at(), msg: msg.into() })
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }

    fn expr(&mut self, min_prec: u8) -> Result<Expr, ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = self.peek().and_then(binop) {
            if prec < min_prec {
                break;
            }
            self.pos += 1;
            let rhs = self.expr(prec + 1)?;
            lhs = Expr::Bin(op, Box::new(lhs), Box::new(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        match self.peek() {
            Some(Tok::Op("!")) => {
                self.pos += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return self.err("expression nested too deeply");
                }
                let e = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(e)))
            }
            Some(Tok::Op("-")) => {
                self.pos += 1;
                self.depth += 1;
                if self.depth > MAX_DEPTH {
                    return self.err("expression nested too deeply");
                }
                let e = self.unary()?;
                self.depth -= 1;
                Ok(match e {
                    Expr::Lit(Val::Int(i)) => Expr::Lit(Val::Int(i.wrapping_neg())),
                    Expr::Lit(Val::Float(f)) => Expr::Lit(Val::Float(-f)),
                    e => Expr::Neg(Box::new(e)),
                })
            }
            _ => self.primary(),
        }
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        let Some(t) = self.next() else {
            return self.err("unexpected end of expression");
        };
        match t {
            Tok::Int(i) => Ok(Expr::Lit(Val::Int(i))),
            Tok::Float(f) => Ok(Expr::Lit(Val::Float(f))),
            Tok::Str(s) => Ok(Expr::Lit(Val::from(s))),
            Tok::LParen => {
                let e = self.expr(0)?;
                match self.next() {
                    Some(Tok::RParen) => Ok(e),
                    _ => {
                        self.pos = self.pos.saturating_sub(1);
                        self.err("expected ')'")
                    }
                }
            }
            Tok::Ident(name) => {
                if self.peek() == Some(&Tok::LParen) {
                    self.pos += 1;
                    let Some((func, min, max)) = Func::of(&name) else {
                        self.pos -= 2;
                        return self.err(format!("unknown function {name}()"));
                    };
                    let mut args = Vec::new();
                    if self.peek() != Some(&Tok::RParen) {
                        loop {
                            args.push(self.expr(0)?);
                            match self.next() {
                                Some(Tok::Comma) => continue,
                                Some(Tok::RParen) => break,
                                _ => {
                                    self.pos = self.pos.saturating_sub(1);
                                    return self.err("expected ',' or ')' in argument list");
                                }
                            }
                        }
                    } else {
                        self.pos += 1;
                    }
                    if args.len() < min || args.len() > max {
                        return self.err(format!("{name}() takes {min}..={max} arguments, got {}", args.len()));
                    }
                    return Ok(Expr::Call(func, args));
                }
                match name.as_str() {
                    "true" => return Ok(Expr::Lit(Val::Bool(true))),
                    "false" => return Ok(Expr::Lit(Val::Bool(false))),
                    "null" => return Ok(Expr::Lit(Val::Null)),
                    _ => {}
                }
                let mut path = Path { col: Col::of(&name), head: name, rest: Vec::new() };
                loop {
                    match self.peek() {
                        Some(Tok::Dot) => {
                            self.pos += 1;
                            match self.next() {
                                Some(Tok::Ident(k)) => path.rest.push(Seg::Key(k)),
                                Some(Tok::Int(i)) => path.rest.push(Seg::Key(i.to_string())),
                                _ => {
                                    self.pos = self.pos.saturating_sub(1);
                                    return self.err("expected a field name after '.'");
                                }
                            }
                        }
                        Some(Tok::LBrack) => {
                            self.pos += 1;
                            let seg = match self.next() {
                                Some(Tok::Int(i)) => Seg::Index(i),
                                Some(Tok::Op("-")) => match self.next() {
                                    Some(Tok::Int(i)) => Seg::Index(-i),
                                    _ => return self.err("expected an index"),
                                },
                                Some(Tok::Str(s)) => Seg::Key(s),
                                _ => {
                                    self.pos = self.pos.saturating_sub(1);
                                    return self.err("expected an integer index or a string key");
                                }
                            };
                            if self.next() != Some(Tok::RBrack) {
                                self.pos = self.pos.saturating_sub(1);
                                return self.err("expected ']'");
                            }
                            path.rest.push(seg);
                        }
                        _ => break,
                    }
                }
                Ok(Expr::Path(path))
            }
            other => {
                self.pos -= 1;
                self.err(format!("unexpected {other:?}"))
            }
        }
    }
}

// ------------------------------------------------------------------------------------------
// Evaluation

/// What an expression needs from the world besides the row.
pub struct Env<'a> {
    pub now: i64,
    /// Subscription timezone offset in ms (added to UTC to get local time).
    pub tz_ms: i64,
    pub app_ids: &'a [i64],
}

/// Field lookup on whatever a row is.
pub trait Fields {
    fn get(&self, path: &Path) -> Val;
}

/// An empty row, for expressions evaluated outside a pipeline (`timeSeries.first`).
pub struct NoFields;
impl Fields for NoFields {
    fn get(&self, _: &Path) -> Val {
        Val::Null
    }
}

pub fn truthy(v: &Val) -> bool {
    match v {
        Val::Bool(b) => *b,
        Val::Null => false,
        Val::Int(i) => *i != 0,
        Val::Float(f) => *f != 0.0,
        Val::Str(s) => !s.is_empty(),
        Val::Arr(_) | Val::Obj(_) => true,
    }
}

fn cmp(op: BinOp, a: &Val, b: &Val) -> bool {
    use std::cmp::Ordering::*;
    let ord = match (a, b) {
        (Val::Str(x), Val::Str(y)) => x.as_ref().cmp(y.as_ref()),
        (Val::Int(x), Val::Int(y)) => x.cmp(y),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => match x.partial_cmp(&y) {
                Some(o) => o,
                None => return false,
            },
            // Mixed or null operands never order: rows with a missing key drop out of range filters.
            _ => return false,
        },
    };
    match op {
        BinOp::Lt => ord == Less,
        BinOp::Le => ord != Greater,
        BinOp::Gt => ord == Greater,
        BinOp::Ge => ord != Less,
        _ => false,
    }
}

fn arith(op: BinOp, a: Val, b: Val) -> Val {
    if let (BinOp::Add, Val::Str(x), Val::Str(y)) = (op, &a, &b) {
        return Val::from(format!("{x}{y}"));
    }
    if let (Val::Int(x), Val::Int(y)) = (&a, &b) {
        let (x, y) = (*x, *y);
        let r = match op {
            BinOp::Add => x.checked_add(y),
            BinOp::Sub => x.checked_sub(y),
            BinOp::Mul => x.checked_mul(y),
            BinOp::Div => {
                if y == 0 {
                    return Val::Null;
                }
                if x % y == 0 {
                    Some(x / y)
                } else {
                    return Val::Float(x as f64 / y as f64);
                }
            }
            BinOp::Rem => {
                if y == 0 {
                    return Val::Null;
                }
                x.checked_rem(y)
            }
            _ => None,
        };
        if let Some(r) = r {
            return Val::Int(r);
        }
    }
    let (Some(x), Some(y)) = (a.as_f64(), b.as_f64()) else {
        return Val::Null;
    };
    let r = match op {
        BinOp::Add => x + y,
        BinOp::Sub => x - y,
        BinOp::Mul => x * y,
        BinOp::Div if y != 0.0 => x / y,
        BinOp::Rem if y != 0.0 => x % y,
        _ => return Val::Null,
    };
    if r.is_finite() { Val::Float(r) } else { Val::Null }
}

fn fnv(s: &str) -> i64 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    i64::from(h)
}

fn local_date_ms(env: &Env, y: i64, m: i64, d: i64, h: i64, mi: i64, s: i64) -> Val {
    let date = i32::try_from(y)
        .ok()
        .zip(u32::try_from(m).ok())
        .zip(u32::try_from(d).ok())
        .and_then(|((y, m), d)| chrono::NaiveDate::from_ymd_opt(y, m, d));
    let Some(date) = date else { return Val::Null };
    let Some(dt) = date.and_hms_opt(0, 0, 0) else {
        return Val::Null;
    };
    let ms = h.checked_mul(3_600_000).zip(mi.checked_mul(60_000)).zip(s.checked_mul(1_000)).and_then(|((h, mi), s)| {
        dt.and_utc().timestamp_millis().checked_sub(env.tz_ms)?.checked_add(h)?.checked_add(mi)?.checked_add(s)
    });
    ms.map_or(Val::Null, Val::Int)
}

fn date_add(env: &Env, t: i64, n: i64, unit: &str) -> Val {
    let unit = unit.trim_end_matches('s');
    let step = match unit {
        "millisecond" | "ms" => 1,
        "second" => 1_000,
        "minute" => 60_000,
        "hour" => 3_600_000,
        "day" => 86_400_000,
        "week" => 7 * 86_400_000,
        "month" | "year" => {
            let months = if unit == "year" { n.saturating_mul(12) } else { n };
            let Some(local) = chrono::DateTime::from_timestamp_millis(t + env.tz_ms) else {
                return Val::Null;
            };
            let naive = local.naive_utc();
            let Ok(months32) = i32::try_from(months) else {
                return Val::Null;
            };
            let shifted = if months32 >= 0 {
                naive.checked_add_months(chrono::Months::new(months32.unsigned_abs()))
            } else {
                naive.checked_sub_months(chrono::Months::new(months32.unsigned_abs()))
            };
            return shifted.map_or(Val::Null, |d| Val::Int(d.and_utc().timestamp_millis().saturating_sub(env.tz_ms)));
        }
        _ => return Val::Null,
    };
    n.checked_mul(step).and_then(|d| t.checked_add(d)).map_or(Val::Null, Val::Int)
}

pub fn eval(e: &Expr, row: &dyn Fields, env: &Env) -> Val {
    match e {
        Expr::Lit(v) => v.clone(),
        Expr::Path(p) => row.get(p),
        Expr::Not(x) => Val::Bool(!truthy(&eval(x, row, env))),
        Expr::Neg(x) => match eval(x, row, env) {
            Val::Int(i) => i.checked_neg().map_or(Val::Null, Val::Int),
            Val::Float(f) => Val::Float(-f),
            _ => Val::Null,
        },
        Expr::Bin(op, a, b) => match op {
            BinOp::And => Val::Bool(truthy(&eval(a, row, env)) && truthy(&eval(b, row, env))),
            BinOp::Or => Val::Bool(truthy(&eval(a, row, env)) || truthy(&eval(b, row, env))),
            BinOp::Eq => Val::Bool(eval(a, row, env).loose_eq(&eval(b, row, env))),
            BinOp::Ne => Val::Bool(!eval(a, row, env).loose_eq(&eval(b, row, env))),
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                Val::Bool(cmp(*op, &eval(a, row, env), &eval(b, row, env)))
            }
            _ => arith(*op, eval(a, row, env), eval(b, row, env)),
        },
        Expr::Call(f, args) => {
            let arg = |i: usize| args.get(i).map_or(Val::Null, |a| eval(a, row, env));
            match f {
                Func::Now => Val::Int(env.now),
                Func::ExpandAppIds => Val::arr(env.app_ids.iter().map(|&a| Val::Int(a)).collect()),
                Func::Hash => match arg(0) {
                    Val::Null => Val::Null,
                    v => Val::Int(fnv(&v.to_string())),
                },
                Func::IsNull => Val::Bool(arg(0).is_null()),
                Func::IsNotNull => Val::Bool(!arg(0).is_null()),
                Func::Contains => match (arg(0), arg(1)) {
                    (Val::Str(h), Val::Str(n)) => Val::Bool(h.contains(n.as_ref())),
                    (Val::Arr(a), n) => Val::Bool(a.iter().any(|x| x.loose_eq(&n))),
                    _ => Val::Bool(false),
                },
                Func::Len => match arg(0) {
                    Val::Str(s) => Val::Int(s.chars().count() as i64),
                    Val::Arr(a) => Val::Int(a.len() as i64),
                    Val::Obj(o) => Val::Int(o.len() as i64),
                    _ => Val::Null,
                },
                Func::Date => {
                    let n: Vec<Option<i64>> =
                        (0..6).map(|i| if i < args.len() { arg(i).as_i64() } else { Some(0) }).collect();
                    match n.as_slice() {
                        [Some(y), Some(m), Some(d), Some(h), Some(mi), Some(s)] => {
                            local_date_ms(env, *y, *m, *d, *h, *mi, *s)
                        }
                        _ => Val::Null,
                    }
                }
                Func::DateAdd => match (arg(0).as_i64(), arg(1).as_i64(), arg(2)) {
                    (Some(t), Some(n), Val::Str(u)) => date_add(env, t, n, &u),
                    _ => Val::Null,
                },
                Func::StartOfDay => match arg(0).as_i64() {
                    Some(t) => Val::Int(
                        t.saturating_add(env.tz_ms)
                            .div_euclid(86_400_000)
                            .saturating_mul(86_400_000)
                            .saturating_sub(env.tz_ms),
                    ),
                    None => Val::Null,
                },
                Func::If => {
                    if truthy(&arg(0)) {
                        arg(1)
                    } else {
                        arg(2)
                    }
                }
                Func::Lower => match arg(0) {
                    Val::Str(s) => Val::from(s.to_lowercase()),
                    v => v,
                },
                Func::Upper => match arg(0) {
                    Val::Str(s) => Val::from(s.to_uppercase()),
                    v => v,
                },
                Func::Round | Func::Floor | Func::Abs => match arg(0) {
                    Val::Int(i) => {
                        if *f == Func::Abs {
                            i.checked_abs().map_or(Val::Null, Val::Int)
                        } else {
                            Val::Int(i)
                        }
                    }
                    Val::Float(x) => {
                        let r = match f {
                            Func::Round => x.round(),
                            Func::Floor => x.floor(),
                            _ => x.abs(),
                        };
                        if *f == Func::Abs {
                            Val::Float(r)
                        } else if r.abs() < 9.0e18 {
                            Val::Int(r as i64)
                        } else {
                            Val::Float(r)
                        }
                    }
                    _ => Val::Null,
                },
                Func::Min | Func::Max => {
                    let (a, b) = (arg(0), arg(1));
                    if a.is_null() {
                        return b;
                    }
                    if b.is_null() {
                        return a;
                    }
                    let less = a.cmp_total(&b) == std::cmp::Ordering::Less;
                    if (*f == Func::Min) == less { a } else { b }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    struct M(Val);
    impl Fields for M {
        fn get(&self, p: &Path) -> Val {
            p.walk(self.0.field(&p.head).clone())
        }
    }

    fn ev(src: &str, row: serde_json::Value) -> Val {
        let e = parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let env = Env { now: 1_000_000, tz_ms: 0, app_ids: &[-323232] };
        eval(&e, &M(Val::from(&row)), &env)
    }

    #[test]
    fn comparisons_and_logic() {
        let r = serde_json::json!({"a": 5, "s": "abc", "m": {"x": {"y": 2}}, "arr": [{"id": "p1"}, {"id": "p2"}]});
        assert!(ev("a > 3 && a <= 5", r.clone()).truthy());
        assert!(ev("s > \"\"", r.clone()).truthy());
        assert!(ev("s == `abc`", r.clone()).truthy());
        assert!(ev("!(s != \"abc\") || false", r.clone()).truthy());
        assert!(ev("m.x.y * 3 + 1 == 7", r.clone()).truthy());
        assert_eq!(ev("arr[1].id", r.clone()).as_str(), Some("p2"));
        assert!(!ev("missing > 1", r.clone()).truthy());
        assert!(ev("missing == null", r.clone()).truthy());
        assert!(ev("isNull(missing) && contains(s, \"b\")", r).truthy());
    }

    #[test]
    fn now_arithmetic() {
        let v = ev("now() - 30 * 1000 * 60 *60 * 24", serde_json::json!({}));
        assert_eq!(v.as_i64(), Some(1_000_000 - 2_592_000_000));
        assert_eq!(ev("expandAppIds(\"*\")", serde_json::json!({})).to_json(), serde_json::json!([-323232]));
        assert_eq!(ev("expandAppIds(`*`)", serde_json::json!({})).to_json(), serde_json::json!([-323232]));
        assert_eq!(ev("date(2024, 1, 2)", serde_json::json!({})).as_i64(), Some(1_704_153_600_000));
        assert_eq!(ev("dateAdd(0, 2, \"days\")", serde_json::json!({})).as_i64(), Some(172_800_000));
        assert!(ev("date(2024, 1, 1, 9223372036854775807)", serde_json::json!({})).is_null());
        assert!(ev("dateAdd(9223372036854775807, 1, \"months\")", serde_json::json!({})).is_null());
        let _ = ev("startOfDay(9223372036854775807)", serde_json::json!({}));
    }

    #[test]
    fn escapes() {
        let v = ev(r#""a\"b\\c""#, serde_json::json!({}));
        assert_eq!(v.as_str(), Some("a\"b\\c"));
    }

    #[test]
    fn errors_do_not_panic() {
        for bad in [
            "visitorId > \"abc",
            "a ==",
            "(a",
            "f(1)",
            "a.",
            "a[",
            "a[1",
            "`x",
            "#",
            "a b",
            "1 +* 2",
            "\"\\q\"",
            "now(1)",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = "(".repeat(10_000);
        assert!(parse(&deep).is_err());
        let deep_not = "!".repeat(10_000) + "a";
        assert!(parse(&deep_not).is_err());
    }

    #[test]
    fn precedence() {
        assert_eq!(ev("1 + 2 * 3", serde_json::json!({})).as_i64(), Some(7));
        assert_eq!(ev("(1 + 2) * 3", serde_json::json!({})).as_i64(), Some(9));
        assert!(ev("1 < 2 == true", serde_json::json!({})).truthy());
        assert!(ev("false || true && true", serde_json::json!({})).truthy());
        assert_eq!(ev("7 / 2", serde_json::json!({})).as_f64(), Some(3.5));
        assert_eq!(ev("-3 - -2", serde_json::json!({})).as_i64(), Some(-1));
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse(&s);
        }

        #[test]
        fn string_literals_round_trip(s in "\\PC{0,30}") {
            let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
            let v = ev(&format!("\"{escaped}\""), serde_json::json!({}));
            proptest::prop_assert_eq!(v.as_str(), Some(s.as_str()));
        }
    }
}
