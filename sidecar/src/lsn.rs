//! Log sequence numbers in PostgreSQL's text form, `X/Y` (two hexadecimal
//! halves of at most eight digits each): the one parser and formatter.

/// Parse `X/Y`; `None` unless both halves are one to eight hex digits.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    if hi.is_empty() || lo.is_empty() || hi.len() > 8 || lo.len() > 8 {
        return None;
    }
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    Some((hi << 32) | lo)
}

/// `X/Y`, as PostgreSQL prints an LSN.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_refusals() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x300_0060));
        assert_eq!(parse_lsn(" 1A/FF "), Some((0x1a << 32) | 0xff));
        assert_eq!(format_lsn((0x1a << 32) | 0xff), "1A/FF");
        for bad in [
            "",
            "/",
            "0/",
            "/1",
            "x/1",
            "123456789/0",
            "0/123456789",
            "0-1",
        ] {
            assert_eq!(parse_lsn(bad), None, "{bad:?}");
        }
    }
}
