//! Salesforce record IDs: the [`SalesforceId`] newtype, 15→18 character conversion and checksum
//! validation.
//!
//! The 15-character form is case-sensitive base-62. The 3-character suffix of the 18-character
//! form encodes, per 5-character chunk, which characters are upper case, so two IDs that differ
//! only by case still differ when compared case-insensitively (spreadsheets, some databases).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Alphabet that maps a 5-bit chunk mask to its checksum character.
const CHECKSUM_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Why a string is not a Salesforce ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// IDs are exactly 15 or 18 characters.
    #[error("Salesforce ID {value:?} has {len} characters; expected 15 or 18")]
    Length {
        /// The rejected input.
        value: String,
        /// Its length in characters.
        len: usize,
    },
    /// IDs are ASCII letters and digits only.
    #[error("Salesforce ID {value:?} contains {ch:?}; only ASCII letters and digits are allowed")]
    InvalidChar {
        /// The rejected input.
        value: String,
        /// The first offending character.
        ch: char,
    },
    /// The 3-character suffix of an 18-character ID does not match the first 15 characters.
    #[error("Salesforce ID {value:?} has checksum {found:?}, expected {expected:?}")]
    Checksum {
        /// The rejected input.
        value: String,
        /// The suffix that was given.
        found: String,
        /// The suffix computed from the first 15 characters.
        expected: String,
    },
}

/// A validated Salesforce record ID, always held in its 18-character form.
///
/// Parsing accepts the 15-character form too (the API accepts both as input, and always returns
/// 18). Equality and hashing use the 18-character form, which is what the API returns.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SalesforceId(String);

impl SalesforceId {
    /// Parses a 15- or 18-character ID, validating the checksum of an 18-character one.
    ///
    /// # Errors
    /// [`IdError`] if the length, characters or checksum are wrong.
    pub fn parse(value: &str) -> Result<Self, IdError> {
        let len = value.chars().count();
        if len != 15 && len != 18 {
            return Err(IdError::Length { value: value.to_owned(), len });
        }
        if let Some(ch) = value.chars().find(|c| !c.is_ascii_alphanumeric()) {
            return Err(IdError::InvalidChar { value: value.to_owned(), ch });
        }
        // Both checks above guarantee ASCII, so byte slicing below is on char boundaries.
        let (short, suffix) = value.split_at(15);
        let expected = checksum(short);
        if len == 18 && suffix.as_bytes() != expected.as_slice() {
            return Err(IdError::Checksum {
                value: value.to_owned(),
                found: suffix.to_owned(),
                expected: String::from_utf8_lossy(&expected).into_owned(),
            });
        }
        let mut full = String::with_capacity(18);
        full.push_str(short);
        full.extend(expected.iter().map(|b| char::from(*b)));
        Ok(Self(full))
    }

    /// The 18-character form, as the API returns it.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The case-sensitive 15-character form.
    #[must_use]
    pub fn as_15(&self) -> &str {
        // Always 18 ASCII characters by construction.
        &self.0[..15]
    }

    /// The 3-character key prefix that names the object type (`001` Account, `003` Contact…).
    #[must_use]
    pub fn key_prefix(&self) -> &str {
        &self.0[..3]
    }

    /// Consumes the ID, returning the 18-character string.
    #[must_use]
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Computes the 3-character checksum suffix for the first 15 characters of `id15`.
///
/// Characters past the 15th are ignored; missing characters count as "not upper case", which
/// only matters for callers that skip [`SalesforceId::parse`] validation.
#[must_use]
pub fn checksum(id15: &str) -> [u8; 3] {
    let bytes = id15.as_bytes();
    let mut out = [0u8; 3];
    for (chunk_index, slot) in out.iter_mut().enumerate() {
        let mut mask = 0usize;
        for bit in 0..5 {
            let upper = bytes.get(chunk_index * 5 + bit).is_some_and(u8::is_ascii_uppercase);
            if upper {
                mask |= 1 << bit;
            }
        }
        *slot = CHECKSUM_ALPHABET[mask];
    }
    out
}

impl fmt::Display for SalesforceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SalesforceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SalesforceId({})", self.0)
    }
}

