//! HTML building blocks: escaping, the page frame and small formatters. Every value that comes
//! from the store, the config or a request goes through [`esc`] before it is
//! written into a page.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

/// Escapes text for an element's content or a quoted attribute value.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a value for a URL path segment or query value (then escape it as usual).
pub fn url(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

const NAV: &[(&str, &str, &str)] = &[
    ("overview", "/console/", "Overview"),
    ("failures", "/console/failures", "Failures"),
    ("matching", "/console/matching", "Matching"),
    ("budget", "/console/budget", "API budget"),
    ("config", "/console/config", "Config"),
];

const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2430;background:#f6f7f9}\
header{background:#1d2430;color:#fff;padding:10px 24px;display:flex;gap:18px;align-items:center}\
header a{color:#cfd8e3;text-decoration:none}header a.on{color:#fff;font-weight:600}\
header .brand{font-weight:700;color:#fff;margin-right:12px}header form{margin-left:auto}\
main{padding:18px 24px;max-width:1400px}h1{font-size:20px;margin:4px 0 14px}h2{font-size:16px;margin:22px 0 8px}\
table{border-collapse:collapse;background:#fff;margin-bottom:10px}th,td{border:1px solid #dde2e8;padding:4px 8px;text-align:left;vertical-align:top}\
th{background:#eef1f5;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.succeeded{color:#17803d}.failed,.error{color:#b42318}.partial,.deferred,.abandoned,.cancelled{color:#b54708}.running{color:#175cd3}\
.muted{color:#667085}code,pre{font-family:ui-monospace,monospace;font-size:13px}pre{background:#fff;border:1px solid #dde2e8;padding:10px;overflow:auto}\
button{cursor:pointer;padding:3px 10px}form.inline{display:inline}.notice{background:#ecfdf3;border:1px solid #abefc6;padding:8px 12px}\
.bar{background:#7aa7e0;height:10px;display:inline-block}.old{color:#b42318;text-decoration:line-through}.new{color:#17803d}\
.login{margin:30px 0}.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde2e8;padding:10px 14px;min-width:150px}\
.card b{display:block;font-size:20px}.cols{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}\
table[data-test=facts] thead{display:none}table[data-test=failures]{width:100%}table[data-test=failures] td{overflow-wrap:anywhere}table[data-test=failures] td:last-child form{display:block;margin:2px 0}";

/// The page frame: navigation (with the logout form when there is a session), title, body.
pub fn layout(title: &str, active: &str, csrf: Option<&str>, body: &str) -> String {
    let mut nav = String::new();
    if !active.is_empty() {
        for (key, href, label) in NAV {
            let on = if *key == active { " class=\"on\"" } else { "" };
            let _ = write!(nav, "<a href=\"{href}\"{on}>{label}</a>");
        }
        if let Some(csrf) = csrf {
            let _ = write!(
                nav,
                "<form method=\"post\" action=\"/console/logout\">{}<button type=\"submit\">Log out</button></form>",
                csrf_field(csrf)
            );
        }
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t} · usagesync</title>\
         <meta name=\"viewport\" content=\"width=device-width\"><style>{STYLE}</style></head><body>\
         <header><span class=\"brand\">usagesync</span>{nav}</header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

pub fn csrf_field(csrf: &str) -> String {
    format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(csrf))
}

/// A POST button carrying hidden fields (already the caller's values; escaped here).
pub fn action_button(action: &str, csrf: Option<&str>, fields: &[(&str, &str)], label: &str, test_id: &str) -> String {
    let mut hidden = csrf.map(csrf_field).unwrap_or_default();
    for (k, v) in fields {
        let _ = write!(hidden, "<input type=\"hidden\" name=\"{}\" value=\"{}\">", esc(k), esc(v));
    }
    format!(
        "<form class=\"inline\" method=\"post\" action=\"{}\">{hidden}<button type=\"submit\" data-test=\"{}\">{}</button></form>",
        esc(action),
        esc(test_id),
        esc(label)
    )
}

pub fn time(t: &DateTime<Utc>) -> String {
    // Non-breaking, so a time never wraps inside a table cell.
    t.format("%Y-%m-%d&nbsp;%H:%M:%S&nbsp;UTC").to_string()
}

pub fn opt_time(t: Option<&DateTime<Utc>>) -> String {
    t.map_or_else(|| "—".to_owned(), time)
}

/// `12,345`.
pub fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn seconds(s: f64) -> String {
    if s < 10.0 { format!("{s:.3} s") } else { format!("{s:.1} s") }
}

/// A run state, coloured.
pub fn state(s: &str) -> String {
    format!("<span class=\"{0}\">{0}</span>", esc(s))
}

/// A JSON value as a person reads it: strings bare, everything else as JSON.
pub fn value(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "null".to_owned(),
        other => other.to_string(),
    }
}

/// A simple table; cells are HTML already.
pub fn table(head: &[&str], rows: &[Vec<String>], test_id: &str) -> String {
    let mut out = format!("<table data-test=\"{}\"><thead><tr>", esc(test_id));
    for h in head {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\" onclick='y'>&</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;&lt;/a&gt;"
        );
        assert_eq!(url("a b/c?d=é"), "a%20b%2Fc%3Fd%3D%C3%A9");
        assert_eq!(num(1_234_567), "1,234,567");
        assert_eq!(num(12), "12");
    }
}
