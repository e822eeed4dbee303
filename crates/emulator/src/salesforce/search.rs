//! SOSL over REST (`GET /search?q=FIND {...} ...`): full-text search across the objects the
//! emulator holds, answered as `{"searchRecords": [...]}` (a bare array before v37.0).
//!
//! It owns the supported subset: `FIND {terms}` with implicit or explicit `AND`, `OR`, `AND NOT`,
//! quoted phrases and the `*`/`?` wildcards; `IN ALL|NAME|EMAIL|PHONE|SIDEBAR FIELDS`;
//! `RETURNING Object[(fields [WHERE ...] [ORDER BY ...] [LIMIT n] [OFFSET n])], ...` and an
//! overall `LIMIT`. A term matches a whole word of a searchable field (case-insensitively), as
//! Salesforce's tokenised index does. Each RETURNING clause runs as SOQL over the records whose
//! words matched, so its WHERE, ORDER BY and field list mean what they mean in SOQL. Rows come
//! in object order, then creation order: the emulator has no relevance ranking. Everything else
//! (`WITH ...`, `UPDATE ...`, `TO LABEL`, `toLabel()`) is refused with MALFORMED_SEARCH.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::response::Resp;
use super::rest::{CallCtx, DataRequest};
use super::schema::{FieldType, ObjectDef};
use super::soql;
use super::store::{Db, Record};

/// SOSL answers at most this many records in all.
const MAX_ROWS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    All,
    Name,
    Email,
    Phone,
}

/// A search term: a word or a phrase (several words in order), each word possibly a pattern.
#[derive(Debug, Clone, PartialEq)]
struct Term {
    words: Vec<String>,
    negated: bool,
}

/// `FIND {...}` as an OR of AND-groups.
#[derive(Debug, Clone, PartialEq)]
struct Terms {
    any_of: Vec<Vec<Term>>,
}

