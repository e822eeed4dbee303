//! Where each key sits in the YAML text: a dotted key path → line, column and the
//! extent of its `key: value` entry, built from the parser's event stream. Errors found
//! after deserializing use it to name their line; the loader uses the extents to blank
//! out an entry the deserializer rejected and read on, so one bad key does not hide
//! the rest.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    pos: Pos,
    /// Character offsets of the entry: from its key to the end of its value.
    start: usize,
    end: usize,
}

/// Key path → entry (for sequence items, the item). Built best-effort: on a syntax
/// error it keeps whatever it saw before the error and marks itself incomplete.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    by_path: HashMap<String, Entry>,
    complete: bool,
}

enum Frame {
    Map {
        path: String,
        /// The key whose value comes next; `None` while waiting for a key.
        key: Option<String>,
        /// Depth of a complex (non-scalar) key being skipped.
        skipping: usize,
    },
    Seq {
        path: String,
        index: usize,
    },
}

impl Frame {
    fn path(&self) -> &str {
        match self {
            Frame::Map { path, .. } | Frame::Seq { path, .. } => path,
        }
    }
}

impl Locations {
    pub(crate) fn index(text: &str) -> Self {
        let mut by_path: HashMap<String, Entry> = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        let mut complete = false;
        // Marks the end of the entry at `path` (the first recorded one wins, as
        // for positions, so a duplicate key does not move it).
        let close = |by_path: &mut HashMap<String, Entry>, path: &str, end: usize| {
            if let Some(entry) = by_path.get_mut(path)
                && entry.end == usize::MAX
            {
                entry.end = end;
            }
        };
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let pos = Pos { line: span.start.line(), column: span.start.col() + 1 };
            let open = |start| Entry { pos, start, end: usize::MAX };
            // A complex key (a map used as a key) is skipped whole; config keys are scalars.
            if let Some(Frame::Map { skipping, .. }) = stack.last_mut()
                && *skipping > 0
            {
                match event {
                    Event::MappingStart(..) | Event::SequenceStart(..) => *skipping += 1,
                    Event::MappingEnd | Event::SequenceEnd => *skipping -= 1,
                    _ => {}
                }
                continue;
            }
            if matches!(event, Event::StreamEnd) {
                complete = true;
            }
            let is_node = matches!(
                event,
                Event::Scalar(..) | Event::Alias(..) | Event::MappingStart(..) | Event::SequenceStart(..)
            );
            let mut node_path = String::new();
            if is_node {
                match stack.last_mut() {
                    Some(Frame::Map { path, key, skipping }) => match key.take() {
                        Some(k) => node_path = join(path, &k),
                        None => {
                            match &event {
                                Event::Scalar(value, ..) => {
                                    by_path.entry(join(path, value)).or_insert(open(span.start.index()));
                                    *key = Some(value.to_string());
                                }
                                _ => {
                                    *skipping = 1;
                                    *key = Some(String::new());
                                }
                            }
                            continue;
                        }
                    },
                    Some(Frame::Seq { path, index }) => {
                        node_path = format!("{path}[{index}]");
                        by_path.entry(node_path.clone()).or_insert(open(span.start.index()));
                        *index += 1;
                    }
                    None => {}
                }
            }
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map { path: node_path, key: None, skipping: 0 }),
                Event::SequenceStart(..) => stack.push(Frame::Seq { path: node_path, index: 0 }),
                Event::MappingEnd | Event::SequenceEnd => {
                    if let Some(frame) = stack.pop() {
                        close(&mut by_path, frame.path(), span.end.index());
                    }
                }
                Event::Scalar(..) | Event::Alias(..) => close(&mut by_path, &node_path, span.end.index()),
                _ => {}
            }
        }
        Self { by_path, complete }
    }

    /// Whether the whole text parsed as YAML (no syntax error).
    pub(crate) fn is_complete(&self) -> bool {
        self.complete
    }

    /// The position of `path`, or of its nearest recorded ancestor (a missing key is
    /// reported at the map that should hold it).
    pub(crate) fn find(&self, path: &str) -> Option<Pos> {
        let mut current = path;
        loop {
            if let Some(entry) = self.by_path.get(current) {
                return Some(entry.pos);
            }
            let cut = current.rfind(['.', '['])?;
            current = &current[..cut];
        }
    }

    /// The key path whose key starts exactly here (an unknown key is reported so).
    pub(crate) fn path_at(&self, line: usize, column: usize) -> Option<&str> {
        self.by_path
            .iter()
            .filter(|(_, e)| e.pos.line == line && e.pos.column == column)
            .map(|(path, _)| path.as_str())
            .max_by_key(|path| path.len())
    }

    /// The key whose value holds this position: the nearest key on the same line at or
    /// before the column (a value of the wrong type is reported at the value).
    pub(crate) fn path_for_value(&self, line: usize, column: usize) -> Option<&str> {
        self.by_path
            .iter()
            .filter(|(_, e)| e.pos.line == line && e.pos.column <= column)
            .max_by_key(|(path, e)| (e.pos.column, path.len()))
            .map(|(path, _)| path.as_str())
    }

    /// `text` with the entry at `path` replaced by spaces (line breaks kept, so every
    /// line and column elsewhere stays the same). `None` if the entry is unknown.
    pub(crate) fn blank(&self, text: &str, path: &str) -> Option<String> {
        let entry = self.by_path.get(path)?;
        if entry.end == usize::MAX || entry.end <= entry.start {
            return None;
        }
        Some(
            text.chars()
                .enumerate()
                .map(|(i, c)| if (entry.start..entry.end).contains(&i) && c != '\n' && c != '\r' { ' ' } else { c })
                .collect(),
        )
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}
