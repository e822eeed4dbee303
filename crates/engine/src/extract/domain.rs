//! E-mail domain normalisation for matching: visitor e-mails are untrusted input (typed by end
//! users, imported from other tools), so this either yields a plausible lowercase host name or
//! nothing, and never panics.

/// Longest host name DNS allows (RFC 1035); anything longer cannot be a website domain.
const MAX_DOMAIN_LEN: usize = 253;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// The lowercase domain of `email`, or `None` when it has no usable domain.
///
/// Trims surrounding whitespace, takes the part after the *last* `@` (quoted local parts may
/// contain `@`), lowercases it and strips trailing dots (the fully-qualified form). Rejects an
/// empty domain, one without a dot, and one with anything a host name cannot hold (whitespace,
/// quotes, backslashes, empty labels, over-long labels): a wrong domain would match the wrong
/// Salesforce Account, which is worse than no domain.
pub fn email_domain(email: &str) -> Option<String> {
    let (_, domain) = email.trim().rsplit_once('@')?;
    let domain = domain.to_lowercase();
    let domain = domain.trim_end_matches('.');
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN || !domain.contains('.') {
        return None;
    }
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            // Internationalised names are kept as typed (Unicode letters), since Salesforce
            // websites hold them that way too.
            && label.chars().all(|c| c == '-' || c.is_alphanumeric())
    });
    // Some characters' lowercase form lowercases again differently; such a name cannot be
    // compared reliably, so it is refused rather than guessed at.
    (labels_ok && domain.to_lowercase() == domain).then(|| domain.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_and_messy_addresses() {
        assert_eq!(email_domain("ava.adams0@northwind12.com").as_deref(), Some("northwind12.com"));
        assert_eq!(email_domain("  Ava@NorthWind.IO  ").as_deref(), Some("northwind.io"));
        assert_eq!(email_domain("a@b.example.com.").as_deref(), Some("b.example.com"));
        assert_eq!(email_domain("a@b.com..").as_deref(), Some("b.com"));
        assert_eq!(email_domain("\"a@evil.com\"@good.co").as_deref(), Some("good.co"));
        assert_eq!(email_domain("a@b@c.net").as_deref(), Some("c.net"));
        assert_eq!(email_domain("x@BÜCHER.de").as_deref(), Some("bücher.de"));
    }

    #[test]
    fn hostile_values_give_nothing() {
        for bad in [
            "",
            "   ",
            "no-at-sign.com",
            "a@",
            "a@.",
            "a@localhost",
            "a@b .com",
            "a@b\t.com",
            "a@\"b.com\"",
            "a@b\\.com",
            "a@b..com",
            "a@.b.com",
            "a@-b.com",
            "a@b-.com",
            "a@b.com>",
            "a@b,c.com",
            "a@b.com\u{0}",
            "a@b.com\u{202e}",
        ] {
            assert_eq!(email_domain(bad), None, "{bad:?}");
        }
        let long = format!("a@{}.com", "x".repeat(64));
        assert_eq!(email_domain(&long), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_output_is_a_host_name(s in "\\PC{0,40}") {
            if let Some(d) = email_domain(&s) {
                proptest::prop_assert!(d.contains('.'));
                proptest::prop_assert!(!d.contains('@'));
                proptest::prop_assert!(!d.ends_with('.'));
                proptest::prop_assert_eq!(d.to_lowercase(), d.clone());
                proptest::prop_assert!(!d.chars().any(char::is_whitespace));
                proptest::prop_assert!(!d.contains('"') && !d.contains('\\'));
            }
        }

        #[test]
        fn domain_survives_case_space_and_trailing_dots(
            local in "[a-zA-Z0-9._%+\"@-]{0,12}",
            host in "[a-zA-Z0-9]{1,10}(\\.[a-zA-Z0-9]{1,8}){1,3}",
            pad in "[ \t]{0,3}",
            dots in "\\.{0,2}",
        ) {
            let email = format!("{pad}{local}@{host}{dots}{pad}");
            proptest::prop_assert_eq!(email_domain(&email), Some(host.to_ascii_lowercase()));
        }
    }
}
