//! Would PostgreSQL accept this parameter value? The server's own rules, as
//! `pg_settings` describes them (vartype, min_val/max_val, enumvals, unit),
//! applied the way PostgreSQL parses a value in postgresql.conf, so a bad
//! value is refused before it is stored, with the message PostgreSQL would
//! give (`-131072 8kB is outside the valid range for parameter
//! "shared_buffers" (16 .. 1073741823)`). Pure: no I/O.

use crate::config::ParamValue;

/// One row of `pg_settings`: what a parameter accepts.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Setting {
    pub name: String,
    /// bool, integer, real, string or enum.
    pub vartype: String,
    pub enumvals: Vec<String>,
    /// `min_val` / `max_val` (integer and real parameters).
    pub min_val: Option<String>,
    pub max_val: Option<String>,
    /// The base unit values without a unit are in: `8kB`, `kB`, `ms`, `s`, ...
    pub unit: Option<String>,
}

/// The value as PostgreSQL reads it from postgresql.conf (unquoted).
pub fn value_text(value: &ParamValue) -> String {
    match value {
        ParamValue::Bool(b) => if *b { "on" } else { "off" }.to_string(),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Float(f) => f.to_string(),
        ParamValue::Text(s) => s.clone(),
    }
}

/// `Ok` when PostgreSQL would accept `value` for `setting`; otherwise the
/// reason, worded as PostgreSQL words it.
pub fn check_value(setting: &Setting, value: &ParamValue) -> Result<(), String> {
    let text = value_text(value);
    let name = &setting.name;
    let invalid = |hint: &str| {
        let mut m = format!("invalid value for parameter \"{name}\": \"{text}\"");
        if !hint.is_empty() {
            m.push_str(&format!(" ({hint})"));
        }
        m
    };
    match setting.vartype.as_str() {
        "bool" => match parse_bool(&text) {
            Some(_) => Ok(()),
            None => Err(format!(
                "parameter \"{name}\" requires a Boolean value (on or off), not \"{text}\""
            )),
        },
        "integer" => {
            let v =
                parse_quantity(&text, setting.unit.as_deref(), true).map_err(|h| invalid(&h))?;
            if v > f64::from(i32::MAX) || v < f64::from(i32::MIN) {
                return Err(invalid("Value exceeds integer range."));
            }
            let (min, max) = bounds(setting);
            if min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) {
                return Err(format!(
                    "{}{} is outside the valid range for parameter \"{name}\" ({} .. {})",
                    v as i64,
                    unit_suffix(setting),
                    setting.min_val.as_deref().unwrap_or("?"),
                    setting.max_val.as_deref().unwrap_or("?"),
                ));
            }
            Ok(())
        }
        "real" => {
            let v =
                parse_quantity(&text, setting.unit.as_deref(), false).map_err(|h| invalid(&h))?;
            let (min, max) = bounds(setting);
            if !v.is_finite() || min.is_some_and(|m| v < m) || max.is_some_and(|m| v > m) {
                return Err(format!(
                    "{v}{} is outside the valid range for parameter \"{name}\" ({} .. {})",
                    unit_suffix(setting),
                    setting.min_val.as_deref().unwrap_or("?"),
                    setting.max_val.as_deref().unwrap_or("?"),
                ));
            }
            Ok(())
        }
        "enum" => {
            let wanted = text.trim();
            if setting
                .enumvals
                .iter()
                .any(|v| v.eq_ignore_ascii_case(wanted))
            {
                Ok(())
            } else {
                Err(invalid(&format!(
                    "Available values: {}.",
                    setting.enumvals.join(", ")
                )))
            }
        }
        _ => {
            if text.contains('\0') {
                Err(invalid("a value cannot hold a NUL character"))
            } else {
                Ok(())
            }
        }
    }
}

fn bounds(setting: &Setting) -> (Option<f64>, Option<f64>) {
    let num = |s: &Option<String>| s.as_deref().and_then(|t| t.trim().parse::<f64>().ok());
    (num(&setting.min_val), num(&setting.max_val))
}

fn unit_suffix(setting: &Setting) -> String {
    match setting.unit.as_deref().map(str::trim) {
        Some(u) if !u.is_empty() => format!(" {u}"),
        _ => String::new(),
    }
}

/// PostgreSQL's boolean words: any unambiguous prefix of true, false, yes,
/// no; on, off (at least "of"); 1, 0; case-insensitive.
pub fn parse_bool(text: &str) -> Option<bool> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() {
        return None;
    }
    let prefix_of = |word: &str| word.starts_with(&t);
    match t.as_str() {
        "1" | "on" => Some(true),
        "0" | "of" | "off" => Some(false),
        _ if prefix_of("true") || prefix_of("yes") => Some(true),
        _ if prefix_of("false") || prefix_of("no") => Some(false),
        _ => None,
    }
}

