//! A recovery target as text (`pgpilot restore`'s flags, the
//! `[bootstrap_from]` keys), parsed and checked: times, LSNs, transaction
//! ids, restore points, timelines. Pure.

use crate::lsn::parse_lsn;

/// The recovery target, validated.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Replay all the archived WAL.
    End,
    Immediate,
    Time {
        text: String,
        micros: i64,
    },
    Lsn(u64),
    Xid(u64),
    Name(String),
}

/// The recovery target fields as text (command-line flags, or
/// `[bootstrap_from]` keys); at most one may be set.
#[derive(Debug, Clone, Copy, Default)]
pub struct TargetText<'a> {
    pub time: Option<&'a str>,
    pub lsn: Option<&'a str>,
    pub xid: Option<&'a str>,
    pub name: Option<&'a str>,
    pub immediate: bool,
}

impl Target {
    /// Parse a target. The error names the field at fault (`time`, `lsn`,
    /// `xid`, `name`; `` for "more than one") and says what is wrong.
    pub fn parse(text: &TargetText) -> std::result::Result<Target, (&'static str, String)> {
        let given = [
            text.time.is_some(),
            text.lsn.is_some(),
            text.xid.is_some(),
            text.name.is_some(),
            text.immediate,
        ];
        if given.iter().filter(|g| **g).count() > 1 {
            return Err((
                "",
                "set only one recovery target: a time, an LSN, an xid, a restore point name or                  immediate"
                    .into(),
            ));
        }
        if let Some(text) = text.time {
            let (micros, zoned) = parse_time(text).ok_or_else(|| {
                (
                    "time",
                    format!("{text:?} is not a time such as '2026-01-31 12:00:00+00'"),
                )
            })?;
            if !zoned {
                tracing::warn!(
                    "target time {text:?} has no time zone: PostgreSQL reads it in its TimeZone \
                     setting; pgpilot chose the backup reading it as UTC"
                );
            }
            return Ok(Target::Time {
                text: text.to_string(),
                micros,
            });
        }
        if let Some(text) = text.lsn {
            return parse_lsn(text)
                .map(Target::Lsn)
                .ok_or_else(|| ("lsn", format!("{text:?} is not an LSN such as 0/3000028")));
        }
        if let Some(text) = text.xid {
            return text
                .trim()
                .parse()
                .map(Target::Xid)
                .map_err(|_| ("xid", format!("{text:?} is not a transaction id")));
        }
        if let Some(name) = text.name {
            if name.is_empty() {
                return Err(("name", "must not be empty".into()));
            }
            return Ok(Target::Name(name.to_string()));
        }
        Ok(if text.immediate {
            Target::Immediate
        } else {
            Target::End
        })
    }
}

/// A recovery_target_timeline value: `current`, `latest` or a timeline number.
pub fn check_timeline(tl: &str) -> std::result::Result<(), String> {
    let ok = tl == "current"
        || tl == "latest"
        || tl.parse::<u32>().is_ok_and(|n| n > 0)
        || tl
            .strip_prefix("0x")
            .is_some_and(|h| u32::from_str_radix(h, 16).is_ok_and(|n| n > 0));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{tl:?} is not current, latest or a timeline number"
        ))
    }
}

/// Parse a timestamp as PostgreSQL's recovery_target_time accepts it in
/// its common forms: `YYYY-MM-DD[ T]HH:MM[:SS[.ffffff]][Z|±HH[[:]MM]]`, or
/// an epoch in seconds (`@1767225600`). Returns epoch microseconds and
/// whether the text named a time zone.
pub fn parse_time(text: &str) -> Option<(i64, bool)> {
    let t = text.trim();
    if let Some(epoch) = t.strip_prefix('@') {
        let secs: f64 = epoch.parse().ok()?;
        return Some(((secs * 1e6) as i64, true));
    }
    let bytes = t.as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = t.get(range)?;
        s.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    if bytes.len() < 16 || bytes[4] != b'-' || bytes[7] != b'-' || bytes[13] != b':' {
        return None;
    }
    if bytes[10] != b' ' && bytes[10] != b'T' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)? as u32, num(8..10)? as u32);
    let (hour, minute) = (num(11..13)?, num(14..16)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &t[16..];
    let mut second = 0;
    let mut micros = 0i64;
    if let Some(r) = rest.strip_prefix(':') {
        second = r.get(..2)?.parse::<i64>().ok().filter(|s| *s <= 60)?;
        rest = &r[2..];
        if let Some(r) = rest.strip_prefix('.') {
            let digits: String = r.chars().take_while(|c| c.is_ascii_digit()).collect();
            if digits.is_empty() {
                return None;
            }
            let mut padded = digits.clone();
            padded.truncate(6);
            while padded.len() < 6 {
                padded.push('0');
            }
            micros = padded.parse().ok()?;
            rest = &r[digits.len()..];
        }
    }
    let rest = rest.trim();
    let (offset_secs, zoned) = if rest.is_empty() {
        (0, false)
    } else if rest == "Z" || rest.eq_ignore_ascii_case("UTC") {
        (0, true)
    } else {
        let sign = match rest.as_bytes()[0] {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let zone = rest[1..].replace(':', "");
        let (h, m) = match zone.len() {
            2 => (zone.parse::<i64>().ok()?, 0),
            4 => (
                zone[..2].parse::<i64>().ok()?,
                zone[2..].parse::<i64>().ok()?,
            ),
            _ => return None,
        };
        (sign * (h * 3600 + m * 60), true)
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    Some((secs * 1_000_000 + micros, zoned))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}
