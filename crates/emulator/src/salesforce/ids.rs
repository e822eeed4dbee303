//! Salesforce record IDs: 15-character case-sensitive base-62 IDs, the 18-character form with its
//! case-folding checksum, key prefixes, and a generator that hands out fresh IDs per object.
//!
//! Everything that accepts an ID from a request goes through [`normalize`], so 15- and
//! 18-character inputs are interchangeable everywhere, as they are in Salesforce.

use std::sync::atomic::{AtomicU64, Ordering};

const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The three checksum characters that turn a 15-character ID into its 18-character form.
///
/// Each 5-character chunk yields a 5-bit number whose bit *i* says whether character *i* of the
/// chunk is an upper-case letter; that is what makes the 18-character form safe for
/// case-insensitive systems such as spreadsheets.
pub fn checksum(id15: &[u8; 15]) -> [u8; 3] {
    let mut out = [0u8; 3];
    for (chunk_index, chunk) in id15.chunks(5).enumerate() {
        let mut bits = 0usize;
        for (i, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                bits |= 1 << i;
            }
        }
        out[chunk_index] = CHECKSUM_ALPHABET[bits];
    }
    out
}

/// Parses a 15- or 18-character ID and returns its canonical 18-character form, or `None` when
/// the input is not a well-formed ID (wrong length, non-alphanumeric characters, or an
/// 18-character ID whose checksum does not match its first 15 characters).
pub fn normalize(input: &str) -> Option<String> {
    let bytes = input.as_bytes();
    if !(bytes.len() == 15 || bytes.len() == 18) || !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let mut id15 = [0u8; 15];
    id15.copy_from_slice(&bytes[..15]);
    let sum = checksum(&id15);
    if bytes.len() == 18 && !bytes[15..].eq_ignore_ascii_case(&sum) {
        return None;
    }
    let mut out = String::with_capacity(18);
    out.push_str(&input[..15]);
    // The checksum alphabet is ASCII, so each byte is one char.
    out.extend(sum.iter().map(|b| char::from(*b)));
    Some(out)
}

/// The first three characters of an ID, which name its object type.
pub fn key_prefix(id: &str) -> &str {
    id.get(..3).unwrap_or("")
}

/// Hands out IDs for one org. Characters 4–5 carry a fixed pod marker and the remaining ten a
/// per-generator sequence in base 62, so IDs are unique, sortable by creation and deterministic
/// for a given sequence of creates (which keeps tests and seeded worlds reproducible).
#[derive(Debug)]
pub struct IdGenerator {
    next: AtomicU64,
}

impl Default for IdGenerator {
    fn default() -> Self {
        Self::new()
    }
}

impl IdGenerator {
    pub fn new() -> Self {
        Self { next: AtomicU64::new(1) }
    }

    /// A fresh 18-character ID with the given 3-character key prefix.
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        make_id(prefix, "8d", n)
    }

    /// Makes sure IDs handed out later never collide with one that was seeded from outside.
    pub fn observe(&self, id: &str) {
        if id.get(3..5) == Some("8d")
            && let Some(n) = id.get(5..15).and_then(decode62)
        {
            self.next.fetch_max(n + 1, Ordering::Relaxed);
        }
    }
}

/// Builds an 18-character ID from a prefix, a 2-character pod marker and a sequence number.
pub fn make_id(prefix: &str, pod: &str, n: u64) -> String {
    let mut id15 = [b'0'; 15];
    for (slot, b) in id15.iter_mut().zip(prefix.bytes().chain(pod.bytes()).take(5)) {
        *slot = b;
    }
    let mut v = n;
    for slot in id15[5..].iter_mut().rev() {
        *slot = BASE62[(v % 62) as usize];
        v /= 62;
    }
    let sum = checksum(&id15);
    let mut out = String::with_capacity(18);
    out.extend(id15.iter().chain(sum.iter()).map(|b| char::from(*b)));
    out
}

fn decode62(s: &str) -> Option<u64> {
    s.bytes().try_fold(0u64, |acc, b| {
        let d = BASE62.iter().position(|c| *c == b)? as u64;
        acc.checked_mul(62)?.checked_add(d)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_vectors() {
        for (short, long) in [
            ("001R00000064wdt", "001R00000064wdtIAA"),
            ("a0RE000000IJmcN", "a0RE000000IJmcNMAT"),
            ("001M000000qfPyS", "001M000000qfPySIAU"),
            ("a0FE000000D6r3F", "a0FE000000D6r3FMAR"),
            ("AbCdEfGhIjKlMnO", "AbCdEfGhIjKlMnOVKV"),
            ("aBcDEfgHIJKLMNO", "aBcDEfgHIJKLMNO025"),
            ("aaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaAAA"),
        ] {
            assert_eq!(normalize(short).as_deref(), Some(long));
            assert_eq!(normalize(long).as_deref(), Some(long));
        }
    }

    #[test]
    fn rejects_bad_checksums_and_shapes() {
        assert_eq!(normalize("001R00000064wdtIAB"), None);
        assert_eq!(normalize("001R00000064wd"), None);
        assert_eq!(normalize("001R00000064wd-"), None);
        assert_eq!(normalize(""), None);
        // The checksum is case-insensitive on input.
        assert!(normalize("001R00000064wdtiaa").is_some());
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let g = IdGenerator::new();
        let a = g.next_id("001");
        let b = g.next_id("001");
        assert_ne!(a, b);
        assert_eq!(normalize(&a).as_deref(), Some(a.as_str()));
        assert_eq!(key_prefix(&a), "001");
        g.observe(&make_id("001", "8d", 1000));
        assert_eq!(g.next_id("003"), make_id("003", "8d", 1001));
    }

    proptest! {
        #[test]
        fn fifteen_to_eighteen_round_trips(s in "[0-9A-Za-z]{15}") {
            let long = normalize(&s).unwrap_or_default();
            prop_assert_eq!(long.len(), 18);
            prop_assert_eq!(&long[..15], s.as_str());
            prop_assert_eq!(normalize(&long), Some(long.clone()));
            // An 18-character ID survives a case-insensitive system: its checksum tells which
            // letters were upper case.
            let sum = &long.as_bytes()[15..];
            for (chunk, c) in long.as_bytes()[..15].chunks(5).zip(sum) {
                let bits = CHECKSUM_ALPHABET.iter().position(|x| x == c).unwrap_or(99);
                for (i, ch) in chunk.iter().enumerate() {
                    prop_assert_eq!(ch.is_ascii_uppercase(), bits & (1 << i) != 0);
                }
            }
        }

        #[test]
        fn normalize_never_panics(s in "\\PC{0,20}") {
            let _ = normalize(&s);
        }
    }
}
