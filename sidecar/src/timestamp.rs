//! Timestamps of scheduled switchovers and restarts: ISO 8601 / RFC 3339
//! with a time zone, read from requests, the command line and the store's
//! `failover` key, and written to it in UTC. One parser for all of them.

use std::time::{Duration, UNIX_EPOCH};

/// Why a text is not a timestamp with a time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("the timestamp has no time zone")]
    NoTimezone,
    #[error("not an ISO 8601 timestamp")]
    Unparsable,
}

/// An ISO 8601 / RFC 3339 timestamp with a time zone (`Z`, `+02:00`,
/// `+0200`, `+02`) to epoch seconds; `T` or a space between date and time,
/// seconds optional.
pub fn parse_timestamp(text: &str) -> Result<u64, TimestampError> {
    let t = text.trim();
    let (local, offset): (&str, Option<i64>) =
        if let Some(rest) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
            (rest, Some(0))
        } else {
            match t.rfind(['+', '-']).filter(|&p| p > 10) {
                Some(p) => {
                    let (local, off) = t.split_at(p);
                    let sign = if off.starts_with('-') { -1 } else { 1 };
                    let digits: String = off[1..].chars().filter(|c| *c != ':').collect();
                    if !digits.chars().all(|c| c.is_ascii_digit()) {
                        return Err(TimestampError::Unparsable);
                    }
                    let (h, m) = match digits.len() {
                        2 => (&digits[..2], "0"),
                        4 => (&digits[..2], &digits[2..]),
                        _ => return Err(TimestampError::Unparsable),
                    };
                    let h: i64 = h.parse().map_err(|_| TimestampError::Unparsable)?;
                    let m: i64 = m.parse().map_err(|_| TimestampError::Unparsable)?;
                    if h > 23 || m > 59 {
                        return Err(TimestampError::Unparsable);
                    }
                    (local, Some(sign * (h * 3600 + m * 60)))
                }
                None => (t, None),
            }
        };
    let local = local.trim();
    // "YYYY-MM-DDTHH:MM" lacks seconds, which the parser wants.
    let with_seconds;
    let local = if local.len() == 16 {
        with_seconds = format!("{local}:00");
        with_seconds.as_str()
    } else {
        local
    };
    let utc = humantime::parse_rfc3339_weak(local).map_err(|_| TimestampError::Unparsable)?;
    let Some(offset) = offset else {
        return Err(TimestampError::NoTimezone);
    };
    let epoch = utc
        .duration_since(UNIX_EPOCH)
        .map_err(|_| TimestampError::Unparsable)?
        .as_secs() as i64
        - offset;
    // Up to the end of year 9999 (an offset can push a time past it), which
    // is as far as RFC 3339, and format_timestamp, go.
    u64::try_from(epoch)
        .ok()
        .filter(|e| *e < END_OF_YEAR_9999)
        .ok_or(TimestampError::Unparsable)
}

/// 10000-01-01T00:00:00Z in epoch seconds.
const END_OF_YEAR_9999: u64 = 253_402_300_800;

/// RFC 3339 in UTC, the form stored in the `failover` key.
pub fn format_timestamp(epoch: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(epoch)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        let base = parse_timestamp("2030-01-01T10:00:00Z").unwrap();
        assert_eq!(parse_timestamp("2030-01-01 10:00:00+00:00"), Ok(base));
        assert_eq!(parse_timestamp("2030-01-01T12:00+02:00"), Ok(base));
        assert_eq!(parse_timestamp("2030-01-01T05:00:00-0500"), Ok(base));
        assert_eq!(parse_timestamp("2030-01-01T11:00:00.250+01"), Ok(base));
        assert_eq!(
            parse_timestamp("2030-01-01T10:00:00"),
            Err(TimestampError::NoTimezone)
        );
        assert_eq!(parse_timestamp("tomorrow"), Err(TimestampError::Unparsable));
        assert_eq!(
            parse_timestamp("2030-01-01T10:00:00+25:00"),
            Err(TimestampError::Unparsable)
        );
    }

    #[test]
    fn the_failover_keys_forms_read_back() {
        assert_eq!(parse_timestamp("2024-01-01T00:00:00Z"), Ok(1_704_067_200));
        assert_eq!(
            parse_timestamp("2024-01-01T02:00:00+02:00"),
            Ok(1_704_067_200)
        );
        assert_eq!(
            parse_timestamp("2023-12-31T23:00:00-01:00"),
            Ok(1_704_067_200)
        );
        assert_eq!(
            parse_timestamp(&format_timestamp(1_704_067_200)),
            Ok(1_704_067_200)
        );
    }
}