impl FromStr for SalesforceId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<&str> for SalesforceId {
    type Error = IdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::parse(value)
    }
}

impl TryFrom<String> for SalesforceId {
    type Error = IdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl AsRef<str> for SalesforceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl From<SalesforceId> for String {
    fn from(id: SalesforceId) -> Self {
        id.0
    }
}

impl Serialize for SalesforceId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for SalesforceId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = std::borrow::Cow::<'de, str>::deserialize(deserializer)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_vectors_convert_to_18() {
        let vectors = [
            ("001R00000064wdt", "001R00000064wdtIAA"),
            ("a0RE000000IJmcN", "a0RE000000IJmcNMAT"),
            ("001M000000qfPyS", "001M000000qfPySIAU"),
            ("a0FE000000D6r3F", "a0FE000000D6r3FMAR"),
            ("AbCdEfGhIjKlMnO", "AbCdEfGhIjKlMnOVKV"),
            ("aBcDEfgHIJKLMNO", "aBcDEfgHIJKLMNO025"),
            ("aaaaaaaaaaaaaaa", "aaaaaaaaaaaaaaaAAA"),
        ];
        for (short, long) in vectors {
            let id = SalesforceId::parse(short).unwrap();
            assert_eq!(id.as_str(), long, "for {short}");
            assert_eq!(id.as_15(), short);
            assert_eq!(SalesforceId::parse(long).unwrap(), id);
        }
    }

    #[test]
    fn rejects_bad_checksum_length_and_chars() {
        assert!(matches!(SalesforceId::parse("001R00000064wdtIAB"), Err(IdError::Checksum { .. })));
        // Lower-cased suffix is not what the API emits; treat it as corruption.
        assert!(matches!(SalesforceId::parse("001R00000064wdtiaa"), Err(IdError::Checksum { .. })));
        assert!(matches!(SalesforceId::parse("001R00000064wd"), Err(IdError::Length { len: 14, .. })));
        assert!(matches!(SalesforceId::parse("001R00000064wd'"), Err(IdError::InvalidChar { ch: '\'', .. })));
        assert!(matches!(SalesforceId::parse("001R00000064wdé"), Err(IdError::InvalidChar { ch: 'é', .. })));
    }

    #[test]
    fn serde_round_trip_validates() {
        let id: SalesforceId = serde_json::from_str("\"001R00000064wdt\"").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"001R00000064wdtIAA\"");
        assert!(serde_json::from_str::<SalesforceId>("\"nope\"").is_err());
        assert_eq!(id.key_prefix(), "001");
    }

    fn id15() -> impl Strategy<Value = String> {
        "[A-Za-z0-9]{15}"
    }

    proptest! {
        #[test]
        fn round_trip_15_18_15(short in id15()) {
            let id = SalesforceId::parse(&short).unwrap();
            prop_assert_eq!(id.as_str().len(), 18);
            prop_assert_eq!(id.as_15(), short.as_str());
            let again = SalesforceId::parse(id.as_str()).unwrap();
            prop_assert_eq!(again, id);
        }

        #[test]
        fn ids_differing_only_in_case_differ_case_insensitively(
            short in id15(),
            flip in 0usize..15,
        ) {
            let mut chars: Vec<char> = short.chars().collect();
            let c = chars[flip];
            prop_assume!(c.is_ascii_alphabetic());
            chars[flip] = if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() };
            let other: String = chars.into_iter().collect();
            let a = SalesforceId::parse(&short).unwrap();
            let b = SalesforceId::parse(&other).unwrap();
            prop_assert!(!a.as_str().eq_ignore_ascii_case(b.as_str()));
        }

        #[test]
        fn any_other_suffix_is_rejected(short in id15(), suffix in "[A-Z0-5]{3}") {
            let good = SalesforceId::parse(&short).unwrap();
            prop_assume!(&good.as_str()[15..] != suffix.as_str());
            let candidate = format!("{short}{suffix}");
            prop_assert!(
                matches!(SalesforceId::parse(&candidate), Err(IdError::Checksum { .. })),
                "expected a checksum error"
            );
        }
    }
}
