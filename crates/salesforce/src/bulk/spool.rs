//! Records to CSV: each record is serialised, flattened (`{"Account": {"Ext__c": "x"}}`
//! becomes the relationship column `Account.Ext__c`) and written as one row straight to a
//! spool file, so no more than one record is in memory at a time. A spool file is one job;
//! the next one starts before a row would take it past the size limit.
//!
//! Values: strings as they are, numbers and booleans in their JSON spelling, `null` as `#N/A`
//! (Salesforce's "set this field to null"), and a field the record does not have as an empty
//! cell (Salesforce's "leave this field unchanged").
//!
//! Each row's fingerprint (a hash of its cells) is kept with its input position: Salesforce
//! echoes the input cells in every result row, so a result is matched back to its row by the
//! same hash, whatever order the results come in.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{ColumnDelimiter, LineEnding};
use crate::error::{Error, Result};

/// Salesforce's "set to null" cell value.
pub(crate) const NULL_CELL: &str = "#N/A";

/// One job's worth of rows on disk.
#[derive(Debug)]
pub(crate) struct SpoolFile {
    pub(crate) file: tempfile::NamedTempFile,
    /// Input position of the first row.
    pub(crate) first_index: u64,
    pub(crate) rows: u64,
    pub(crate) fingerprints: Fingerprints,
}

/// Row fingerprint → input position, kept compact (12 bytes a row plus the table's slack):
/// this is the only per-row state of a job, and a job is capped by size, so memory is bounded
/// by the job size and not by the input. Repeated rows (same cells) queue up in `repeats` and
/// are handed out in input order.
#[derive(Debug, Default)]
pub(crate) struct Fingerprints {
    /// Input position of the job's first row; positions are stored relative to it.
    base: u64,
    first: HashMap<u64, u32>,
    repeats: HashMap<u64, std::collections::VecDeque<u32>>,
}

impl Fingerprints {
    fn with_base(base: u64) -> Self {
        Self { base, ..Self::default() }
    }

    fn insert(&mut self, hash: u64, index: u64) {
        let rel = u32::try_from(index - self.base).unwrap_or(u32::MAX);
        if let std::collections::hash_map::Entry::Vacant(e) = self.first.entry(hash) {
            e.insert(rel);
        } else {
            self.repeats.entry(hash).or_default().push_back(rel);
        }
    }

    /// The input position of a result row with this fingerprint, each position once.
    pub(crate) fn take(&mut self, hash: u64) -> Option<u64> {
        let rel = match self.first.remove(&hash) {
            Some(rel) => {
                if let Some(q) = self.repeats.get_mut(&hash)
                    && let Some(next) = q.pop_front()
                {
                    self.first.insert(hash, next);
                    if q.is_empty() {
                        self.repeats.remove(&hash);
                    }
                }
                rel
            }
            None => return None,
        };
        Some(self.base + u64::from(rel))
    }

    /// Input positions never matched by a result, in order.
    pub(crate) fn remaining(self) -> Vec<u64> {
        let base = self.base;
        let mut out: Vec<u64> = self
            .first
            .into_values()
            .chain(self.repeats.into_values().flatten())
            .map(|rel| base + u64::from(rel))
            .collect();
        out.sort_unstable();
        out
    }
}

/// The fingerprint of a row's cells.
pub(crate) fn fingerprint<'a>(cells: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h = DefaultHasher::new();
    for c in cells {
        c.len().hash(&mut h);
        h.write(c);
    }
    h.finish()
}

/// Turns records into CSV rows with a fixed header.
#[derive(Debug)]
pub(crate) struct Spooler {
    columns: Option<Vec<String>>,
    delimiter: ColumnDelimiter,
    line_ending: LineEnding,
    max_bytes: u64,
    next_index: u64,
    /// A row encoded but not yet written because it would not fit the previous file.
    carry: Option<(Vec<u8>, u64)>,
    encoder: csv::Writer<SharedBuf>,
    encoded: SharedBuf,
}

