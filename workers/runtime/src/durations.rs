//! Durations as people write them in config: `30d`, `1s`, `500ms`, or a bare number of
//! milliseconds (Kafka's own unit).

use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Parses `30d`, `1h 30m`, `500ms`, or a bare integer of milliseconds.
pub fn parse(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("`{s}` is not a duration ({e}); write e.g. 30d, 1s, 500ms or milliseconds")
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Raw {
    Millis(u64),
    Text(String),
}

/// Serde adapter for [`parse`].
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(Duration::from_millis(ms)),
        Raw::Text(s) => parse(&s).map_err(serde::de::Error::custom),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_and_raw_forms_agree() {
        assert_eq!(parse("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(
            parse("2592000000").unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert_eq!(parse("500ms").unwrap(), Duration::from_millis(500));
        assert!(parse("soon").unwrap_err().contains("soon"));
    }
}
