//! Plain aligned tables and prose for the terminal: the first column left-aligned, the rest
//! right-aligned when they hold numbers, and everything fitted to the output's width (`COLUMNS`,
//! else the terminal's, else 80): the widest columns are narrowed and their cells wrapped, so no
//! line is wider than the screen and nothing is cut off.

/// The width output should fit.
pub fn width() -> usize {
    if let Some(cols) = std::env::var("COLUMNS").ok().and_then(|v| v.trim().parse::<usize>().ok()) {
        return cols.max(MIN_WIDTH);
    }
    ::console::Term::stdout().size_checked().map_or(DEFAULT_WIDTH, |(_, cols)| usize::from(cols).max(MIN_WIDTH))
}

const DEFAULT_WIDTH: usize = 80;
const MIN_WIDTH: usize = 20;
/// A column is never narrowed below this (or its natural width, if smaller).
const MIN_COLUMN: usize = 6;

pub fn print(headers: &[&str], rows: &[Vec<String>]) {
    out!("{}", render_within(headers, rows, width()));
}

/// Prints prose wrapped to the output's width (see [`wrap`]).
pub fn say(text: &str) {
    outln!("{}", wrap(text, width()));
}

/// Wraps each line of `text` at spaces to `width` columns; continuation lines keep the line's
/// own indentation. A word longer than the width (a URL, an id) stays whole.
pub fn wrap(text: &str, width: usize) -> String {
    let mut out = Vec::new();
    for line in text.split('\n') {
        let indent: String = line.chars().take_while(|c| *c == ' ').collect();
        let mut current = String::new();
        for word in line.trim_start().split(' ') {
            let len = current.chars().count();
            if !current.is_empty() && len + 1 + word.chars().count() > width && len > indent.len() {
                out.push(std::mem::take(&mut current));
            }
            if current.is_empty() {
                current.push_str(&indent);
            } else {
                current.push(' ');
            }
            current.push_str(word);
        }
        out.push(current);
    }
    out.join("\n")
}

/// Splits a cell into lines of at most `width` characters, at spaces where it can.
fn cell_lines(cell: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for line in wrap(cell, width).split('\n') {
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            lines.push(String::new());
        }
        for chunk in chars.chunks(width.max(1)) {
            lines.push(chunk.iter().collect());
        }
    }
    lines
}

#[cfg(test)]
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    render_within(headers, rows, usize::MAX)
}

pub fn render_within(headers: &[&str], rows: &[Vec<String>], max: usize) -> String {
    let cols = headers.len();
    let mut width: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(cols) {
            width[i] = width[i].max(cell.chars().count());
        }
    }
    // Narrow the widest column one step at a time until the table fits: first no column below
    // its longest word (ids and names stay whole, text wraps at spaces), then, if that is not
    // enough, down to a few characters.
    let longest_word: Vec<usize> = (0..cols)
        .map(|i| {
            let cells = rows.iter().filter_map(|r| r.get(i));
            cells.flat_map(|c| c.split(' ')).map(|w| w.chars().count()).max().unwrap_or(0)
        })
        .collect();
    let total = |width: &[usize]| width.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
    for floor in [
        width.iter().zip(&longest_word).map(|(w, l)| (*w).min((*l).max(MIN_COLUMN))).collect::<Vec<_>>(),
        width.iter().map(|w| (*w).min(MIN_COLUMN)).collect(),
    ] {
        while total(&width) > max {
            let Some((i, _)) = width.iter().enumerate().filter(|(i, w)| **w > floor[*i]).max_by_key(|(_, w)| **w)
            else {
                break;
            };
            width[i] -= 1;
        }
    }
    let numeric: Vec<bool> = (0..cols)
        .map(|i| {
            rows.iter()
                .all(|r| r.get(i).is_none_or(|c| c.chars().all(|ch| ch.is_ascii_digit() || ",.%-/ ".contains(ch))))
        })
        .collect();
    let line = |cells: Vec<&str>| -> String {
        let wrapped: Vec<Vec<String>> = cells.iter().enumerate().map(|(i, c)| cell_lines(c, width[i])).collect();
        let height = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        let mut out = String::new();
        for n in 0..height {
            let mut text = String::new();
            for (i, lines) in wrapped.iter().enumerate() {
                let cell = lines.get(n).map_or("", String::as_str);
                let pad = width[i].saturating_sub(cell.chars().count());
                if i > 0 {
                    text.push_str("  ");
                }
                if numeric[i] && i > 0 {
                    text.push_str(&" ".repeat(pad));
                    text.push_str(cell);
                } else {
                    text.push_str(cell);
                    text.push_str(&" ".repeat(pad));
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    };
    let mut out = line(headers.to_vec());
    out.push_str(&line(width.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(String::as_str).collect()));
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// 12345 → "12,345".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_numbers_right_and_text_left() {
        let t = render(&["run", "calls"], &[vec!["first".into(), "12".into()], vec!["2".into(), "1,024".into()]]);
        assert_eq!(t, "run    calls\n-----  -----\nfirst     12\n2      1,024\n");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }

    #[test]
    fn a_wide_table_is_fitted_by_wrapping_its_widest_column() {
        let long = "a validation rule refused the value because the number is out of range for the field";
        let rows = vec![vec!["0018d000000ABCDEFG".into(), "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(), long.into()]];
        let t = render_within(&["record", "error", "message"], &rows, 60);
        assert!(t.lines().all(|l| l.chars().count() <= 60), "{t}");
        for word in long.split(' ') {
            assert!(t.contains(word), "nothing is cut off: {word} in {t}");
        }
        assert!(t.lines().count() > 3, "the message wraps onto more lines: {t}");
    }

    #[test]
    fn prose_wraps_at_spaces_and_keeps_indentation() {
        let w = wrap("  one two three four five six", 12);
        assert_eq!(w, "  one two\n  three four\n  five six");
        assert!(wrap("https://a-very-long-url.example/path", 10).contains("https://a-very-long-url.example/path"));
    }
}
