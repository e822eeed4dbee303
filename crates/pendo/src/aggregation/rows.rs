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
