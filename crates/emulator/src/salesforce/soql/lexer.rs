//! SOQL tokens: identifiers, punctuation, comparison operators and literals (quoted strings with
//! SOQL's escape rules, numbers, date and datetime literals). Every token keeps its byte offset so
//! errors can point at the exact row and column, as Salesforce's do.

use chrono::{DateTime, NaiveDate, Utc};

use super::SoqlError;
use crate::salesforce::store::parse_datetime;

/// A comparison operator of a WHERE condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// One piece of a LIKE pattern. Escaped `\%` and `\_` become literal characters, which is why
/// the lexer, not the evaluator, decides what is a wildcard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LikeTok {
    Char(char),
    AnyOne,
    AnyMany,
}

/// A quoted string literal: its decoded value and its reading as a LIKE pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrLit {
    pub value: String,
    pub pattern: Vec<LikeTok>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    Ident(String),
    Str(StrLit),
    /// The number as written (sign included); parsed where its use is known.
    Num(String),
    Date(NaiveDate),
    DateTime(DateTime<Utc>),
    Comma,
    Dot,
    LParen,
    RParen,
    Colon,
    Op(CmpOp),
    /// Any other character; the parser reports it as an unexpected token.
    Other(char),
    Eof,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    /// Byte offset of the token's first character in the query.
    pub pos: usize,
    /// Byte offset just past the token.
    pub end: usize,
}

pub fn tokenize(src: &str) -> Result<Vec<Token>, SoqlError> {
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    let offset = |i: usize| chars.get(i).map_or(src.len(), |(o, _)| *o);
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(c) = at(i) {
        let start = i;
        let tok = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                while at(i).is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    i += 1;
                }
                Tok::Ident(src[offset(start)..offset(i)].to_string())
            }
            '\'' => {
                let (lit, next) = string_literal(src, &chars, i)?;
                i = next;
                Tok::Str(lit)
            }
            c if c.is_ascii_digit() || ((c == '-' || c == '+') && at(i + 1).is_some_and(|d| d.is_ascii_digit())) => {
                let (tok, next) = number_or_date(src, &chars, i)?;
                i = next;
                tok
            }
            ',' => one(&mut i, Tok::Comma),
            '.' => one(&mut i, Tok::Dot),
            '(' => one(&mut i, Tok::LParen),
            ')' => one(&mut i, Tok::RParen),
            ':' => one(&mut i, Tok::Colon),
            '=' => one(&mut i, Tok::Op(CmpOp::Eq)),
            '!' if at(i + 1) == Some('=') => two(&mut i, Tok::Op(CmpOp::Ne)),
            '<' if at(i + 1) == Some('>') => two(&mut i, Tok::Op(CmpOp::Ne)),
            '<' if at(i + 1) == Some('=') => two(&mut i, Tok::Op(CmpOp::Le)),
            '>' if at(i + 1) == Some('=') => two(&mut i, Tok::Op(CmpOp::Ge)),
            '<' => one(&mut i, Tok::Op(CmpOp::Lt)),
            '>' => one(&mut i, Tok::Op(CmpOp::Gt)),
            other => one(&mut i, Tok::Other(other)),
        };
        out.push(Token { tok, pos: offset(start), end: offset(i) });
    }
    out.push(Token { tok: Tok::Eof, pos: src.len(), end: src.len() });
    Ok(out)
}

fn one(i: &mut usize, t: Tok) -> Tok {
    *i += 1;
    t
}

fn two(i: &mut usize, t: Tok) -> Tok {
    *i += 2;
    t
}

/// Decodes a single-quoted literal starting at `chars[start]` (the opening quote).
fn string_literal(src: &str, chars: &[(usize, char)], start: usize) -> Result<(StrLit, usize), SoqlError> {
    let mut value = String::new();
    let mut pattern = Vec::new();
    let mut i = start + 1;
    loop {
        let Some(&(off, c)) = chars.get(i) else {
            return Err(SoqlError::at(
                "MALFORMED_QUERY",
                src,
                src.len(),
                "mismatched character '<EOF>' expecting '''".to_string(),
            ));
        };
        match c {
            '\'' => return Ok((StrLit { value, pattern }, i + 1)),
            '\\' => {
                let Some(&(_, e)) = chars.get(i + 1) else {
                    return Err(SoqlError::at(
                        "MALFORMED_QUERY",
                        src,
                        src.len(),
                        "mismatched character '<EOF>' expecting '''".to_string(),
                    ));
                };
                let decoded = match e {
                    '\'' | '"' | '\\' => e,
                    'n' => '\n',
                    'r' => '\r',
                    't' => '\t',
                    'b' => '\u{8}',
                    'f' => '\u{c}',
                    // Outside LIKE these stand for the plain character.
                    '_' | '%' => e,
                    other => {
                        let literal: String =
                            chars[start..].iter().map(|(_, c)| *c).skip(1).take_while(|c| *c != '\'').collect();
                        return Err(SoqlError::at(
                            "MALFORMED_QUERY",
                            src,
                            off,
                            format!(
                                "Invalid string literal '{literal}'. Illegal character sequence '\\{other}' in string literal."
                            ),
                        ));
                    }
                };
                value.push(decoded);
                pattern.push(LikeTok::Char(decoded));
                i += 2;
            }
            '%' => {
                value.push(c);
                pattern.push(LikeTok::AnyMany);
                i += 1;
            }
            '_' => {
                value.push(c);
                pattern.push(LikeTok::AnyOne);
                i += 1;
            }
            other => {
                value.push(other);
                pattern.push(LikeTok::Char(other));
                i += 1;
            }
        }
    }
}

