//! Domain normalisation for matching: visitor e-mail addresses and Account websites are typed by
//! people, so both are reduced to a bare lowercase host before they are compared, and free-mail
//! providers are recognised so that a `gmail.com` visitor never ties an account to anything.

/// Providers whose addresses say nothing about the employer. Deliberately broad: a false
/// "free-mail" only loses a match that another rule or a person can make, while a missing entry
/// can tie every Gmail-using customer to whichever Account lists gmail.com as its website.
const FREE_MAIL: &[&str] = &[
    "126.com",
    "163.com",
    "aim.com",
    "aol.com",
    "bk.ru",
    "comcast.net",
    "email.com",
    "fastmail.com",
    "fastmail.fm",
    "gmail.com",
    "gmx.at",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "googlemail.com",
    "hey.com",
    "hotmail.co.uk",
    "hotmail.com",
    "hotmail.de",
    "hotmail.fr",
    "hushmail.com",
    "icloud.com",
    "inbox.ru",
    "laposte.net",
    "list.ru",
    "live.co.uk",
    "live.com",
    "live.fr",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "naver.com",
    "orange.fr",
    "outlook.com",
    "outlook.de",
    "pm.me",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "rambler.ru",
    "rediffmail.com",
    "sbcglobal.net",
    "seznam.cz",
    "t-online.de",
    "tutanota.com",
    "verizon.net",
    "web.de",
    "yahoo.co.in",
    "yahoo.co.jp",
    "yahoo.co.uk",
    "yahoo.com",
    "yahoo.de",
    "yahoo.fr",
    "yandex.com",
    "yandex.ru",
    "ymail.com",
    "zoho.com",
];

/// The built-in free-mail list plus the domains a workflow adds.
#[derive(Debug, Clone, Default)]
pub struct FreeMail {
    extra: Vec<String>,
}

impl FreeMail {
    pub fn with_extra<I: IntoIterator<Item = S>, S: AsRef<str>>(extra: I) -> Self {
        FreeMail { extra: extra.into_iter().filter_map(|d| normalise_host(d.as_ref())).collect() }
    }

    /// True for a free-mail domain or any subdomain of one (`mail.yahoo.com`).
    pub fn contains(&self, domain: &str) -> bool {
        let hit = |d: &str| domain == d || domain.strip_suffix(d).is_some_and(|rest| rest.ends_with('.'));
        FREE_MAIL.iter().any(|d| hit(d)) || self.extra.iter().any(|d| hit(d))
    }
}

/// The domain of an e-mail address: the part after the last `@`, trimmed and lowercased, or
/// `None` when what is left cannot be a mail domain.
pub fn email_domain(email: &str) -> Option<String> {
    let (_, host) = email.trim().rsplit_once('@')?;
    normalise_host(host)
}

/// The host of an Account website as people type it (`https://WWW.Acme.com/about`,
/// `acme.com:443`, `www.acme.com.`), without scheme, `www.`, port, path or trailing dot.
pub fn website_domain(website: &str) -> Option<String> {
    let mut s = website.trim();
    if let Some((scheme, rest)) = s.split_once("://") {
        if !scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) {
            return None;
        }
        s = rest;
    }
    let s = s.split(['/', '?', '#']).next().unwrap_or_default();
    // user:pass@host is legal in a URL and has nothing to do with the company.
    let s = s.rsplit_once('@').map_or(s, |(_, host)| host);
    let s = s.split(':').next().unwrap_or_default();
    let host = normalise_host(s)?;
    Some(host.strip_prefix("www.").map(str::to_owned).filter(|h| h.contains('.')).unwrap_or(host))
}

/// Longest host name DNS allows (RFC 1035), and longest label.
const MAX_DOMAIN_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A plausible lowercase host name or nothing: no trailing dot, at least one dot, and only
/// what a host name can hold (no whitespace, quotes, backslashes, empty or over-long labels,
/// labels starting or ending with `-`). A wrong domain would match the wrong Account, which is
/// worse than no domain.
fn normalise_host(host: &str) -> Option<String> {
    let lower = host.trim().to_lowercase();
    let domain = lower.trim_end_matches('.');
    if domain.is_empty() || domain.len() > MAX_DOMAIN_LEN || !domain.contains('.') {
        return None;
    }
    let labels_ok = domain.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= MAX_LABEL_LEN
            && !label.starts_with('-')
            && !label.ends_with('-')
            // Internationalised names are kept as typed (Unicode letters): Salesforce websites
            // hold them that way too.
            && label.chars().all(|c| c == '-' || c.is_alphanumeric())
    });
    // Some characters' lowercase form lowercases again differently; such a name cannot be
    // compared reliably, so it is refused rather than guessed at.
    (labels_ok && domain.to_lowercase() == domain).then(|| domain.to_owned())
}