#[derive(Debug, Clone, PartialEq)]
struct Returning {
    object: String,
    /// What went inside the parentheses, or `None` for `Id` only.
    spec: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
struct Search {
    terms: Terms,
    scope: Scope,
    returning: Vec<Returning>,
    limit: usize,
}

fn malformed(message: impl Into<String>) -> Resp {
    Resp::error(StatusCode::BAD_REQUEST, "MALFORMED_SEARCH", message)
}

pub fn handle(ctx: &CallCtx, db: &Db, req: &DataRequest<'_>) -> Resp {
    if req.method != Method::GET {
        return Resp::method_not_allowed(&req.method, "GET,HEAD");
    }
    let Some(q) = req.param("q").filter(|q| !q.trim().is_empty()) else {
        return malformed("A search string has to be specified");
    };
    let search = match parse(q) {
        Ok(s) => s,
        Err(message) => return malformed(message),
    };
    let returning: Vec<Returning> = if search.returning.is_empty() {
        // No RETURNING: every searchable object, Id only.
        db.schema
            .objects()
            .filter(|o| o.name != "Organization")
            .map(|o| Returning { object: o.name.clone(), spec: None })
            .collect()
    } else {
        search.returning.clone()
    };
    let mut rows = Vec::new();
    for r in &returning {
        let Some(obj) = db.schema.object(&r.object).cloned() else {
            return Resp::error(
                StatusCode::BAD_REQUEST,
                "INVALID_TYPE",
                format!("sObject type '{}' is not supported.", r.object),
            );
        };
        let fields = searchable(&obj, search.scope);
        let ids: Vec<&str> = db
            .records(&obj.name)
            .filter(|rec| !rec.deleted && matches(&search.terms, &fields, rec))
            .map(Record::id)
            .take(MAX_ROWS)
            .collect();
        let soql = match to_soql(&obj.name, r.spec.as_deref(), &ids) {
            Ok(s) => s,
            Err(message) => return malformed(message),
        };
        let Some(soql) = soql else { continue };
        let out =
            soql::parse(&soql).and_then(|p| soql::execute(&p, db, false, &ctx.version, ctx.now.date_naive(), ctx.now));
        match out {
            Ok(o) => rows.extend(o.records),
            Err(e) => return Resp::error(StatusCode::BAD_REQUEST, e.code, e.message),
        }
        if rows.len() >= search.limit {
            break;
        }
    }
    rows.truncate(search.limit);
    if ctx.version_num < 37.0 {
        return Resp::ok(Value::Array(rows));
    }
    Resp::ok(json!({"searchRecords": rows}))
}

/// The SOQL that answers one RETURNING clause over the matched Ids, or `None` when no record
/// matched.
fn to_soql(object: &str, spec: Option<&str>, ids: &[&str]) -> Result<Option<String>, String> {
    if ids.is_empty() {
        return Ok(None);
    }
    let id_list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    let pinned = format!("Id IN ({})", id_list.join(","));
    let Some(spec) = spec else {
        return Ok(Some(format!("SELECT Id FROM {object} WHERE {pinned}")));
    };
    let words = top_level_words(spec);
    let find =
        |kw: &[&str]| words.iter().find(|(w, _)| kw.iter().any(|k| w.eq_ignore_ascii_case(k))).map(|(_, at)| *at);
    let clause_start = find(&["where", "order", "limit", "offset", "using"]).unwrap_or(spec.len());
    let fields = spec[..clause_start].trim().trim_end_matches(',').trim();
    if fields.is_empty() {
        return Err(format!("RETURNING {object}(...) names no field"));
    }
    let tail = &spec[clause_start..];
    let (filter, rest) = if find(&["where"]) == Some(clause_start) {
        let after_where = clause_start + "where".len();
        let rest_at = find(&["order", "limit", "offset"]).filter(|&p| p > clause_start).unwrap_or(spec.len());
        (Some(spec[after_where..rest_at].trim()), &spec[rest_at..])
    } else {
        (None, tail)
    };
    let filter = match filter {
        Some(f) if !f.is_empty() => format!("{pinned} AND ({f})"),
        _ => pinned,
    };
    Ok(Some(format!("SELECT {fields} FROM {object} WHERE {filter} {}", rest.trim())))
}

/// The words of `s` outside quoted strings, with their byte offsets.
fn top_level_words(s: &str) -> Vec<(&str, usize)> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'\'' {
            i += 1;
            while i < bytes.len() && bytes[i] != b'\'' {
                if bytes[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
        } else if b.is_ascii_alphanumeric() || b == b'_' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'.') {
                i += 1;
            }
            out.push((&s[start..i], start));
        } else {
            i += 1;
        }
    }
    out
}

