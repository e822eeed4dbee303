//! Reading an aggregation response one row at a time: the body's `results` array is walked with
//! serde's streaming visitor, so each row is built, handed over and dropped before the next one
//! is parsed, and the response never exists as one tree of rows (at a million rows that tree is
//! several times the size of the body).

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Why [`for_each_row`] stopped early.
#[derive(Debug)]
pub(crate) enum Stop<E> {
    /// The body is not an aggregation response.
    Parse(serde_json::Error),
    /// The caller's function refused a row.
    Caller(E),
}

/// Hands each row of `body`'s `results` to `each`, in order; other fields are skipped unparsed.
/// Returns the number of rows. Rows handed over before an error stay handed over.
pub(crate) fn for_each_row<E>(body: &[u8], each: &mut dyn FnMut(Value) -> Result<(), E>) -> Result<u64, Stop<E>> {
    let mut state = State { each, stopped: None, rows: 0 };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = Response(&mut state).deserialize(&mut de).and_then(|()| de.end());
    // The caller's own error wins over the parse error it was smuggled out as.
    if let Some(e) = state.stopped.take() {
        return Err(Stop::Caller(e));
    }
    parsed.map_err(Stop::Parse)?;
    Ok(state.rows)
}

struct State<'f, E> {
    each: &'f mut dyn FnMut(Value) -> Result<(), E>,
    stopped: Option<E>,
    rows: u64,
}

/// The response object: `results` streamed, anything else ignored.
struct Response<'s, 'f, E>(&'s mut State<'f, E>);

impl<'de, E> DeserializeSeed<'de> for Response<'_, '_, E> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, E> Visitor<'de> for Response<'_, '_, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an aggregation response object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key == "results" {
                if seen {
                    return Err(de::Error::duplicate_field("results"));
                }
                seen = true;
                map.next_value_seed(Results(&mut *self.0))?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

/// The `results` array: each element parsed alone and handed to the caller.
struct Results<'s, 'f, E>(&'s mut State<'f, E>);

impl<'de, E> DeserializeSeed<'de> for Results<'_, '_, E> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, E> Visitor<'de> for Results<'_, '_, E> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of result rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(row) = seq.next_element::<Value>()? {
            self.0.rows += 1;
            if let Err(e) = (self.0.each)(row) {
                self.0.stopped = Some(e);
                // serde cannot carry the caller's type; `for_each_row` swaps this for it.
                return Err(de::Error::custom("stopped by the caller"));
            }
        }
        Ok(())
    }
}

