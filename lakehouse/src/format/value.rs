//! Typed parsing of one field's text into the declared column type.
//!
//! Errors describe what was expected, never the value itself: the value may be personal data, and reasons are
//! printed, logged and stored in clear (the raw record is only stored encrypted).

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _};
use chrono_tz::Tz;

pub fn parse_int(s: &str) -> Result<i64, String> {
    s.parse::<i64>().map_err(|_| "not an integer".to_string())
}

pub fn parse_double(s: &str, decimal_comma: bool) -> Result<f64, String> {
    let v = if decimal_comma && s.contains(',') { s.replace(',', ".").parse::<f64>() } else { s.parse::<f64>() };
    match v {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err("not a number".into()),
    }
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "true" | "t" | "1" | "yes" | "y" | "oui" | "o" | "vrai" => Ok(true),
        "false" | "f" | "0" | "no" | "n" | "non" | "faux" => Ok(false),
        _ => Err("not a boolean (true/false, 1/0, yes/no, oui/non)".into()),
    }
}

/// Parses a decimal number into an unscaled i128 with `scale` digits after the point.
pub fn parse_decimal(s: &str, precision: u8, scale: i8, decimal_comma: bool) -> Result<i128, String> {
    let bad = || format!("not a decimal({precision}, {scale})");
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let sep = if decimal_comma { ',' } else { '.' };
    let (int_part, frac_part) = match digits.split_once(sep) {
        Some((i, f)) => (i, f),
        None => (digits, ""),
    };
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let scale = scale.max(0) as usize;
    if frac_part.len() > scale {
        return Err(format!("more than {scale} digits after the decimal separator"));
    }
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() + scale > precision as usize {
        return Err(format!("too many digits for decimal({precision}, {scale})"));
    }
    let mut v: i128 = 0;
    for b in int_digits.bytes().chain(frac_part.bytes()) {
        v = v * 10 + i128::from(b - b'0');
    }
    for _ in frac_part.len()..scale {
        v *= 10;
    }
    Ok(if neg { -v } else { v })
}

/// A date or timestamp parser with its format compiled once.
#[derive(Debug, Clone)]
pub struct TimeParser {
    items: Option<Vec<Item<'static>>>,
    /// The same format as fixed-width fields, when it only has `%Y %m %d %H %M %S` and literal bytes.
    fast: Option<Vec<Piece>>,
    format: Option<String>,
    tz: Tz,
    /// A timestamp must carry its offset (`Z`, `+01:00`): JSON feeds without a declared zone or format.
    offset_required: bool,
}

/// One piece of a fixed-width date/time format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Piece {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Literal(u8),
}

impl Piece {
    fn width(self) -> usize {
        match self {
            Self::Year => 4,
            Self::Literal(_) => 1,
            _ => 2,
        }
    }
}

/// Compiles formats like `%d/%m/%Y %H:%M` into fixed-width pieces (chrono handles everything else).
fn compile_fast(format: &str) -> Option<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut bytes = format.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            pieces.push(match bytes.next()? {
                b'Y' => Piece::Year,
                b'm' => Piece::Month,
                b'd' => Piece::Day,
                b'H' => Piece::Hour,
                b'M' => Piece::Minute,
                b'S' => Piece::Second,
                _ => return None,
            });
        } else if b.is_ascii() && !b.is_ascii_digit() {
            pieces.push(Piece::Literal(b));
        } else {
            return None;
        }
    }
    Some(pieces)
}