fn parse(q: &str) -> Result<Search, String> {
    let src = q.trim();
    let rest = strip_kw(src, "find")
        .ok_or_else(|| format!("unexpected token: '{}': a search starts with FIND", first_word(src)))?;
    let rest = rest.trim_start();
    let Some(rest) = rest.strip_prefix('{') else {
        return Err("the search terms must be enclosed in braces: FIND {...}".into());
    };
    let (inner, after) = braced(rest).ok_or("missing '}' after the search terms")?;
    let terms = parse_terms(&inner)?;
    let mut rest = after.trim_start();
    let mut scope = Scope::All;
    if let Some(r) = strip_kw(rest, "in") {
        let r = r.trim_start();
        let (group, r) = split_word(r);
        scope = match group.to_ascii_lowercase().as_str() {
            "all" | "sidebar" => Scope::All,
            "name" => Scope::Name,
            "email" => Scope::Email,
            "phone" => Scope::Phone,
            other => {
                return Err(format!("unexpected token: '{other}': expected ALL, NAME, EMAIL, PHONE or SIDEBAR FIELDS"));
            }
        };
        rest = strip_kw(r.trim_start(), "fields").ok_or("expected FIELDS after the search group")?.trim_start();
    }
    let mut returning = Vec::new();
    if let Some(r) = strip_kw(rest, "returning") {
        let mut r = r.trim_start();
        loop {
            let (object, after_obj) = split_word(r);
            if object.is_empty() {
                return Err("RETURNING names no object".into());
            }
            let after_obj = after_obj.trim_start();
            let (spec, after_spec) = match after_obj.strip_prefix('(') {
                Some(inside) => {
                    let close = closing_paren(inside).ok_or("missing ')' in RETURNING")?;
                    (Some(inside[..close].to_string()), &inside[close + 1..])
                }
                None => (None, after_obj),
            };
            returning.push(Returning { object: object.to_string(), spec });
            r = after_spec.trim_start();
            match r.strip_prefix(',') {
                Some(more) => r = more.trim_start(),
                None => break,
            }
        }
        rest = r;
    }
    let mut limit = MAX_ROWS;
    if let Some(r) = strip_kw(rest, "limit") {
        let (n, r) = split_word(r.trim_start());
        limit = n.parse::<usize>().map_err(|_| format!("unexpected token: '{n}': LIMIT takes a number"))?.min(MAX_ROWS);
        rest = r.trim_start();
    }
    if !rest.is_empty() {
        return Err(format!("unexpected token: '{}' (not supported by the emulator)", first_word(rest)));
    }
    Ok(Search { terms, scope, returning, limit })
}

fn first_word(s: &str) -> &str {
    s.split_whitespace().next().unwrap_or("<EOF>")
}

/// `s` after the keyword `kw` (case-insensitive, as a whole word).
fn strip_kw<'a>(s: &'a str, kw: &str) -> Option<&'a str> {
    let head = s.get(..kw.len())?;
    let rest = &s[kw.len()..];
    (head.eq_ignore_ascii_case(kw) && !rest.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(rest)
}

fn split_word(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// The text up to the closing brace (backslash escapes any character) and what follows it.
fn braced(s: &str) -> Option<(String, &str)> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?.1),
            '}' => return Some((out, &s[i + 1..])),
            c => out.push(c),
        }
    }
    None
}

/// The index of the `)` that closes an already opened parenthesis, skipping quoted strings.
fn closing_paren(s: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_quote = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if in_quote {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '\'') => in_quote = false,
                _ => {}
            }
            continue;
        }
        match c {
            '\'' => in_quote = true,
            '(' => depth += 1,
            ')' if depth == 0 => return Some(i),
            ')' => depth -= 1,
            _ => {}
        }
    }
    None
}

fn parse_terms(s: &str) -> Result<Terms, String> {
    // Tokens: quoted phrases, operators and words.
    let mut tokens: Vec<(String, bool)> = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '"' {
            chars.next();
            let phrase: String = chars.by_ref().take_while(|&c| c != '"').collect();
            tokens.push((phrase, true));
        } else if c == '(' || c == ')' {
            return Err("parentheses in search terms are not supported by the emulator".into());
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || c == '"' {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push((word, false));
        }
    }
    let mut any_of: Vec<Vec<Term>> = vec![Vec::new()];
    let mut negate_next = false;
    for (tok, quoted) in tokens {
        if !quoted {
            match tok.as_str() {
                "OR" => {
                    any_of.push(Vec::new());
                    continue;
                }
                "AND" => continue,
                "NOT" => {
                    negate_next = true;
                    continue;
                }
                _ => {}
            }
        }
        let words: Vec<String> = words_of(&tok.to_lowercase(), true);
        let significant: usize = words.iter().map(|w| w.chars().filter(|c| *c != '*' && *c != '?').count()).sum();
        if words.is_empty() || significant < 2 {
            return Err(format!("search term must be longer than one character: {tok}"));
        }
        if let Some(group) = any_of.last_mut() {
            group.push(Term { words, negated: negate_next });
        }
        negate_next = false;
    }
    if any_of.iter().any(|g| g.iter().all(|t| t.negated)) {
        return Err("search terms must hold at least one term that is not negated".into());
    }
    Ok(Terms { any_of })
}

