//! CSV as Bulk API 2.0 reads and writes it: the job's delimiter and line ending, a UTF-8 BOM
//! ignored on input, `"` quoting with doubled inner quotes (so values may hold delimiters and
//! newlines), and results written with every value quoted.

use csv::{QuoteStyle, ReaderBuilder, Terminator, WriterBuilder};

use super::{Delimiter, LineEnding};

/// The UTF-8 byte-order mark some spreadsheet tools put in front of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A reader over uploaded data (header row included), BOM skipped.
pub fn reader(data: &[u8], delimiter: Delimiter, line_ending: LineEnding) -> csv::Reader<&[u8]> {
    let data = data.strip_prefix(BOM).unwrap_or(data);
    let terminator = match line_ending {
        // With LF, a CR before the newline is data, as it is for Salesforce.
        LineEnding::Lf => Terminator::Any(b'\n'),
        LineEnding::Crlf => Terminator::CRLF,
    };
    ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .delimiter(delimiter.byte())
        .terminator(terminator)
        .from_reader(data)
}

/// Writes rows in the job's format, every value quoted.
#[derive(Debug)]
pub struct RowWriter {
    inner: csv::Writer<Vec<u8>>,
}

impl RowWriter {
    pub fn new(delimiter: Delimiter, line_ending: LineEnding) -> Self {
        let terminator = match line_ending {
            LineEnding::Lf => Terminator::Any(b'\n'),
            LineEnding::Crlf => Terminator::CRLF,
        };
        let inner = WriterBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(delimiter.byte())
            .terminator(terminator)
            .quote_style(QuoteStyle::Always)
            .from_writer(Vec::new());
        RowWriter { inner }
    }

    pub fn row<I, S>(&mut self, fields: I)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        // Writing into a Vec cannot fail.
        let _ = self.inner.write_record(fields);
    }

    pub fn finish(self) -> Vec<u8> {
        self.inner.into_inner().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_quotes_newlines_and_bom() {
        let data = b"\xEF\xBB\xBFName,Description\n\"Acme, Inc\",\"line1\nline2 \"\"q\"\"\"\n";
        let mut r = reader(data, Delimiter::Comma, LineEnding::Lf);
        let rows: Vec<csv::ByteRecord> = r.byte_records().map(Result::unwrap).collect();
        assert_eq!(&rows[0][0], b"Name");
        assert_eq!(&rows[1][0], b"Acme, Inc");
        assert_eq!(&rows[1][1], b"line1\nline2 \"q\"");
    }

    #[test]
    fn writes_quoted_with_the_job_format() {
        let mut w = RowWriter::new(Delimiter::Pipe, LineEnding::Crlf);
        w.row(["a|b", "c\"d"]);
        assert_eq!(w.finish(), b"\"a|b\"|\"c\"\"d\"\r\n");
    }
}