/// Splits an aggregation response into rows as its chunks arrive, so that a page costs one row's
/// bytes at a time rather than its whole body (a million-row page is tens of megabytes).
///
/// Only the bytes between the rows are kept (the response without its rows: `"results": []`
/// and Pendo's few other fields), and [`RowSplitter::finish`] hands them to [`for_each_row`],
/// which checks their shape, so a streamed body is refused exactly where a whole one is.
/// A row is cut out by its brackets and strings alone, then parsed on its own.
pub(crate) struct RowSplitter {
    /// Brackets open outside strings, the response object's own included.
    depth: u32,
    in_str: bool,
    escaped: bool,
    at: At,
    /// The response without the rows of its `results` array.
    rest: Vec<u8>,
    /// Where the depth-1 string being read began in `rest`, while it is a key.
    key_start: Option<usize>,
    /// The next depth-1 string is a key (after `{` or `,`), not a value.
    expect_key: bool,
    /// The last depth-1 key was `results`, and its value has not begun.
    results_next: bool,
    row: Vec<u8>,
    rows: u64,
    /// No row, nor the rest, may grow past this.
    max_bytes: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum At {
    /// Outside the `results` array.
    Rest,
    /// Between the rows: a row or `]` next, or after a comma a row only.
    Between { after_row: bool, after_comma: bool },
    /// Inside a row that is an object or array, a string, or another scalar.
    Row(RowKind),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RowKind {
    Nested,
    Str,
    Scalar,
}

fn parse_error(message: &str) -> serde_json::Error {
    <serde_json::Error as de::Error>::custom(message)
}

impl RowSplitter {
    pub(crate) fn new(max_bytes: usize) -> RowSplitter {
        RowSplitter {
            depth: 0,
            in_str: false,
            escaped: false,
            at: At::Rest,
            rest: Vec::new(),
            key_start: None,
            expect_key: false,
            results_next: false,
            row: Vec::new(),
            rows: 0,
            max_bytes,
        }
    }

    /// Reads the next chunk of the body, handing over each row it completes.
    pub(crate) fn feed<E>(
        &mut self,
        chunk: &[u8],
        each: &mut dyn FnMut(Value) -> Result<(), E>,
    ) -> Result<(), Stop<E>> {
        let mut i = 0;
        while let Some(&b) = chunk.get(i) {
            // Inside an object or array row most bytes change nothing but the row's length (a
            // page is tens of megabytes): the run up to the next byte that matters is copied
            // in one go.
            let run = match self.at {
                At::Row(RowKind::Nested) if !self.escaped => {
                    let matters: fn(&u8) -> bool = if self.in_str {
                        |b| matches!(b, b'"' | b'\\')
                    } else {
                        |b| matches!(b, b'"' | b'{' | b'[' | b'}' | b']')
                    };
                    chunk[i..].iter().position(matters).unwrap_or(chunk.len() - i)
                }
                _ => 0,
            };
            if run > 0 {
                self.row.extend_from_slice(&chunk[i..i + run]);
                i += run;
            } else {
                self.byte(b, each)?;
                i += 1;
            }
            if self.row.len() > self.max_bytes || self.rest.len() > self.max_bytes {
                let message = format!("a result row, or the response around the rows, passed {} bytes", self.max_bytes);
                return Err(Stop::Parse(parse_error(&message)));
            }
        }
        Ok(())
    }

    /// Ends the body: checks the response around the rows. Returns the number of rows.
    pub(crate) fn finish<E>(&mut self, each: &mut dyn FnMut(Value) -> Result<(), E>) -> Result<u64, Stop<E>> {
        if self.at != At::Rest {
            return Err(Stop::Parse(parse_error("EOF while parsing the results array")));
        }
        // Rows the scan did not cut out (a `results` key spelt with escapes) are still rows.
        Ok(self.rows + for_each_row(&self.rest, each)?)
    }

    /// Rows handed over so far.
    pub(crate) fn rows(&self) -> u64 {
        self.rows
    }

    /// What to show of the body in an error: the row being read, or the response around the
    /// rows.
    pub(crate) fn context(&self) -> &[u8] {
        if self.row.is_empty() { &self.rest } else { &self.row }
    }

    fn byte<E>(&mut self, b: u8, each: &mut dyn FnMut(Value) -> Result<(), E>) -> Result<(), Stop<E>> {
        match self.at {
            At::Row(kind) => self.row_byte(b, kind, each),
            At::Between { after_row, after_comma } => match b {
                b' ' | b'\t' | b'\n' | b'\r' => Ok(()),
                b']' if !after_comma => {
                    self.depth -= 1;
                    self.rest.push(b);
                    self.at = At::Rest;
                    Ok(())
                }
                b',' if after_row => {
                    self.at = At::Between { after_row: false, after_comma: true };
                    Ok(())
                }
                _ if after_row => Err(Stop::Parse(parse_error("expected `,` or `]` after a result row"))),
                b']' | b',' => Err(Stop::Parse(parse_error("expected a result row after `,`"))),
                _ => {
                    self.row.clear();
                    self.row.push(b);
                    let kind = match b {
                        b'{' | b'[' => {
                            self.depth += 1;
                            RowKind::Nested
                        }
                        b'"' => {
                            self.in_str = true;
                            RowKind::Str
                        }
                        _ => RowKind::Scalar,
                    };
                    self.at = At::Row(kind);
                    Ok(())
                }
            },
            At::Rest => {
                self.rest_byte(b);
                Ok(())
            }
        }
    }

    fn row_byte<E>(
        &mut self,
        b: u8,
        kind: RowKind,
        each: &mut dyn FnMut(Value) -> Result<(), E>,
    ) -> Result<(), Stop<E>> {
        if kind == RowKind::Scalar && matches!(b, b',' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
            self.row_done(each)?;
            return self.byte(b, each);
        }
        self.row.push(b);
        if self.in_str {
            if self.string_ends(b) && kind == RowKind::Str {
                return self.row_done(each);
            }
            return Ok(());
        }
        match b {
            b'"' => self.in_str = true,
            b'{' | b'[' => self.depth += 1,
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                if self.depth == 2 {
                    return self.row_done(each);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn row_done<E>(&mut self, each: &mut dyn FnMut(Value) -> Result<(), E>) -> Result<(), Stop<E>> {
        self.end_row(each)?;
        self.at = At::Between { after_row: true, after_comma: false };
        Ok(())
    }

    fn end_row<E>(&mut self, each: &mut dyn FnMut(Value) -> Result<(), E>) -> Result<(), Stop<E>> {
        let row: Value = serde_json::from_slice(&self.row).map_err(Stop::Parse)?;
        self.row.clear();
        self.rows += 1;
        each(row).map_err(Stop::Caller)
    }

    /// A byte inside a string: whether it closes the string.
    fn string_ends(&mut self, b: u8) -> bool {
        if self.escaped {
            self.escaped = false;
        } else if b == b'\\' {
            self.escaped = true;
        } else if b == b'"' {
            self.in_str = false;
            return true;
        }
        false
    }

    fn rest_byte(&mut self, b: u8) {
        self.rest.push(b);
        if self.in_str {
            if self.string_ends(b)
                && let Some(start) = self.key_start.take()
            {
                self.results_next = &self.rest[start..] == b"\"results\"";
                self.expect_key = false;
            }
            return;
        }
        match b {
            b'"' => {
                self.in_str = true;
                if self.depth == 1 && self.expect_key {
                    self.key_start = Some(self.rest.len() - 1);
                }
            }
            b'[' if self.depth == 1 && self.results_next => {
                self.depth = 2;
                self.results_next = false;
                self.at = At::Between { after_row: false, after_comma: false };
            }
            b'{' | b'[' => {
                self.depth += 1;
                self.results_next = false;
                if self.depth == 1 {
                    self.expect_key = b == b'{';
                }
            }
            b'}' | b']' => self.depth = self.depth.saturating_sub(1),
            b',' if self.depth == 1 => {
                self.expect_key = true;
                self.results_next = false;
            }
            b' ' | b'\t' | b'\n' | b'\r' | b':' => {}
            _ => {
                if self.depth == 1 {
                    self.results_next = false;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn collect(body: &str) -> Result<(u64, Vec<Value>), Stop<String>> {
        let mut rows = Vec::new();
        let n = for_each_row(body.as_bytes(), &mut |row| {
            rows.push(row);
            Ok::<(), String>(())
        })?;
        Ok((n, rows))
    }

    #[test]
    fn rows_arrive_in_order_and_other_fields_are_ignored() {
        let body = r#"{"startTime": 1700000000000, "extra": {"nested": [1, {"a": null}]},
            "results": [{"accountId": "a1", "n": 3}, {"accountId": "a2", "n": 1.5}],
            "trailing": "x"}"#;
        let (n, rows) = collect(body).unwrap();
        assert_eq!(n, 2);
        assert_eq!(rows, vec![json!({"accountId": "a1", "n": 3}), json!({"accountId": "a2", "n": 1.5})]);
    }

    #[test]
    fn empty_or_missing_results_give_no_rows() {
        assert_eq!(collect(r#"{"startTime": 1, "results": []}"#).unwrap().0, 0);
        assert_eq!(collect("{}").unwrap().0, 0);
    }

    #[test]
    fn malformed_bodies_are_parse_errors() {
        for body in [
            r#"{"results": [{"accountId": "a1"}, {"accountId": "#,
            r#"{"results": {"accountId": "a1"}}"#,
            r#"[{"accountId": "a1"}]"#,
            r#"{"results": [], "results": []}"#,
            r#"{"results": []} trailing"#,
            "",
        ] {
            match collect(body) {
                Err(Stop::Parse(e)) => assert!(!e.to_string().is_empty(), "{body}"),
                other => panic!("{body:?} gave {other:?}"),
            }
        }
        let Err(Stop::Parse(e)) = collect(r#"{"results": 3}"#) else { panic!() };
        assert!(e.to_string().contains("an array of result rows"), "{e}");
    }

    /// The body fed in chunks cut at `cuts` (byte offsets, any order).
    fn split(body: &[u8], cuts: &[usize]) -> Result<(u64, Vec<Value>), Stop<String>> {
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (body.len() + 1)).collect();
        cuts.extend([0, body.len()]);
        cuts.sort_unstable();
        let mut rows = Vec::new();
        let mut each = |row| {
            rows.push(row);
            Ok::<(), String>(())
        };
        let mut splitter = RowSplitter::new(1 << 20);
        for w in cuts.windows(2) {
            splitter.feed(&body[w[0]..w[1]], &mut each)?;
        }
        let n = splitter.finish(&mut each)?;
        Ok((n, rows))
    }

    #[test]
    fn a_body_split_anywhere_gives_the_rows_and_errors_of_the_whole() {
        let bodies = [
            r#"{"startTime": 1700000000000, "extra": {"nested": [1, {"a": null}], "results": [9]},
            "results": [{"accountId": "a1", "n": 3}, {"accountId": "a\"]}", "n": 1.5}, [1, [2]], "s,]", -2.5e3, true, null],
            "trailing": "x"}"#,
            r#"{"results":[]}"#,
            r#"{ "results" : [ 1 , 2 ] , "x" : [ "results" , [ ] ] }"#,
            r#"{"resu\u006cts": [{"a": 1}]}"#,
            "{}",
            r#"{"results": [{"accountId": "a1"}, {"accountId": "#,
            r#"{"results": {"accountId": "a1"}}"#,
            r#"{"results": [1,]}"#,
            r#"{"results": [,1]}"#,
            r#"{"results": [1 2]}"#,
            r#"{"results": [1"#,
            r#"[{"accountId": "a1"}]"#,
            r#"{"results": [], "results": []}"#,
            r#"{"results": []} trailing"#,
            r#"{"results": 3}"#,
            "",
        ];
        for body in bodies {
            let whole = collect(body);
            for cuts in
                [vec![], vec![1], vec![7, 8, 9], (0..body.len()).collect(), vec![body.len() / 2, body.len() / 3]]
            {
                let got = split(body.as_bytes(), &cuts);
                match (&whole, &got) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{body} cut at {cuts:?}"),
                    (Err(Stop::Parse(_)), Err(Stop::Parse(_))) => {}
                    _ => panic!("{body} cut at {cuts:?}: whole {whole:?}, split {got:?}"),
                }
            }
        }
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[\\[\\]{}\",:\\\\ ]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\"\\\\]{0,5}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn any_rows_cut_anywhere_come_out_whole(
            rows in proptest::collection::vec(json_value(), 0..8),
            other in json_value(),
            cuts in proptest::collection::vec(0usize..10_000, 0..12),
            pretty in proptest::bool::ANY,
        ) {
            let response = serde_json::json!({"before": other, "results": rows, "after": other});
            let body = if pretty { serde_json::to_vec_pretty(&response) } else { serde_json::to_vec(&response) };
            let body = body.unwrap();
            let (n, got) = split(&body, &cuts).unwrap();
            proptest::prop_assert_eq!(n, rows.len() as u64);
            proptest::prop_assert_eq!(got, rows);
            // Any cut short of the end is refused, never taken for a whole response.
            if let Some(&cut) = cuts.first() {
                let cut = cut % body.len();
                proptest::prop_assert!(split(&body[..cut], &cuts[1..]).is_err());
            }
        }
    }

    #[test]
    fn a_split_body_keeps_one_row_at_a_time() {
        let row = format!(r#"{{"accountId": "{}", "n": 1}}"#, "x".repeat(100));
        let body = format!(r#"{{"results": [{}]}}"#, vec![row.as_str(); 10_000].join(","));
        let mut splitter = RowSplitter::new(1 << 20);
        let mut n = 0;
        for chunk in body.as_bytes().chunks(4096) {
            splitter
                .feed(chunk, &mut |_| {
                    n += 1;
                    Ok::<(), String>(())
                })
                .unwrap();
            assert!(splitter.row.capacity() < 4 * row.len() && splitter.rest.len() < 64, "{}", splitter.rest.len());
        }
        assert_eq!(splitter.finish(&mut |_| Ok::<(), String>(())).unwrap(), 10_000);
        assert_eq!(n, 10_000);
        let mut small = RowSplitter::new(50);
        let Err(Stop::Parse(e)) = small.feed(body.as_bytes(), &mut |_| Ok::<(), String>(())) else { panic!() };
        assert!(e.to_string().contains("50 bytes"), "{e}");
    }

    #[test]
    fn the_callers_error_stops_the_walk_and_comes_back_as_is() {
        let mut seen = 0;
        let got = for_each_row(br#"{"results": [1, 2, 3]}"#, &mut |row| {
            seen += 1;
            if row == json!(2) { Err("no twos".to_string()) } else { Ok(()) }
        });
        assert!(matches!(got, Err(Stop::Caller(ref e)) if e == "no twos"), "{got:?}");
        assert_eq!(seen, 2);
    }
}
