//! Durations as people write them on the command line and in config: `30d`, `1h 30m`, `2m`,
//! `1s`, `500ms`. A bare number is refused with the fix spelled out: whether `5` meant
//! milliseconds (Kafka's unit) or seconds is exactly the mistake a unit prevents.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `30d`, `1h 30m`, `2m`, `1s`, `500ms`; refuses a bare number.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(n) = s.parse::<f64>() {
        return Err(format!(
            "`{s}` has no unit: write {n}ms, {n}s or {n}m (units: ms, s, m, h, d)"
        ));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration ({e}); write e.g. 30s, 500ms, 2m or 30d"))
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Number(f64),
    Text(String),
}

/// Serde adapter for [`parse`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = match Raw::deserialize(d)? {
        Raw::Number(n) => n.to_string(),
        Raw::Text(s) => s,
    };
    parse(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_required_and_the_error_shows_the_fix() {
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse("1h 30m").unwrap(), Duration::from_secs(5400));
        let e = parse("5").unwrap_err();
        assert!(
            e.contains("no unit") && e.contains("5s") && e.contains("5ms"),
            "{e}"
        );
        assert!(parse("soon").unwrap_err().contains("soon"));
    }
}