/// Parses with fixed-width pieces: (year, month, day, hour, minute, second), or None if it does not fit.
fn parse_fast(pieces: &[Piece], s: &str) -> Option<(i32, u32, u32, u32, u32, u32)> {
    let b = s.as_bytes();
    if b.len() != pieces.iter().map(|p| p.width()).sum::<usize>() {
        return None;
    }
    let (mut y, mut mo, mut d, mut h, mut mi, mut se) = (1970i32, 1u32, 1u32, 0u32, 0u32, 0u32);
    let mut pos = 0;
    for &p in pieces {
        let w = p.width();
        let field = &b[pos..pos + w];
        pos += w;
        if let Piece::Literal(l) = p {
            if field[0] != l {
                return None;
            }
            continue;
        }
        let mut v = 0u32;
        for &c in field {
            if !c.is_ascii_digit() {
                return None;
            }
            v = v * 10 + u32::from(c - b'0');
        }
        match p {
            Piece::Year => y = v as i32,
            Piece::Month => mo = v,
            Piece::Day => d = v,
            Piece::Hour => h = v,
            Piece::Minute => mi = v,
            Piece::Second => se = v,
            Piece::Literal(_) => {}
        }
    }
    // Out-of-range times (24:00, a leap second) are chrono's to judge.
    (h < 24 && mi < 60 && se < 60).then_some((y, mo, d, h, mi, se))
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// A parsed timestamp: local (to be placed in the column's zone) or already absolute.
enum Stamp {
    Local(NaiveDateTime),
    Utc(i64),
}

impl TimeParser {
    pub fn new(format: Option<&str>, tz: Tz) -> Self {
        let items = format.map(|f| StrftimeItems::new(f).parse_to_owned().unwrap_or_default());
        let fast = format.and_then(compile_fast);
        Self { items, fast, format: format.map(str::to_string), tz, offset_required: false }
    }

    /// Refuses timestamps without an offset instead of placing them in the zone.
    pub fn offset_required(mut self, required: bool) -> Self {
        self.offset_required = required;
        self
    }

    fn describe(&self, what: &str) -> String {
        match &self.format {
            Some(f) => format!("not a {what} in format `{f}`"),
            None => format!("not an ISO 8601 {what}"),
        }
    }

    /// Days since 1970-01-01.
    pub fn parse_date(&self, s: &str) -> Result<i32, String> {
        use chrono::Datelike;
        // The fast path reads fixed-width digits; anything else chrono accepts for the format (`1/11/2026`) is
        // read by chrono, so both agree on every input.
        let fast = self.fast.as_ref().and_then(|pieces| parse_fast(pieces, s));
        let date = match (fast, &self.items) {
            (Some((y, m, d, ..)), _) => NaiveDate::from_ymd_opt(y, m, d),
            (None, Some(items)) => {
                let mut p = Parsed::new();
                chrono::format::parse(&mut p, s, items.iter()).ok().and_then(|_| p.to_naive_date().ok())
            }
            (None, None) => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
        };
        date.map(|d| d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE).ok_or_else(|| self.describe("date"))
    }

    /// Microseconds since the Unix epoch, UTC. Values without an offset are local times in the column's zone.
    pub fn parse_timestamp(&self, s: &str) -> Result<i64, String> {
        let fast = self.fast.as_ref().and_then(|pieces| parse_fast(pieces, s));
        let stamp = match (fast, &self.items) {
            (Some((y, mo, d, h, mi, se)), _) => {
                NaiveDate::from_ymd_opt(y, mo, d).and_then(|d| d.and_hms_opt(h, mi, se)).map(Stamp::Local)
            }
            (None, Some(items)) => {
                let mut p = Parsed::new();
                match chrono::format::parse(&mut p, s, items.iter()) {
                    Err(_) => None,
                    // An explicit offset in the value: the column's zone does not apply.
                    Ok(()) if p.offset().is_some() => p.to_datetime().ok().map(|d| Stamp::Utc(d.timestamp_micros())),
                    Ok(()) => p.to_naive_datetime_with_offset(0).ok().map(Stamp::Local),
                }
            }
            (None, None) => match DateTime::parse_from_rfc3339(s) {
                Ok(d) => Some(Stamp::Utc(d.timestamp_micros())),
                Err(_) => {
                    const NAIVE: [&str; 4] =
                        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
                    NAIVE.iter().find_map(|f| NaiveDateTime::parse_from_str(s, f).ok()).map(Stamp::Local)
                }
            },
        };
        match stamp.ok_or_else(|| self.describe("timestamp"))? {
            Stamp::Utc(micros) => Ok(micros),
            Stamp::Local(_) if self.offset_required => Err("a timestamp without an offset (`Z` or `±hh:mm`): \
                 declare the column's `timezone` to read local times"
                .to_string()),
            Stamp::Local(local) => self.localize(local),
        }
    }

    fn localize(&self, local: NaiveDateTime) -> Result<i64, String> {
        match self.tz.from_local_datetime(&local) {
            chrono::LocalResult::Single(d) => Ok(d.timestamp_micros()),
            // The hour repeated when clocks go back: the first (summer-time) instant, as most exports mean.
            chrono::LocalResult::Ambiguous(first, _) => Ok(first.timestamp_micros()),
            chrono::LocalResult::None => {
                Err(format!("local time does not exist in {} (skipped by the daylight-saving change)", self.tz.name()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(parse_double("43,2961", true).unwrap(), 43.2961);
        assert_eq!(parse_double("43.2961", false).unwrap(), 43.2961);
        assert!(parse_double("NaN", false).is_err());
        assert!(parse_double("abc", false).is_err());
        assert_eq!(parse_int("-12").unwrap(), -12);
        assert!(parse_int("1.5").is_err());
        assert_eq!(parse_decimal("12,5", 6, 2, true).unwrap(), 1250);
        assert_eq!(parse_decimal("-0.05", 6, 2, false).unwrap(), -5);
        assert!(parse_decimal("1.234", 6, 2, false).is_err());
        assert!(parse_decimal("12345", 6, 2, false).is_err());
        assert!(parse_decimal("-", 6, 2, false).is_err());
    }

    /// The fast path agrees with chrono on every input chrono accepts (property test over generated values, padded
    /// or not, valid or not, and mutated): `1/11/2026 9:05` is a timestamp for `%d/%m/%Y %H:%M`, as chrono says.
    #[test]
    fn the_fast_parser_agrees_with_chrono() {
        let mut rng = crate::testing::xorshift(0x2545_f491_4f6c_dd1d);
        let mut next = |n: u64| rng() % n;
        for format in ["%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y", "%Y%m%d"] {
            let fast = TimeParser::new(Some(format), chrono_tz::Europe::Paris);
            assert!(fast.fast.is_some(), "{format} has a fast path");
            let chrono_only = TimeParser { fast: None, ..TimeParser::new(Some(format), chrono_tz::Europe::Paris) };
            for _ in 0..20_000 {
                let mut field = |max: u64, min: u64, width: usize| {
                    let v = min + next(max - min + 1);
                    if width > 1 && next(3) == 0 { v.to_string() } else { format!("{v:0width$}") }
                };
                let (y, mo, d) = (field(2030, 1990, 4), field(13, 0, 2), field(32, 0, 2));
                let (h, mi, s) = (field(24, 0, 2), field(60, 0, 2), field(60, 0, 2));
                let mut text = format
                    .replace("%Y", &y)
                    .replace("%m", &mo)
                    .replace("%d", &d)
                    .replace("%H", &h)
                    .replace("%M", &mi)
                    .replace("%S", &s);
                match next(6) {
                    0 if !text.is_empty() => {
                        text.remove(next(text.len() as u64) as usize);
                    }
                    1 => text.insert(next(text.len() as u64 + 1) as usize, ' '),
                    _ => {}
                }
                // Whatever chrono accepts, the fast path reads the same; it may also read a date-only format
                // as midnight for a timestamp column, which chrono leaves to the caller.
                if let Ok(t) = chrono_only.parse_timestamp(&text) {
                    assert_eq!(fast.parse_timestamp(&text), Ok(t), "{format}: `{text}`");
                }
                if let Ok(d) = chrono_only.parse_date(&text) {
                    assert_eq!(fast.parse_date(&text), Ok(d), "{format}: `{text}`");
                }
            }
        }
        let p = TimeParser::new(Some("%d/%m/%Y %H:%M"), chrono_tz::Europe::Paris);
        let t = p.parse_timestamp("1/11/2026 9:05").unwrap();
        assert_eq!(DateTime::from_timestamp_micros(t).unwrap().to_rfc3339(), "2026-11-01T08:05:00+00:00");
    }

    #[test]
    fn french_timestamps_across_dst() {
        let p = TimeParser::new(Some("%d/%m/%Y %H:%M"), chrono_tz::Europe::Paris);
        // Winter: UTC+1.
        let t = p.parse_timestamp("15/01/2026 10:30").unwrap();
        assert_eq!(DateTime::from_timestamp_micros(t).unwrap().to_rfc3339(), "2026-01-15T09:30:00+00:00");
        // Summer: UTC+2.
        let t = p.parse_timestamp("15/07/2026 10:30").unwrap();
        assert_eq!(DateTime::from_timestamp_micros(t).unwrap().to_rfc3339(), "2026-07-15T08:30:00+00:00");
        // 29 March 2026 02:30 does not exist in Paris.
        assert!(p.parse_timestamp("29/03/2026 02:30").unwrap_err().contains("does not exist"));
        // 25 October 2026 02:30 happens twice: the first one (UTC+2).
        let t = p.parse_timestamp("25/10/2026 02:30").unwrap();
        assert_eq!(DateTime::from_timestamp_micros(t).unwrap().to_rfc3339(), "2026-10-25T00:30:00+00:00");
        assert!(p.parse_timestamp("32/01/2026 10:30").is_err());
        let iso = TimeParser::new(None, chrono_tz::Europe::Paris);
        assert_eq!(iso.parse_timestamp("2026-01-15T09:30:00Z").unwrap(), t - t + 1_768_469_400_000_000);
        assert_eq!(iso.parse_date("2026-01-15").unwrap(), 20468);
        // The fixed-width fast path and chrono agree; chrono handles what the fast path does not.
        let slow = TimeParser::new(Some("%d/%m/%Y %H:%M %p"), chrono_tz::Europe::Paris);
        assert!(slow.fast.is_none() && p.fast.is_some());
        assert_eq!(
            TimeParser::new(Some("%d/%m/%Y %H:%M%z"), chrono_tz::Europe::Paris)
                .parse_timestamp("15/01/2026 10:30+0000")
                .unwrap(),
            1_768_473_000_000_000
        );
        // Unpadded fields are read as chrono reads them (`%M` takes one or two digits).
        assert_eq!(p.parse_timestamp("15/01/2026 10:3"), p.parse_timestamp("15/01/2026 10:03"));
        assert!(p.parse_timestamp("15/01/2026 10:").is_err());
        assert!(p.parse_timestamp("15-01/2026 10:30").is_err());
        let d = TimeParser::new(Some("%d/%m/%Y"), chrono_tz::Europe::Paris);
        assert_eq!(d.parse_date("15/01/2026").unwrap(), 20468);
        assert!(d.parse_date("31/02/2026").is_err());
    }
}