/// Bytes per memory unit, in PostgreSQL's order (largest first).
const MEMORY: &[(&str, f64)] = &[
    ("TB", 1024.0 * 1024.0 * 1024.0 * 1024.0),
    ("GB", 1024.0 * 1024.0 * 1024.0),
    ("MB", 1024.0 * 1024.0),
    ("kB", 1024.0),
    ("B", 1.0),
];
/// Microseconds per time unit (largest first).
const TIME: &[(&str, f64)] = &[
    ("d", 86_400_000_000.0),
    ("h", 3_600_000_000.0),
    ("min", 60_000_000.0),
    ("s", 1_000_000.0),
    ("ms", 1_000.0),
    ("us", 1.0),
];

/// A setting's base unit (`8kB`, `16MB`, `ms`): its table and its size.
fn base_unit(unit: &str) -> Option<(&'static [(&'static str, f64)], f64)> {
    let unit = unit.trim();
    let digits = unit
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(unit.len());
    let (count, name) = unit.split_at(digits);
    let count: f64 = if count.is_empty() {
        1.0
    } else {
        count.parse().ok()?
    };
    for table in [MEMORY, TIME] {
        if let Some((_, size)) = table.iter().find(|(n, _)| *n == name) {
            return Some((table, count * size));
        }
    }
    None
}

/// A number with an optional unit, in the setting's base unit, parsed as
/// PostgreSQL's parse_int (`integer`: strtol base 0, falling back to strtod;
/// rounded) or parse_real does. The error is the hint, possibly empty.
fn parse_quantity(text: &str, unit: Option<&str>, integer: bool) -> Result<f64, String> {
    let (mut value, rest) = scan_number(text, integer).ok_or_else(String::new)?;
    if value.is_nan() {
        return Err(String::new());
    }
    let rest = rest.trim_start();
    if !rest.is_empty() {
        let Some((table, base)) = unit.filter(|u| !u.trim().is_empty()).and_then(base_unit) else {
            return Err("this parameter takes no unit".into());
        };
        let given = rest.trim_end();
        let Some(pos) = table.iter().position(|(n, _)| *n == given) else {
            let names: Vec<String> = table
                .iter()
                .rev()
                .map(|(n, _)| format!("\"{n}\""))
                .collect();
            return Err(format!(
                "Valid units for this parameter are {}.",
                names.join(", ")
            ));
        };
        value *= table[pos].1 / base;
        // A fraction of a unit is rounded to the next smaller unit, if any.
        if let Some((_, smaller)) = table.get(pos + 1) {
            let step = smaller / base;
            value = (value / step).round_ties_even() * step;
        }
    }
    if integer {
        value = value.round_ties_even();
    }
    Ok(value)
}

/// The longest number at the start of `text` (after white space) and what
/// follows it. With `integer`, C's strtol in base 0 first (0x hex, 0 octal),
/// strtod when a fraction or an exponent follows or the value overflows.
fn scan_number(text: &str, integer: bool) -> Option<(f64, &str)> {
    let t = text.trim_start();
    if integer {
        if let Some((v, rest)) = scan_long(t) {
            if !rest.starts_with(['.', 'e', 'E']) {
                return Some((v, rest));
            }
        }
    }
    scan_double(t)
}

/// strtol(base 0); `None` when there is no number or it overflows.
fn scan_long(t: &str) -> Option<(f64, &str)> {
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (radix, digits_start) = if (body.starts_with("0x") || body.starts_with("0X"))
        && body[2..].starts_with(|c: char| c.is_ascii_hexdigit())
    {
        (16, 2)
    } else if body.starts_with('0') {
        (8, 0)
    } else {
        (10, 0)
    };
    let digits = &body[digits_start..];
    let len = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if len == 0 {
        return None;
    }
    let magnitude = i64::from_str_radix(&digits[..len], radix).ok()?;
    let value = if negative { -magnitude } else { magnitude };
    Some((value as f64, &digits[len..]))
}

