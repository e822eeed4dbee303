//! Writing command output to stdout without panicking when the reader has gone away.

use std::io::Write as _;

/// Writes to stdout; a write error (most often a closed pipe: the reader took what it wanted)
/// is dropped, as there is nobody left to tell.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_fmt(args);
}
