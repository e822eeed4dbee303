//! Recursive-descent parser for the supported SOQL subset. Anything outside the subset is
//! refused here with MALFORMED_QUERY and a pointer at the first token it cannot accept, so an
//! unsupported query never reaches evaluation and never gets a silently wrong answer.

use super::SoqlError;
use super::ast::{Ast, Cond, DateFn, LitKind, Literal, OrderItem, Path, Select, SubQuery};
use super::lexer::{Tok, Token, tokenize};

/// Words SOQL reserves: never a field or object name.
const RESERVED: &[&str] = &[
    "and", "asc", "desc", "excludes", "first", "from", "group", "having", "in", "includes", "last", "like", "limit",
    "not", "null", "nulls", "or", "select", "where", "with", "true", "false", "offset", "using", "typeof",
];

/// Nesting beyond this is refused rather than risking the stack on hostile input.
const MAX_DEPTH: usize = 64;

pub fn parse(src: &str) -> Result<Ast, SoqlError> {
    let toks = tokenize(src)?;
    let mut p = Parser { src, toks, i: 0, depth: 0 };
    p.query()
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    i: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> &Token {
        // The token list always ends with Eof and the parser never advances past it.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }

    fn advance(&mut self) -> Token {
        let t = self.peek().clone();
        if t.tok != Tok::Eof {
            self.i += 1;
        }
        t
    }

    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }

    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect_kw(&mut self, kw: &str) -> Result<(), SoqlError> {
        if self.eat_kw(kw) { Ok(()) } else { Err(self.unexpected()) }
    }

    fn token_text(&self, t: &Token) -> String {
        match t.tok {
            Tok::Eof => "<EOF>".to_string(),
            _ => format!("'{}'", &self.src[t.pos..t.end]),
        }
    }

    /// Salesforce's syntax error at the current token.
    fn unexpected(&self) -> SoqlError {
        let t = self.peek();
        SoqlError::at("MALFORMED_QUERY", self.src, t.pos, format!("unexpected token: {}", self.token_text(t)))
    }

    /// A syntax error for valid SOQL this emulator does not implement; says so, so that a
    /// failing test points at the emulator rather than at the query.
    fn unsupported(&self, what: &str) -> SoqlError {
        let t = self.peek();
        SoqlError::at(
            "MALFORMED_QUERY",
            self.src,
            t.pos,
            format!("unexpected token: {} ({what} is not supported by the emulator)", self.token_text(t)),
        )
    }

    fn query(&mut self) -> Result<Ast, SoqlError> {
        self.expect_kw("select")?;
        let (select, subqueries) = self.select_list()?;
        self.expect_kw("from")?;
        let (object, object_pos) = match &self.peek().tok {
            Tok::Ident(s) if !is_reserved(s) => (s.clone(), self.peek().pos),
            _ => return Err(self.unexpected()),
        };
        self.advance();
        if self.is_kw("using") {
            return Err(self.unsupported("USING SCOPE"));
        }
        let filter = if self.eat_kw("where") { Some(self.condition()?) } else { None };
        if self.is_kw("with") {
            return Err(self.unsupported("WITH"));
        }
        if self.is_kw("group") {
            return Err(self.unsupported("GROUP BY"));
        }
        if self.is_kw("having") {
            return Err(self.unsupported("HAVING"));
        }
        let order = self.order_by()?;
        let limit = if self.eat_kw("limit") { Some(self.count_value()?.0) } else { None };
        let (offset, offset_pos) = if self.eat_kw("offset") {
            let (n, pos) = self.count_value()?;
            (Some(n), pos)
        } else {
            (None, 0)
        };
        if self.is_kw("for") {
            return Err(self.unsupported("FOR VIEW/REFERENCE/UPDATE"));
        }
        if self.is_kw("all") {
            return Err(self.unsupported("ALL ROWS (use queryAll)"));
        }
        if self.is_kw("update") {
            return Err(self.unsupported("UPDATE TRACKING/VIEWSTAT"));
        }
        if self.peek().tok != Tok::Eof {
            if matches!(self.peek().tok, Tok::Ident(_)) && self.toks[self.i - 1].pos == object_pos {
                return Err(self.unsupported("an object alias"));
            }
            return Err(self.unexpected());
        }
        Ok(Ast { select, subqueries, object, object_pos, filter, order, limit, offset, offset_pos })
    }

    fn order_by(&mut self) -> Result<Vec<OrderItem>, SoqlError> {
        let mut order = Vec::new();
        if self.is_kw("order") && matches!(self.peek_at(1), Tok::Ident(s) if s.eq_ignore_ascii_case("by")) {
            self.i += 2;
            loop {
                order.push(self.order_item()?);
                if !matches!(self.peek().tok, Tok::Comma) {
                    break;
                }
                self.advance();
            }
        }
        Ok(order)
    }

    /// `(SELECT fields FROM Relationship [WHERE ...] [ORDER BY ...] [LIMIT n])`, from the `(`.
    fn subquery(&mut self) -> Result<SubQuery, SoqlError> {
        self.advance();
        self.expect_kw("select")?;
        // Each level recurses; the planner enforces Salesforce's depth limit, this only keeps
        // hostile input off the stack.
        self.enter()?;
        let mut fields = Vec::new();
        let mut subqueries = Vec::new();
        loop {
            let is_subquery = self.peek().tok == Tok::LParen
                && matches!(self.peek_at(1), Tok::Ident(s) if s.eq_ignore_ascii_case("select"));
            match &self.peek().tok {
                _ if is_subquery => {}
                Tok::LParen => return Err(self.unexpected()),
                Tok::Ident(_) if *self.peek_at(1) == Tok::LParen => {
                    return Err(self.unsupported("a function or aggregate in a subquery"));
                }
                _ => {}
            }
            if is_subquery {
                subqueries.push((fields.len(), self.subquery()?));
            } else {
                fields.push(self.path()?);
            }
            match &self.peek().tok {
                Tok::Comma => {
                    self.advance();
                }
                Tok::Ident(s) if s.eq_ignore_ascii_case("from") => break,
                _ => return Err(self.unexpected()),
            }
        }
        self.expect_kw("from")?;
        let (relationship, relationship_pos) = match &self.peek().tok {
            Tok::Ident(s) if !is_reserved(s) => (s.clone(), self.peek().pos),
            _ => return Err(self.unexpected()),
        };
        self.advance();
        let filter = if self.eat_kw("where") { Some(self.condition()?) } else { None };
        let order = self.order_by()?;
        let limit = if self.eat_kw("limit") { Some(self.count_value()?.0) } else { None };
        if self.is_kw("offset") {
            return Err(self.unsupported("OFFSET in a subquery"));
        }
        if self.peek().tok != Tok::RParen {
            return Err(self.unexpected());
        }
        self.advance();
        self.depth -= 1;
        Ok(SubQuery { fields, subqueries, relationship, relationship_pos, filter, order, limit })
    }

    fn select_list(&mut self) -> Result<(Select, Vec<(usize, SubQuery)>), SoqlError> {
        if self.is_kw("count") && *self.peek_at(1) == Tok::LParen {
            if *self.peek_at(2) != Tok::RParen {
                return Err(self.unsupported("COUNT(field)"));
            }
            self.i += 3;
            if matches!(self.peek().tok, Tok::Comma) {
                return Err(self.unsupported("COUNT() with other fields"));
            }
            return Ok((Select::Count, Vec::new()));
        }
        let mut fields = Vec::new();
        let mut subqueries = Vec::new();
        loop {
            let is_subquery = self.peek().tok == Tok::LParen
                && matches!(self.peek_at(1), Tok::Ident(s) if s.eq_ignore_ascii_case("select"));
            match &self.peek().tok {
                _ if is_subquery => {}
                Tok::LParen => return Err(self.unexpected()),
                Tok::Ident(s) if s.eq_ignore_ascii_case("typeof") => return Err(self.unsupported("TYPEOF")),
                Tok::Ident(s) if s.eq_ignore_ascii_case("fields") && *self.peek_at(1) == Tok::LParen => {
                    return Err(self.unsupported("FIELDS()"));
                }
                Tok::Ident(_) if *self.peek_at(1) == Tok::LParen => {
                    return Err(self.unsupported("a function or aggregate in SELECT"));
                }
                _ => {}
            }
            if is_subquery {
                subqueries.push((fields.len(), self.subquery()?));
            } else {
                fields.push(self.path()?);
            }
            match &self.peek().tok {
                Tok::Comma => {
                    self.advance();
                }
                Tok::Ident(s) if s.eq_ignore_ascii_case("from") => break,
                _ => return Err(self.unexpected()),
            }
        }
        Ok((Select::Fields(fields), subqueries))
    }

    fn path(&mut self) -> Result<Path, SoqlError> {
        let pos = self.peek().pos;
        let first = match &self.peek().tok {
            Tok::Ident(s) if !is_reserved(s) => s.clone(),
            _ => return Err(self.unexpected()),
        };
        self.advance();
        let mut parts = vec![first];
        while self.peek().tok == Tok::Dot {
            self.advance();
            match &self.peek().tok {
                Tok::Ident(s) => parts.push(s.clone()),
                _ => return Err(self.unexpected()),
            }
            self.advance();
        }
        Ok(Path { parts, pos })
    }

    fn order_item(&mut self) -> Result<OrderItem, SoqlError> {
        if matches!(self.peek().tok, Tok::Ident(_)) && *self.peek_at(1) == Tok::LParen {
            return Err(self.unsupported("a function in ORDER BY"));
        }
        let path = self.path()?;
        let descending = if self.eat_kw("desc") {
            true
        } else {
            self.eat_kw("asc");
            false
        };
        let nulls_first = if self.eat_kw("nulls") {
            if self.eat_kw("first") {
                Some(true)
            } else if self.eat_kw("last") {
                Some(false)
            } else {
                return Err(self.unexpected());
            }
        } else {
            None
        };
        Ok(OrderItem { path, descending, nulls_first })
    }

    /// A LIMIT/OFFSET count: a plain non-negative 32-bit integer, as Salesforce requires.
    fn count_value(&mut self) -> Result<(usize, usize), SoqlError> {
        let t = self.peek().clone();
        let Tok::Num(text) = &t.tok else {
            return Err(self.unexpected());
        };
        if !text.bytes().all(|b| b.is_ascii_digit()) {
            return Err(self.unexpected());
        }
        let n = text.parse::<i32>().map_err(|_| {
            SoqlError::at("MALFORMED_QUERY", self.src, t.pos, format!("numeric value out of range: {text}"))
        })?;
        self.advance();
        Ok((usize::try_from(n).unwrap_or(0), t.pos))
    }

    fn enter(&mut self) -> Result<(), SoqlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.unsupported("nesting this deep"));
        }
        Ok(())
    }

    /// A chain of conditions joined by one kind of connector. SOQL has no precedence between
    /// AND and OR: mixing them without parentheses is a syntax error.
    fn condition(&mut self) -> Result<Cond, SoqlError> {
        self.enter()?;
        let first = self.unary()?;
        let mut items = vec![first];
        let mut conj: Option<bool> = None;
        loop {
            let is_and = if self.is_kw("and") {
                true
            } else if self.is_kw("or") {
                false
            } else {
                break;
            };
            if conj.is_some_and(|c| c != is_and) {
                return Err(self.unexpected());
            }
            conj = Some(is_and);
            self.advance();
            items.push(self.unary()?);
        }
        self.depth -= 1;
        Ok(match conj {
            None => items.pop().unwrap_or(Cond::And(Vec::new())),
            Some(true) => Cond::And(items),
            Some(false) => Cond::Or(items),
        })
    }

    fn unary(&mut self) -> Result<Cond, SoqlError> {
        if self.eat_kw("not") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Cond::Not(Box::new(inner)));
        }
        if self.peek().tok == Tok::LParen {
            self.advance();
            let inner = self.condition()?;
            if self.peek().tok != Tok::RParen {
                return Err(self.unexpected());
            }
            self.advance();
            return Ok(inner);
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Cond, SoqlError> {
        if matches!(self.peek().tok, Tok::Ident(_)) && *self.peek_at(1) == Tok::LParen {
            return Err(self.unsupported("a function in WHERE"));
        }
        let path = self.path()?;
        match self.peek().tok.clone() {
            Tok::Op(op) => {
                self.advance();
                let value = self.literal()?;
                Ok(Cond::Cmp { path, op, value })
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("like") => {
                self.advance();
                let value = self.literal()?;
                if !matches!(value.kind, LitKind::Str(_)) {
                    return Err(SoqlError::at(
                        "MALFORMED_QUERY",
                        self.src,
                        value.pos,
                        format!("unexpected token: {}", self.token_text(&self.toks[self.i - 1])),
                    ));
                }
                Ok(Cond::Like { path, pattern: value })
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("in") => {
                self.advance();
                let values = self.in_list()?;
                Ok(Cond::In { path, negated: false, values })
            }
            Tok::Ident(s)
                if s.eq_ignore_ascii_case("not")
                    && matches!(self.peek_at(1), Tok::Ident(n) if n.eq_ignore_ascii_case("in")) =>
            {
                self.i += 2;
                let values = self.in_list()?;
                Ok(Cond::In { path, negated: true, values })
            }
            Tok::Ident(s) if s.eq_ignore_ascii_case("includes") || s.eq_ignore_ascii_case("excludes") => {
                Err(self.unsupported("INCLUDES/EXCLUDES"))
            }
            _ => Err(self.unexpected()),
        }
    }

    fn in_list(&mut self) -> Result<Vec<crate::salesforce::soql::ast::Literal>, SoqlError> {
        if self.peek().tok != Tok::LParen {
            return Err(self.unexpected());
        }
        self.advance();
        if self.is_kw("select") {
            return Err(self.unsupported("a semi-join subquery"));
        }
        let mut values = vec![self.literal()?];
        loop {
            match self.peek().tok {
                Tok::Comma => {
                    self.advance();
                    values.push(self.literal()?);
                }
                Tok::RParen => {
                    self.advance();
                    return Ok(values);
                }
                _ => return Err(self.unexpected()),
            }
        }
    }

    fn literal(&mut self) -> Result<Literal, SoqlError> {
        let t = self.peek().clone();
        let kind = match &t.tok {
            Tok::Str(s) => LitKind::Str(s.clone()),
            Tok::Num(n) => LitKind::Num(n.clone()),
            Tok::Date(d) => LitKind::Date(*d),
            Tok::DateTime(d) => LitKind::DateTime(*d),
            Tok::Colon => return Err(self.unsupported("a bind variable")),
            Tok::Ident(word) => {
                let upper = word.to_ascii_uppercase();
                match upper.as_str() {
                    "TRUE" => LitKind::Bool(true),
                    "FALSE" => LitKind::Bool(false),
                    "NULL" => LitKind::Null,
                    _ => {
                        let kind = self.date_fn(&upper)?;
                        return Ok(Literal { kind, pos: t.pos });
                    }
                }
            }
            _ => return Err(self.unexpected()),
        };
        self.advance();
        Ok(Literal { kind, pos: t.pos })
    }

    /// A relative date literal (`TODAY`, `LAST_N_DAYS:7`), consuming it.
    fn date_fn(&mut self, upper: &str) -> Result<LitKind, SoqlError> {
        let fixed = match upper {
            "TODAY" => Some(DateFn::Today),
            "YESTERDAY" => Some(DateFn::Yesterday),
            "TOMORROW" => Some(DateFn::Tomorrow),
            "THIS_WEEK" => Some(DateFn::ThisWeek),
            "LAST_WEEK" => Some(DateFn::LastWeek),
            "NEXT_WEEK" => Some(DateFn::NextWeek),
            "THIS_MONTH" => Some(DateFn::ThisMonth),
            "LAST_MONTH" => Some(DateFn::LastMonth),
            "NEXT_MONTH" => Some(DateFn::NextMonth),
            "THIS_YEAR" => Some(DateFn::ThisYear),
            "LAST_YEAR" => Some(DateFn::LastYear),
            "NEXT_YEAR" => Some(DateFn::NextYear),
            "LAST_90_DAYS" => Some(DateFn::LastNDays(90)),
            "NEXT_90_DAYS" => Some(DateFn::NextNDays(90)),
            _ => None,
        };
        if let Some(f) = fixed {
            self.advance();
            return Ok(LitKind::DateFn(f));
        }
        let with_n: Option<fn(u32) -> DateFn> = match upper {
            "LAST_N_DAYS" => Some(DateFn::LastNDays),
            "NEXT_N_DAYS" => Some(DateFn::NextNDays),
            "N_DAYS_AGO" => Some(DateFn::NDaysAgo),
            _ => None,
        };
        if let Some(make) = with_n {
            self.advance();
            if self.peek().tok != Tok::Colon {
                return Err(self.unexpected());
            }
            self.advance();
            let t = self.peek().clone();
            let n = match &t.tok {
                Tok::Num(text) if text.bytes().all(|b| b.is_ascii_digit()) => text.parse::<i32>().map_err(|_| {
                    SoqlError::at("MALFORMED_QUERY", self.src, t.pos, format!("numeric value out of range: {text}"))
                })?,
                _ => return Err(self.unexpected()),
            };
            self.advance();
            return Ok(LitKind::DateFn(make(u32::try_from(n).unwrap_or(0))));
        }
        let known_elsewhere = upper.contains("QUARTER")
            || upper.contains("FISCAL")
            || upper.contains("_N_")
            || upper.ends_with("_AGO")
            || upper.contains("_HOURS");
        if known_elsewhere {
            return Err(self.unsupported("this date literal"));
        }
        Err(self.unexpected())
    }
}

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(word))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::salesforce::soql::lexer::CmpOp;

    fn err(q: &str) -> String {
        let e = parse(q).unwrap_err();
        assert_eq!(e.code, "MALFORMED_QUERY", "{q}: {e:?}");
        e.message
    }

    #[test]
    fn parses_the_subset() {
        let ast = parse(
            "select Id, owner.email FROM account where (Name = 'x' OR Name LIKE 'y%') AND NOT Amount__c >= -1.5 \
             and Id not in ('a') order by Name desc nulls last, Id limit 10 offset 5",
        )
        .unwrap();
        assert_eq!(ast.object, "account");
        let Select::Fields(f) = &ast.select else { panic!() };
        assert_eq!(f[1].parts, vec!["owner", "email"]);
        let Some(Cond::And(items)) = &ast.filter else { panic!("{:?}", ast.filter) };
        assert_eq!(items.len(), 3);
        assert!(matches!(&items[1], Cond::Not(c) if matches!(**c, Cond::Cmp { op: CmpOp::Ge, .. })));
        assert!(matches!(&items[2], Cond::In { negated: true, .. }));
        assert_eq!(ast.order.len(), 2);
        assert!(ast.order[0].descending);
        assert_eq!(ast.order[0].nulls_first, Some(false));
        assert_eq!((ast.limit, ast.offset), (Some(10), Some(5)));
        assert_eq!(parse("SELECT COUNT() FROM Contact").unwrap().select, Select::Count);
        let ast = parse("SELECT Id FROM Task WHERE ActivityDate = LAST_N_DAYS:30").unwrap();
        assert!(matches!(
            ast.filter,
            Some(Cond::Cmp { value: Literal { kind: LitKind::DateFn(DateFn::LastNDays(30)), .. }, .. })
        ));
    }

    #[test]
    fn refuses_what_is_not_supported() {
        for q in [
            "SELECT Id FROM Account;",
            "SELECT Id FROM Account WHERE A = 1 AND B = 2 OR C = 3",
            "SELECT Id FROM Account WHERE A = 1 OR B = 2 AND C = 3",
            "SELECT COUNT(Id) FROM Account",
            "SELECT COUNT(), Name FROM Account",
            "SELECT FIELDS(ALL) FROM Account LIMIT 200",
            "SELECT Id, (SELECT Id FROM Contacts LIMIT 1 OFFSET 1) FROM Account",
            "SELECT Id, (SELECT COUNT() FROM Contacts) FROM Account",
            "SELECT Id, (SELECT Id FROM Contacts FROM Account",
            "SELECT Name, MAX(Amount) FROM Opportunity GROUP BY Name",
            "SELECT Id FROM Account GROUP BY Id",
            "SELECT Id FROM Account WITH SECURITY_ENFORCED",
            "SELECT Id FROM Account FOR UPDATE",
            "SELECT Id FROM Account USING SCOPE mine",
            "SELECT Id FROM Account a",
            "SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact)",
            "SELECT Id FROM Account WHERE Id = :x",
            "SELECT Id FROM Account WHERE CreatedDate = THIS_QUARTER",
            "SELECT Id FROM Account WHERE Name LIKE 5",
            "SELECT Id FROM Account LIMIT -1",
            "SELECT Id FROM Account LIMIT 1.5",
            "SELECT Id FROM Account LIMIT 2147483648",
            "SELECT Id FROM Account ALL ROWS",
            "SELECT TYPEOF What WHEN Account THEN Name END FROM Task",
            "SELECT * FROM Account",
            "SELECT Id FROM",
            "SELECT FROM Account",
            "SELECT Id, FROM Account",
            "SELECT Id FROM Account WHERE",
            "SELECT Id FROM Account WHERE Name = ",
            "SELECT Id FROM Account WHERE (Name = 'a'",
            "SELECT Id FROM Account WHERE Name IN ()",
            "SELECT Id FROM Account ORDER BY",
            "SELECT Id FROM Account WHERE Tags__c INCLUDES ('a')",
            "",
        ] {
            err(q);
        }
    }

    #[test]
    fn errors_point_at_the_token() {
        let m = err("SELECT Id FROM Account;");
        assert_eq!(
            m,
            "\nSELECT Id FROM Account;\n                      ^\nERROR at Row:1:Column:23\nunexpected token: ';'"
        );
        let m = err("SELECT Id FROM Account WHERE A = 1 AND B = 2 OR C = 3");
        assert!(m.ends_with("ERROR at Row:1:Column:46\nunexpected token: 'OR'"), "{m}");
        let m = err("SELECT Id\nFROM Account\nWHERE");
        assert!(m.ends_with("ERROR at Row:3:Column:6\nunexpected token: <EOF>"), "{m}");
        let deep = format!("SELECT Id FROM Account WHERE {}Name = 'a'{}", "(".repeat(500), ")".repeat(500));
        err(&deep);
        let nots = format!("SELECT Id FROM Account WHERE {}Name = 'a'", "NOT ".repeat(500));
        err(&nots);
    }
}