/// strtod for decimal numbers, inf and nan.
fn scan_double(t: &str) -> Option<(f64, &str)> {
    let bytes = t.as_bytes();
    let mut i = usize::from(matches!(bytes.first(), Some(b'-' | b'+')));
    let lower = t[i..].to_ascii_lowercase();
    for word in ["infinity", "inf", "nan"] {
        if lower.starts_with(word) {
            let v = if word == "nan" {
                f64::NAN
            } else if bytes[0] == b'-' {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
            return Some((v, &t[i + word.len()..]));
        }
    }
    let digits = |from: usize| {
        bytes[from..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count()
    };
    let whole = digits(i);
    i += whole;
    let mut fraction = 0;
    if bytes.get(i) == Some(&b'.') {
        fraction = digits(i + 1);
        if whole + fraction > 0 {
            i += 1 + fraction;
        }
    }
    if whole + fraction == 0 {
        return None;
    }
    if matches!(bytes.get(i), Some(b'e' | b'E')) {
        let sign = usize::from(matches!(bytes.get(i + 1), Some(b'-' | b'+')));
        let exp = digits(i + 1 + sign);
        if exp > 0 {
            i += 1 + sign + exp;
        }
    }
    let value = t[..i].parse::<f64>().ok()?;
    Some((value, &t[i..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(name: &str, vartype: &str, range: Option<(&str, &str)>, unit: &str) -> Setting {
        Setting {
            name: name.into(),
            vartype: vartype.into(),
            min_val: range.map(|r| r.0.to_string()),
            max_val: range.map(|r| r.1.to_string()),
            unit: (!unit.is_empty()).then(|| unit.to_string()),
            ..Default::default()
        }
    }

    fn text(s: &str) -> ParamValue {
        ParamValue::Text(s.into())
    }

    /// Rows as PostgreSQL 15 has them in pg_settings.
    fn shared_buffers() -> Setting {
        setting(
            "shared_buffers",
            "integer",
            Some(("16", "1073741823")),
            "8kB",
        )
    }
    fn work_mem() -> Setting {
        setting("work_mem", "integer", Some(("64", "2147483647")), "kB")
    }
    fn max_connections() -> Setting {
        setting("max_connections", "integer", Some(("1", "262143")), "")
    }

    #[test]
    fn out_of_range_is_worded_as_postgresql_words_it() {
        assert_eq!(
            check_value(&shared_buffers(), &text("-1GB")).unwrap_err(),
            "-131072 8kB is outside the valid range for parameter \"shared_buffers\" (16 .. 1073741823)"
        );
        let e = check_value(&work_mem(), &text("99999999999999TB")).unwrap_err();
        assert!(e.contains("Value exceeds integer range"), "{e}");
        let e = check_value(&max_connections(), &ParamValue::Float(1e23)).unwrap_err();
        assert!(
            e.starts_with("invalid value for parameter \"max_connections\""),
            "{e}"
        );
        let e = check_value(&max_connections(), &ParamValue::Int(300_000)).unwrap_err();
        assert!(e.contains("300000 is outside the valid range"), "{e}");
        assert!(e.contains("(1 .. 262143)"), "{e}");
    }

    #[test]
    fn values_postgresql_accepts_pass() {
        for v in ["128MB", "1GB", "16384", " 2 GB ", "0x10", "1.5GB", "1e3"] {
            check_value(&shared_buffers(), &text(v)).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
        check_value(&max_connections(), &ParamValue::Int(100)).unwrap();
        check_value(&max_connections(), &ParamValue::Float(100.0)).unwrap();
        let timeout = setting(
            "statement_timeout",
            "integer",
            Some(("0", "2147483647")),
            "ms",
        );
        for v in ["0", "5s", "1min", "1h", "1d", "250ms", "1500us"] {
            check_value(&timeout, &text(v)).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
        let target = setting("checkpoint_completion_target", "real", Some(("0", "1")), "");
        check_value(&target, &ParamValue::Float(0.9)).unwrap();
        assert!(check_value(&target, &ParamValue::Float(1.5)).is_err());
        assert!(check_value(&target, &text("nan")).is_err());
    }

    #[test]
    fn units_must_fit_the_parameter() {
        let e = check_value(&shared_buffers(), &text("64 XB")).unwrap_err();
        assert!(
            e.contains("Valid units for this parameter are \"B\", \"kB\""),
            "{e}"
        );
        assert!(check_value(&shared_buffers(), &text("64ms")).is_err());
        assert!(check_value(&shared_buffers(), &text("64mb")).is_err());
        let e = check_value(&max_connections(), &text("100kB")).unwrap_err();
        assert!(e.contains("takes no unit"), "{e}");
        assert!(check_value(&work_mem(), &text("lots")).is_err());
        assert!(check_value(&work_mem(), &ParamValue::Bool(true)).is_err());
    }

    #[test]
    fn booleans_and_enums() {
        let b = setting("hot_standby", "bool", None, "");
        for v in ["on", "OFF", "t", "fal", "yes", "n", "1", "0"] {
            check_value(&b, &text(v)).unwrap_or_else(|e| panic!("{v}: {e}"));
        }
        for v in ["o", "maybe", "", "2"] {
            assert!(check_value(&b, &text(v)).is_err(), "{v}");
        }
        check_value(&b, &ParamValue::Bool(false)).unwrap();
        let e = Setting {
            enumvals: vec!["minimal".into(), "replica".into(), "logical".into()],
            ..setting("wal_level", "enum", None, "")
        };
        check_value(&e, &text("Logical")).unwrap();
        let err = check_value(&e, &text("archive")).unwrap_err();
        assert!(
            err.contains("Available values: minimal, replica, logical."),
            "{err}"
        );
    }

    #[test]
    fn numbers_are_scanned_like_c() {
        assert_eq!(scan_number("010", true), Some((8.0, "")));
        assert_eq!(scan_number("0x1F kB", true), Some((31.0, " kB")));
        assert_eq!(scan_number("1.5e3x", true), Some((1500.0, "x")));
        assert_eq!(scan_number("1e", true), Some((1.0, "e")));
        assert_eq!(scan_number("-.5", false), Some((-0.5, "")));
        assert_eq!(scan_number(".", false), None);
        assert_eq!(scan_number("-", true), None);
        assert_eq!(scan_number("99999999999999999999", true), Some((1e20, "")));
    }
}
