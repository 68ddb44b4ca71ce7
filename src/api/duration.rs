//! Durations as users write them: `1h30m`, `15s`, `250ms` (the Gateway API format).

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as one to four `<number><unit>` parts, units `h`, `m`, `s`, `ms`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

/// The pattern the CRD schema enforces; [`Duration::from_str`] accepts exactly the same strings.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";
/// The longest string [`DURATION_PATTERN`] matches.
const MAX_DURATION_LEN: usize = 28;

/// Why a duration string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {reason} (expected e.g. 30s, 1m30s, 250ms)")]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl FromStr for Duration {
    type Err = ParseDurationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseDurationError {
            input: s.to_owned(),
            reason,
        };
        if s.is_empty() {
            return Err(err("empty"));
        }
        let bytes = s.as_bytes();
        let (mut i, mut parts, mut total) = (0usize, 0usize, std::time::Duration::ZERO);
        while i < bytes.len() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == start {
                return Err(err("expected a number"));
            }
            if i - start > 5 {
                return Err(err("number has more than 5 digits"));
            }
            let n: u64 = s[start..i].parse().map_err(|_| err("bad number"))?;
            let unit = if s[i..].starts_with("ms") {
                i += 2;
                std::time::Duration::from_millis(n)
            } else {
                let d = match bytes.get(i) {
                    Some(b'h') => std::time::Duration::from_secs(n * 3600),
                    Some(b'm') => std::time::Duration::from_secs(n * 60),
                    Some(b's') => std::time::Duration::from_secs(n),
                    _ => return Err(err("missing unit h, m, s or ms")),
                };
                i += 1;
                d
            };
            total += unit;
            parts += 1;
            if parts > 4 {
                return Err(err("more than 4 parts"));
            }
        }
        Ok(Duration(total))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        let ms = d.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
        let (m, rem) = (rem / 60_000, rem % 60_000);
        let (s, ms) = (rem / 1000, rem % 1000);
        for (n, unit) in [(h, "h"), (m, "m"), (s, "s"), (ms, "ms")] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let mut schema = json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            // What the pattern allows at most (4 parts of 5 digits and a 2-letter unit): a bound
            // the apiserver's CEL cost estimate needs.
            "maxLength": MAX_DURATION_LEN,
            "description": "A duration such as 30s, 1m30s or 250ms (units h, m, s, ms), above zero."
        });
        super::cel::duration(&mut schema);
        schema
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration as Std;

    #[test]
    fn parses_every_unit_and_combinations() {
        let p = |s: &str| s.parse::<Duration>().map(|d| d.0);
        assert_eq!(p("15s"), Ok(Std::from_secs(15)));
        assert_eq!(p("250ms"), Ok(Std::from_millis(250)));
        assert_eq!(p("2m"), Ok(Std::from_secs(120)));
        assert_eq!(p("1h30m"), Ok(Std::from_secs(5400)));
        assert_eq!(p("1h1m1s1ms"), Ok(Std::from_millis(3_661_001)));
    }

    #[test]
    fn rejects_what_the_schema_rejects() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for bad in [
            "",
            "10",
            "s",
            "1.5s",
            "-1s",
            "1d",
            "123456s",
            "1h1m1s1ms1s",
            "1 s",
        ] {
            assert!(bad.parse::<Duration>().is_err(), "{bad} should be refused");
            assert!(!re.is_match(bad), "{bad} should fail the schema too");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["15s", "250ms", "1h30m", "1h1m1s1ms", "0s"] {
            assert_eq!(s.parse::<Duration>().unwrap().to_string(), s);
        }
    }
}
