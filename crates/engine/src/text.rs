//! Templated text: the `{name}` placeholders of a configured subject, description or field
//! value, checked against what the template offers when the config loads and filled in per
//! record; and feature lists shown by name rather than Pendo id.

use std::collections::HashMap;

/// Checks that `text` closes every `{` and names only placeholders `known` accepts; `listed`
/// is what the error message offers (and where "did you mean" looks).
///
/// # Errors
/// A message for the config's error list.
pub fn check(text: &str, known: &dyn Fn(&str) -> bool, listed: &[String]) -> Result<(), String> {
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err(format!("has a `{{` without its `}}`: {text}"));
        };
        let name = &rest[open + 1..open + close];
        if !known(name) {
            let hint = crate::preflight::closest(name, listed.iter().map(String::as_str))
                .map(|c| format!(" (did you mean {{{c}}}?)"))
                .unwrap_or_default();
            return Err(format!(
                "names {{{name}}}, which is not one of {}{hint}",
                listed.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
            ));
        }
        rest = &rest[open + close + 1..];
    }
    Ok(())
}

/// `text` with each `{name}` replaced by `value(name)`; a name without a value stays as written
/// (the load-time check makes that a name the template offers but has no value for here).
pub fn render(text: &str, value: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else { break };
        let name = &rest[open + 1..open + close];
        match value(name) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[open..=open + close]),
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// A number as a person reads it: at most two decimal places, none when they are zeros
/// (`42`, `42.5`, `0.33`).
pub fn number(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Feature ids as a list of their names from Pendo's feature catalogue (`names`: id → name);
/// an id the catalogue does not know (or names with an empty name) shows as the id.
pub fn feature_list(ids: &[String], names: &HashMap<String, String>) -> String {
    ids.iter()
        .map(|id| names.get(id).filter(|n| !n.trim().is_empty()).map_or(id.as_str(), String::as_str))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_checked_and_filled() {
        let listed = vec!["account".to_owned(), "score".to_owned()];
        let known = |n: &str| listed.iter().any(|l| l == n);
        assert!(check("Drop: {account} at {score}", &known, &listed).is_ok());
        let e = check("Drop: {acount}", &known, &listed).unwrap_err();
        assert!(e.contains("did you mean {account}"), "{e}");
        assert!(check("Drop: {account", &known, &listed).unwrap_err().contains("without its"));
        let filled = render("Drop: {account} at {score} {other}", &|n| (n == "account").then(|| "Acme".into()));
        assert_eq!(filled, "Drop: Acme at {score} {other}");
    }

    #[test]
    fn features_show_by_name_and_unknown_ids_as_themselves() {
        let names = HashMap::from([("f1".to_owned(), "Reports".to_owned()), ("f2".to_owned(), " ".to_owned())]);
        assert_eq!(feature_list(&["f1".into(), "f2".into(), "f3".into()], &names), "Reports, f2, f3");
        assert_eq!(number(42.0), "42");
        assert_eq!(number(0.456), "0.46");
        assert_eq!(number(42.5), "42.5");
        assert_eq!((number(100.0), number(0.0)), ("100".into(), "0".into()));
    }
}
