//! Durations as written in the config: a whole number and one unit, `30s`, `15m`,
//! `1h`, `7d`. One unit only, so a value reads the same to everyone.

use std::time::Duration;

const UNITS: [(&str, u64); 4] = [("s", 1), ("m", 60), ("h", 3_600), ("d", 86_400)];

/// Parses `30s`, `15m`, `1h`, `7d`.
pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 30s, 15m, 1h or 7d"))?;
    let (number, unit) = text.split_at(split);
    let factor = UNITS.iter().find(|(name, _)| *name == unit).map(|(_, factor)| *factor).ok_or_else(|| {
        format!("`{text}` is not a duration: write a whole number and one of s, m, h, d (e.g. 30s, 15m, 1h, 7d)")
    })?;
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a duration: write a whole number and one of s, m, h, d"))?;
    number.checked_mul(factor).map(Duration::from_secs).ok_or_else(|| format!("`{text}` is too large"))
}

/// Formats with the largest unit that divides the duration exactly.
pub(crate) fn format(duration: Duration) -> String {
    let secs = duration.as_secs();
    for (name, factor) in UNITS.iter().rev() {
        if secs != 0 && secs.is_multiple_of(*factor) {
            return format!("{}{name}", secs / factor);
        }
    }
    format!("{secs}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit_and_rejects_others() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse("1w").is_err());
        assert!(parse("h").is_err());
        assert!(parse("10").is_err());
        assert!(parse("1h30m").is_err());
        assert!(parse("99999999999999999999d").is_err());
    }

    #[test]
    fn format_round_trips() {
        for text in ["30s", "15m", "1h", "7d", "90s", "0s"] {
            let parsed = parse(text).unwrap();
            assert_eq!(parse(&format(parsed)), Ok(parsed));
        }
        assert_eq!(format(Duration::from_secs(3600)), "1h");
        assert_eq!(format(Duration::from_secs(90)), "90s");
    }
}