/// The encoder's output, shared so each row's bytes can be taken out after it is written.
#[derive(Debug, Clone, Default)]
struct SharedBuf(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Spooler {
    pub(crate) fn new(
        columns: Option<Vec<String>>,
        delimiter: ColumnDelimiter,
        line_ending: LineEnding,
        max_bytes: u64,
    ) -> Self {
        let terminator = match line_ending {
            LineEnding::Lf => csv::Terminator::Any(b'\n'),
            LineEnding::Crlf => csv::Terminator::CRLF,
        };
        let encoded = SharedBuf::default();
        let encoder = csv::WriterBuilder::new()
            .has_headers(false)
            .delimiter(delimiter.byte())
            .terminator(terminator)
            .quote_style(csv::QuoteStyle::Necessary)
            .from_writer(encoded.clone());
        Self { columns, delimiter, line_ending, max_bytes, next_index: 0, carry: None, encoder, encoded }
    }

    /// Rows read so far.
    pub(crate) fn rows_read(&self) -> u64 {
        self.next_index
    }

    fn encode<S: AsRef<[u8]>>(&mut self, cells: &[S]) -> Result<Vec<u8>> {
        self.encoder.write_record(cells).map_err(|e| Error::Spool(e.into()))?;
        self.encoder.flush().map_err(Error::Spool)?;
        Ok(std::mem::take(&mut *self.encoded.0.lock()))
    }

    /// Writes rows from `records` into a new spool file until the input ends or the next row
    /// would not fit. `None` when there was nothing left to write.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for a record that does not serialise to a flat object or has a
    /// field outside the header; [`Error::Spool`] when the file cannot be written.
    pub(crate) fn fill<I, T>(&mut self, records: &mut I) -> Result<Option<SpoolFile>>
    where
        I: Iterator<Item = T>,
        T: Serialize,
    {
        let mut file = tempfile::NamedTempFile::new().map_err(Error::Spool)?;
        let mut out = std::io::BufWriter::with_capacity(256 * 1024, file.as_file_mut());
        let mut bytes: u64 = 0;
        let mut rows: u64 = 0;
        let mut fingerprints = Fingerprints::with_base(self.next_index);
        let mut first_index = self.next_index;
        let mut header_written = false;
        loop {
            let (line, hash) = match self.carry.take() {
                Some(carried) => carried,
                None => {
                    let Some(record) = records.next() else { break };
                    let cells = self.cells(&record)?;
                    let hash = fingerprint(cells.iter().map(String::as_bytes));
                    (self.encode(&cells)?, hash)
                }
            };
            if !header_written {
                let columns = self.columns.clone().unwrap_or_default();
                let header = self.encode(&columns)?;
                out.write_all(&header).map_err(Error::Spool)?;
                bytes += header.len() as u64;
                header_written = true;
                first_index = self.next_index;
            }
            if rows > 0 && bytes + line.len() as u64 > self.max_bytes {
                self.carry = Some((line, hash));
                break;
            }
            if rows == 0 && bytes + line.len() as u64 > self.max_bytes {
                return Err(Error::InvalidInput(format!(
                    "record {} alone makes a CSV of more than {} bytes",
                    self.next_index, self.max_bytes
                )));
            }
            out.write_all(&line).map_err(Error::Spool)?;
            bytes += line.len() as u64;
            fingerprints.insert(hash, self.next_index);
            self.next_index += 1;
            rows += 1;
        }
        out.flush().map_err(Error::Spool)?;
        drop(out);
        if rows == 0 {
            return Ok(None);
        }
        Ok(Some(SpoolFile { file, first_index, rows, fingerprints }))
    }

    /// One record's cells in header order; the header is fixed by the first record unless
    /// given.
    fn cells<T: Serialize>(&mut self, record: &T) -> Result<Vec<String>> {
        let index = self.next_index;
        let map = match serde_json::to_value(record) {
            Ok(Value::Object(m)) => m,
            Ok(other) => return Err(Error::InvalidInput(format!("record {index} is not an object: {other}"))),
            Err(e) => return Err(Error::InvalidInput(format!("record {index} is not serialisable: {e}"))),
        };
        let mut flat: Vec<(String, Value)> = Vec::with_capacity(map.len());
        flatten("", map, &mut flat, index)?;
        if self.columns.is_none() {
            if flat.is_empty() {
                return Err(Error::InvalidInput(format!("record {index} has no fields to make a header from")));
            }
            self.columns = Some(flat.iter().map(|(k, _)| k.clone()).collect());
        }
        let columns = self.columns.as_deref().unwrap_or(&[]);
        let mut cells = vec![String::new(); columns.len()];
        for (key, value) in flat {
            let Some(pos) = columns.iter().position(|c| *c == key) else {
                return Err(Error::InvalidInput(format!(
                    "record {index} has field {key:?}, which is not among the job's columns {columns:?}"
                )));
            };
            cells[pos] = match value {
                Value::Null => NULL_CELL.to_owned(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                Value::String(s) => s,
                other => {
                    return Err(Error::InvalidInput(format!("record {index} field {key:?} is not a scalar: {other}")));
                }
            };
        }
        Ok(cells)
    }

    pub(crate) fn delimiter(&self) -> ColumnDelimiter {
        self.delimiter
    }

    pub(crate) fn line_ending(&self) -> LineEnding {
        self.line_ending
    }
}

fn flatten(prefix: &str, map: Map<String, Value>, out: &mut Vec<(String, Value)>, index: u64) -> Result<()> {
    for (k, v) in map {
        if k == "attributes" {
            continue;
        }
        let key = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
        match v {
            Value::Object(inner) => flatten(&key, inner, out, index)?,
            Value::Array(_) => {
                return Err(Error::InvalidInput(format!("record {index} field {key:?} is an array")));
            }
            scalar => out.push((key, scalar)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_rows_match_once_each_in_order() {
        let mut f = Fingerprints::with_base(100);
        for (hash, index) in [(1, 100), (2, 101), (1, 102), (1, 103)] {
            f.insert(hash, index);
        }
        assert_eq!(f.take(1), Some(100));
        assert_eq!(f.take(1), Some(102));
        assert_eq!(f.take(3), None);
        assert_eq!(f.remaining(), vec![101, 103]);
    }

    #[test]
    fn rows_are_flattened_and_encoded() {
        let mut s = Spooler::new(None, ColumnDelimiter::Comma, LineEnding::Lf, 1_000);
        let rows = vec![
            serde_json::json!({"Name": "a,b", "Account": {"Ext__c": "x"}, "N": 1.5, "B": true, "Z": null}),
            serde_json::json!({"Name": "c"}),
        ];
        let spool = s.fill(&mut rows.into_iter()).unwrap().unwrap();
        let text = std::fs::read_to_string(spool.file.path()).unwrap();
        // serde_json maps are ordered by key, so the header follows the flattened key order.
        assert_eq!(text, "Account.Ext__c,B,N,Name,Z\nx,true,1.5,\"a,b\",#N/A\n,,,c,\n");
        assert_eq!(spool.rows, 2);
    }

    #[test]
    fn files_split_before_the_limit() {
        let mut s = Spooler::new(None, ColumnDelimiter::Comma, LineEnding::Lf, 20);
        let mut rows = (0..5).map(|i| serde_json::json!({"Name": format!("row{i}")}));
        let mut sizes = Vec::new();
        while let Some(f) = s.fill(&mut rows).unwrap() {
            assert!(std::fs::metadata(f.file.path()).unwrap().len() <= 20);
            sizes.push((f.first_index, f.rows));
        }
        // "Name\n" and three 5-byte rows make exactly 20 bytes.
        assert_eq!(sizes, vec![(0, 3), (3, 2)]);
    }
}