fn number_or_date(src: &str, chars: &[(usize, char)], start: usize) -> Result<(Tok, usize), SoqlError> {
    let at = |i: usize| chars.get(i).map(|(_, c)| *c);
    let offset = |i: usize| chars.get(i).map_or(src.len(), |(o, _)| *o);
    let is_digits = |from: usize, n: usize| (from..from + n).all(|k| at(k).is_some_and(|c| c.is_ascii_digit()));
    // yyyy-mm-dd, optionally followed by Thh:mm:ss[.fff](Z|±hh:mm|±hhmm).
    if is_digits(start, 4)
        && at(start + 4) == Some('-')
        && is_digits(start + 5, 2)
        && at(start + 7) == Some('-')
        && is_digits(start + 8, 2)
    {
        let date_end = start + 10;
        let date_text = &src[offset(start)..offset(date_end)];
        if at(date_end) == Some('T') {
            let mut i = date_end + 1;
            while at(i).is_some_and(|c| c.is_ascii_digit() || matches!(c, ':' | '.' | '+' | '-' | 'Z')) {
                i += 1;
            }
            let text = &src[offset(start)..offset(i)];
            // Salesforce requires an explicit zone: a bare local time is not a datetime literal.
            let zoned = text.ends_with('Z') || text[11..].contains(['+', '-']);
            return match parse_datetime(text).filter(|_| zoned) {
                Some(t) => Ok((Tok::DateTime(t), i)),
                None => {
                    Err(SoqlError::at("MALFORMED_QUERY", src, offset(start), format!("unexpected token: '{text}'")))
                }
            };
        }
        return match NaiveDate::parse_from_str(date_text, "%Y-%m-%d") {
            Ok(d) => Ok((Tok::Date(d), date_end)),
            Err(_) => {
                Err(SoqlError::at("MALFORMED_QUERY", src, offset(start), format!("unexpected token: '{date_text}'")))
            }
        };
    }
    let mut i = start + 1;
    while at(i).is_some_and(|c| c.is_ascii_digit()) {
        i += 1;
    }
    if at(i) == Some('.') && at(i + 1).is_some_and(|c| c.is_ascii_digit()) {
        i += 1;
        while at(i).is_some_and(|c| c.is_ascii_digit()) {
            i += 1;
        }
    }
    Ok((Tok::Num(src[offset(start)..offset(i)].to_string()), i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        tokenize(s).unwrap().into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn escapes_decode() {
        let t = toks(r"'a\'b\\c\n\t\_\%_%'");
        let Tok::Str(lit) = &t[0] else { panic!("not a string: {t:?}") };
        assert_eq!(lit.value, "a'b\\c\n\t_%_%");
        assert_eq!(lit.pattern[lit.pattern.len() - 2..], [LikeTok::AnyOne, LikeTok::AnyMany]);
        assert_eq!(lit.pattern[7], LikeTok::Char('_'));
    }

    #[test]
    fn bad_escape_and_unterminated() {
        let e = tokenize(r"SELECT Id FROM Account WHERE Name = 'a\qb'").unwrap_err();
        assert_eq!(e.code, "MALFORMED_QUERY");
        assert!(e.message.contains("Illegal character sequence '\\q'"), "{}", e.message);
        let e = tokenize("SELECT Id FROM Account WHERE Name = 'abc").unwrap_err();
        assert!(e.message.contains("<EOF>"));
    }

    #[test]
    fn numbers_dates_operators() {
        assert_eq!(
            toks("-1.5 <> != <= >= < > = 2024-05-01"),
            vec![
                Tok::Num("-1.5".into()),
                Tok::Op(CmpOp::Ne),
                Tok::Op(CmpOp::Ne),
                Tok::Op(CmpOp::Le),
                Tok::Op(CmpOp::Ge),
                Tok::Op(CmpOp::Lt),
                Tok::Op(CmpOp::Gt),
                Tok::Op(CmpOp::Eq),
                Tok::Date(NaiveDate::from_ymd_opt(2024, 5, 1).unwrap()),
                Tok::Eof
            ]
        );
        let want = parse_datetime("2024-05-01T09:00:00Z").unwrap();
        for s in ["2024-05-01T09:00:00Z", "2024-05-01T10:00:00+01:00", "2024-05-01T09:00:00.000+0000"] {
            assert_eq!(toks(s), vec![Tok::DateTime(want), Tok::Eof], "{s}");
        }
        assert!(tokenize("2024-05-01T09:00:00").is_err());
        assert!(tokenize("2024-13-01").is_err());
    }
}