/// The words of a text as the index keeps them: runs of letters and digits (and, for a pattern,
/// its wildcards), lower-cased by the caller.
fn words_of(s: &str, pattern: bool) -> Vec<String> {
    s.split(|c: char| !(c.is_alphanumeric() || (pattern && (c == '*' || c == '?'))))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The fields a search group covers on one object.
fn searchable(obj: &ObjectDef, scope: Scope) -> Vec<String> {
    obj.fields()
        .filter(|f| match scope {
            Scope::All => matches!(
                f.field_type,
                FieldType::String | FieldType::Email | FieldType::Phone | FieldType::Url | FieldType::TextArea
            ),
            Scope::Name => {
                matches!(f.name.as_str(), "Name" | "FirstName" | "LastName" | "Subject" | "Company" | "Username")
            }
            Scope::Email => f.field_type == FieldType::Email,
            Scope::Phone => f.field_type == FieldType::Phone,
        })
        .map(|f| f.name.clone())
        .collect()
}

/// Whether a record's searchable `fields` hold the terms.
fn matches(terms: &Terms, fields: &[String], rec: &Record) -> bool {
    let mut words: Vec<Vec<String>> = Vec::new();
    for f in fields {
        if let Some(s) = rec.get(f).as_str() {
            words.push(words_of(&s.to_lowercase(), false));
        }
    }
    if words.is_empty() {
        return false;
    }
    terms.any_of.iter().any(|group| group.iter().all(|t| term_found(t, &words) != t.negated))
}

/// Whether the term's words appear consecutively in one field's words.
fn term_found(t: &Term, fields: &[Vec<String>]) -> bool {
    fields.iter().any(|words| {
        words.windows(t.words.len()).any(|w| w.iter().zip(&t.words).all(|(word, pat)| wildcard(pat, word)))
    })
}

/// `*` is any run of characters, `?` exactly one.
fn wildcard(pattern: &str, word: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = word.chars().collect();
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_find_in_returning_limit() {
        let s = parse("FIND {Acme OR \"Big Co\"} IN NAME FIELDS RETURNING Account(Id, Name WHERE Industry = 'x, y' ORDER BY Name LIMIT 5), Contact LIMIT 10").unwrap();
        assert_eq!(s.scope, Scope::Name);
        assert_eq!(s.limit, 10);
        assert_eq!(s.terms.any_of.len(), 2);
        assert_eq!(s.terms.any_of[1][0].words, vec!["big", "co"]);
        assert_eq!(s.returning[0].spec.as_deref(), Some("Id, Name WHERE Industry = 'x, y' ORDER BY Name LIMIT 5"));
        assert_eq!(s.returning[1], Returning { object: "Contact".into(), spec: None });
        let soql = to_soql("Account", s.returning[0].spec.as_deref(), &["001"]).unwrap().unwrap();
        assert_eq!(
            soql,
            "SELECT Id, Name FROM Account WHERE Id IN ('001') AND (Industry = 'x, y') ORDER BY Name LIMIT 5"
        );
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for q in [
            "Acme",
            "FIND Acme",
            "FIND {Acme",
            "FIND {a}",
            "FIND {Acme} IN BOGUS FIELDS",
            "FIND {Acme} WITH SNIPPET",
            "FIND {NOT Acme}",
        ] {
            assert!(parse(q).is_err(), "{q}");
        }
        assert_eq!(
            parse("find {it\\}s} returning Account").map(|s| s.terms.any_of[0][0].words.clone()),
            Ok(vec!["it".to_string(), "s".to_string()])
        );
    }

    #[test]
    fn wildcards_match_whole_words() {
        assert!(wildcard("acm*", "acme"));
        assert!(wildcard("ac?e", "acme"));
        assert!(!wildcard("acm", "acme"));
        assert!(wildcard("*", ""));
    }
}