/// True when a visitor's e-mail domain belongs to the company whose website is `site`: the same
/// host, or a subdomain of it (`eu.acme.com` under `acme.com`).
pub fn belongs_to(email_domain: &str, site: &str) -> bool {
    email_domain == site || email_domain.strip_suffix(site).is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn websites_reduce_to_bare_hosts() {
        for (input, want) in [
            ("https://www.Acme.com/about?x=1", Some("acme.com")),
            ("http://acme.com/", Some("acme.com")),
            ("acme.com:8080", Some("acme.com")),
            ("  WWW.ACME.CO.UK.  ", Some("acme.co.uk")),
            ("https://user:pw@acme.io", Some("acme.io")),
            ("www.com", Some("www.com")),
            ("", None),
            ("not a site", None),
            ("localhost", None),
            ("javascript:alert(1)", None),
            ("https://", None),
        ] {
            assert_eq!(website_domain(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn hostile_emails_never_give_a_bogus_domain() {
        for (input, want) in [
            ("Jane.Doe@Acme.COM ", Some("acme.com")),
            ("a@b@acme.com", Some("acme.com")),
            ("o'brien@acme.com", Some("acme.com")),
            ("x@acme.com' OR Name LIKE '%", None),
            ("x@acme\\.com", None),
            ("no-at-sign.com", None),
            ("x@", None),
            ("x@localhost", None),
            ("x@acme..com", None),
            ("x@münchen.de", Some("münchen.de")),
        ] {
            assert_eq!(email_domain(input).as_deref(), want, "{input:?}");
        }
    }

    #[test]
    fn ordinary_and_messy_addresses() {
        assert_eq!(email_domain("ava.adams0@northwind12.com").as_deref(), Some("northwind12.com"));
        assert_eq!(email_domain("  Ava@NorthWind.IO  ").as_deref(), Some("northwind.io"));
        assert_eq!(email_domain("a@b.example.com.").as_deref(), Some("b.example.com"));
        assert_eq!(email_domain("a@b.com..").as_deref(), Some("b.com"));
        assert_eq!(email_domain("\"a@evil.com\"@good.co").as_deref(), Some("good.co"));
        assert_eq!(email_domain("x@BÜCHER.de").as_deref(), Some("bücher.de"));
    }

    #[test]
    fn hostile_values_give_nothing() {
        for bad in [
            "",
            "   ",
            "a@.",
            "a@b .com",
            "a@b\t.com",
            "a@\"b.com\"",
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
        assert_eq!(email_domain(&format!("a@{}.com", "x".repeat(64))), None);
    }

    #[test]
    fn free_mail_covers_subdomains_and_extras() {
        let free = FreeMail::with_extra(["Corp-Mail.example"]);
        assert!(free.contains("gmail.com"));
        assert!(free.contains("mail.yahoo.com"));
        assert!(free.contains("corp-mail.example"));
        assert!(!free.contains("notgmail.com"));
        assert!(!free.contains("acme.com"));
    }

    #[test]
    fn subdomains_belong_but_lookalikes_do_not() {
        assert!(belongs_to("acme.com", "acme.com"));
        assert!(belongs_to("eu.acme.com", "acme.com"));
        assert!(!belongs_to("notacme.com", "acme.com"));
        assert!(!belongs_to("acme.com", "eu.acme.com"));
    }

    proptest! {
        #[test]
        fn email_domains_are_always_plausible(s in "\\PC{0,40}") {
            if let Some(d) = email_domain(&s) {
                prop_assert!(d.contains('.'));
                prop_assert!(!d.contains('@') && !d.contains('\'') && !d.contains('"') && !d.contains('\\'));
                prop_assert!(!d.ends_with('.') && !d.chars().any(char::is_whitespace));
                prop_assert_eq!(d.to_lowercase(), d.clone());
            }
        }

        #[test]
        fn a_domain_survives_case_space_and_trailing_dots(
            local in "[a-zA-Z0-9._%+\"@-]{0,12}",
            host in "[a-zA-Z0-9]{1,10}(\\.[a-zA-Z0-9]{1,8}){1,3}",
            pad in "[ \t]{0,3}",
            dots in "\\.{0,2}",
        ) {
            let email = format!("{pad}{local}@{host}{dots}{pad}");
            prop_assert_eq!(email_domain(&email), Some(host.to_ascii_lowercase()));
        }

        #[test]
        fn website_domains_are_always_plausible(s in "\\PC{0,40}") {
            if let Some(d) = website_domain(&s) {
                prop_assert!(d.contains('.'));
                prop_assert!(!d.contains('/') && !d.contains(':') && !d.contains('@'));
            }
        }
    }
}
