//! Where each key sits in the YAML text: a dotted key path → line and column index,
//! built from the parser's event stream, so that validation errors found after
//! deserializing can still name their line.

use std::collections::HashMap;

use serde_saphyr::granit_parser::{Event, Parser};

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
}

/// Key path → position of the key (for sequence items, of the item). Built
/// best-effort: on a syntax error it keeps whatever it saw before the error.
#[derive(Debug, Default)]
pub(crate) struct Locations {
    by_path: HashMap<String, Pos>,
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

impl Locations {
    pub(crate) fn index(text: &str) -> Self {
        let mut by_path = HashMap::new();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(text) {
            let Ok((event, span)) = event else { break };
            let pos = Pos { line: span.start.line(), column: span.start.col() + 1 };
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
            let is_node = matches!(
                event,
                Event::Scalar(..) | Event::Alias(..) | Event::MappingStart(..) | Event::SequenceStart(..)
            );
            // The path this node would have, and whether it is a map key.
            let mut node_path = String::new();
            let mut is_key = false;
            if is_node {
                match stack.last_mut() {
                    Some(Frame::Map { path, key, skipping }) => match key.take() {
                        Some(k) => node_path = join(path, &k),
                        None => {
                            is_key = true;
                            match &event {
                                Event::Scalar(value, ..) => {
                                    let full = join(path, value);
                                    by_path.entry(full).or_insert(pos);
                                    *key = Some(value.to_string());
                                }
                                _ => {
                                    *skipping = 1;
                                    *key = Some(String::new());
                                }
                            }
                        }
                    },
                    Some(Frame::Seq { path, index }) => {
                        node_path = format!("{path}[{index}]");
                        by_path.entry(node_path.clone()).or_insert(pos);
                        *index += 1;
                    }
                    None => {}
                }
            }
            if is_key {
                continue;
            }
            match event {
                Event::MappingStart(..) => stack.push(Frame::Map { path: node_path, key: None, skipping: 0 }),
                Event::SequenceStart(..) => stack.push(Frame::Seq { path: node_path, index: 0 }),
                Event::MappingEnd | Event::SequenceEnd => {
                    stack.pop();
                }
                _ => {}
            }
        }
        Self { by_path }
    }

    /// The position of `path`, or of its nearest recorded ancestor (a missing key is
    /// reported at the map that should hold it).
    pub(crate) fn find(&self, path: &str) -> Option<Pos> {
        let mut current = path;
        loop {
            if let Some(pos) = self.by_path.get(current) {
                return Some(*pos);
            }
            let cut = current.rfind(['.', '['])?;
            current = &current[..cut];
        }
    }

    /// The key path recorded at exactly this position, if any (used to name the key of
    /// an error the deserializer reported by position only).
    pub(crate) fn path_at(&self, line: usize, column: usize) -> Option<&str> {
        self.by_path
            .iter()
            .filter(|(_, pos)| pos.line == line && pos.column == column)
            .map(|(path, _)| path.as_str())
            .max_by_key(|path| path.len())
    }

    /// The deepest key path on `line`, for errors located at a value rather than a key.
    pub(crate) fn path_on_line(&self, line: usize) -> Option<&str> {
        self.by_path
            .iter()
            .filter(|(_, pos)| pos.line == line)
            .map(|(path, _)| path.as_str())
            .max_by_key(|path| path.len())
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() { key.to_owned() } else { format!("{parent}.{key}") }
}
