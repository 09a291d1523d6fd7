//! Typed parsing of one field's text into the declared column type.
//!
//! Errors describe what was expected, never the value itself: the value may be personal data, and reasons are
//! printed, logged and stored in clear (the raw record is only stored encrypted).

use chrono::format::{Item, Parsed, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _};
use chrono_tz::Tz;

/// Checks a strptime format string.
pub fn check_strptime(fmt: &str) -> Result<(), String> {
    if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        Err(format!("invalid strptime format `{fmt}`"))
    } else {
        Ok(())
    }
}

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
    format: Option<String>,
    tz: Tz,
}

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

impl TimeParser {
    pub fn new(format: Option<&str>, tz: Tz) -> Self {
        let items = format.map(|f| StrftimeItems::new(f).parse_to_owned().unwrap_or_default());
        Self { items, format: format.map(str::to_string), tz }
    }

    fn describe(&self, what: &str) -> String {
        match &self.format {
            Some(f) => format!("not a {what} in format `{f}`"),
            None => format!("not an ISO 8601 {what}"),
        }
    }

    /// Days since 1970-01-01.
    pub fn parse_date(&self, s: &str) -> Result<i32, String> {
        let date = match &self.items {
            Some(items) => {
                let mut p = Parsed::new();
                chrono::format::parse(&mut p, s, items.iter()).ok().and_then(|_| p.to_naive_date().ok())
            }
            None => NaiveDate::parse_from_str(s, "%Y-%m-%d").ok(),
        };
        use chrono::Datelike;
        date.map(|d| d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE).ok_or_else(|| self.describe("date"))
    }

    /// Microseconds since the Unix epoch, UTC. Values without an offset are local times in the column's zone.
    pub fn parse_timestamp(&self, s: &str) -> Result<i64, String> {
        let local = match &self.items {
            Some(items) => {
                let mut p = Parsed::new();
                if chrono::format::parse(&mut p, s, items.iter()).is_err() {
                    return Err(self.describe("timestamp"));
                }
                if p.offset().is_some() {
                    return p.to_datetime().map(|d| d.timestamp_micros()).map_err(|_| self.describe("timestamp"));
                }
                p.to_naive_datetime_with_offset(0).map_err(|_| self.describe("timestamp"))?
            }
            None => {
                if let Ok(d) = DateTime::parse_from_rfc3339(s) {
                    return Ok(d.timestamp_micros());
                }
                const NAIVE: [&str; 4] =
                    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"];
                NAIVE
                    .iter()
                    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
                    .ok_or_else(|| self.describe("timestamp"))?
            }
        };
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
    }
}
