//! Newtypes whose `Deserialize` checks the value, so a bad name, cron expression, duration or time zone fails at
//! its own line and column ("parse, don't validate").

use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "type": "string",
                    "description": concat!("A ", $what, ": lowercase letters, digits and single underscores, starting with a letter."),
                    "pattern": IDENTIFIER_PATTERN,
                    "maxLength": 63
                })
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                check_identifier(&s, $what)?;
                Ok(Self(s))
            }
        }
        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(&self.0)
            }
        }
        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }
    };
}

/// The identifier rule of [`check_identifier`] as a JSON Schema pattern (for editors).
const IDENTIFIER_PATTERN: &str = "^[a-z][a-z0-9]*(_[a-z0-9]+)*$";

pub fn check_identifier(s: &str, what: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid {what} `{s}`: use 1 to 63 lowercase letters, digits and single underscores, starting with a letter"
        ))
    }
}

identifier!(
    /// A table or source name: `ddsp_incidents` → bronze table `bronze.ddsp_incidents`.
    TableName,
    "table name"
);
identifier!(
    /// A partner id declared in `lakehouse.yaml`.
    PartnerId,
    "partner id"
);
identifier!(
    /// A pseudonymization key domain (`police`, `health`): one key per domain.
    DomainName,
    "key domain"
);
identifier!(
    /// A column name.
    ColumnName,
    "column name"
);

/// A cron schedule: the standard 5-field crontab (`min hour dom month dow`) or 6 fields with seconds first.
///
/// The `cron` crate reads seconds first, so a 5-field expression is translated by prefixing `0` seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
///
/// Fields mean what they mean in crontab(5): day-of-week `0` and `7` are Sunday, `1` Monday, names `sun`…`sat`
/// (the `cron` crate numbers days 1 = Sunday, so the field is translated to day names), and when both
/// day-of-month and day-of-week are restricted (neither starts with `*`), the job runs when **either** matches
/// (Vixie cron's rule; the crate would require both): such a schedule is two crate schedules, the earliest wins.
pub struct CronSchedule {
    source: String,
    schedules: Vec<cron::Schedule>,
}

impl CronSchedule {
    /// The crate schedules whose union is this schedule (two under the day-of-month OR day-of-week rule).
    pub fn schedules(&self) -> &[cron::Schedule] {
        &self.schedules
    }
    pub fn as_str(&self) -> &str {
        &self.source
    }
    /// `continuous`: a stream source's next run starts as soon as the last one ends.
    pub fn is_continuous(&self) -> bool {
        self.schedules.is_empty()
    }
    /// Whether the hour field is `*` or `*/N`: an interval job, which runs in both occurrences of the hour
    /// repeated when clocks go back (a job at a fixed hour runs in the first only).
    pub fn hour_is_wildcard(&self) -> bool {
        let fields: Vec<&str> = self.source.split_whitespace().collect();
        let hour = if fields.len() == 5 { fields[1] } else { fields.get(2).copied().unwrap_or("*") };
        hour == "*" || hour.starts_with("*/")
    }
}

impl JsonSchema for CronSchedule {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CronSchedule".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "Standard 5-field crontab (minute hour day-of-month month day-of-week), or 6 fields with seconds first; `continuous` for a stream source (each run starts when the last one ends).",
            "pattern": "^\\s*(continuous|\\S+(\\s+\\S+){4,5})\\s*$"
        })
    }
}

impl PartialEq for CronSchedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl TryFrom<String> for CronSchedule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.trim() == "continuous" {
            return Ok(Self { source: s, schedules: Vec::new() });
        }
        let mut fields: Vec<String> = s.split_whitespace().map(str::to_string).collect();
        match fields.len() {
            5 => fields.insert(0, "0".into()),
            6 => {}
            n => {
                return Err(format!(
                    "invalid cron schedule `{s}`: expected 5 fields (minute hour day-of-month month day-of-week) \
                     or 6 with seconds first, found {n}"
                ));
            }
        }
        let invalid = |why: &str| {
            format!(
                "invalid cron schedule `{s}`: {why} (standard 5-field crontab, e.g. `*/15 * * * *` or `0 6 * * mon-fri`, \
                 or 6 fields with seconds first)"
            )
        };
        let (dom, dow) = (fields[3].clone(), fields[5].clone());
        fields[5] = crontab_days(&dow).map_err(|why| invalid(&why))?;
        let mut exprs = Vec::new();
        if !dom.starts_with('*') && !dow.starts_with('*') {
            // Either day matches: one schedule per day field, the other field left free.
            let mut by_month_day = fields.clone();
            by_month_day[5] = "*".into();
            let mut by_week_day = fields;
            by_week_day[3] = "*".into();
            exprs.push(by_month_day.join(" "));
            exprs.push(by_week_day.join(" "));
        } else {
            exprs.push(fields.join(" "));
        }
        let schedules = exprs
            .iter()
            .map(|expr| {
                cron::Schedule::from_str(expr).map_err(|e| {
                    // The cron crate's message repeats the expression with a caret line; keep its explanation.
                    let e = e.to_string();
                    invalid(e.lines().last().unwrap_or_default().trim())
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { source: s, schedules })
    }
}

/// The crontab day-of-week field (`0`–`7`, `0` and `7` Sunday, names `sun`…`sat`, ranges, lists and steps) as
/// the `cron` crate's names, which it reads without ambiguity (`MON,TUE`); the crate numbers days 1 = Sunday.
fn crontab_days(field: &str) -> Result<String, String> {
    const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    let day = |s: &str| -> Result<usize, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = NAMES.iter().position(|n| n.eq_ignore_ascii_case(&lower)) {
            return Ok(i);
        }
        match s.parse::<usize>() {
            Ok(n @ 0..=7) => Ok(n % 7),
            _ => Err(format!("day of week `{s}` is not 0–7 (0 and 7 are Sunday) or sun…sat")),
        }
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => {
                (r, s.parse::<usize>().ok().filter(|s| *s > 0).ok_or_else(|| format!("invalid step in `{item}`"))?)
            }
            None => (item, 1),
        };
        let (lo, hi) = match range {
            "*" => (0, 6),
            r => match r.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (day(a)?, if b == "7" { 7 } else { day(b)? });
                    if a > b {
                        return Err(format!("day-of-week range `{r}` runs backwards"));
                    }
                    (a, b)
                }
                None if step > 1 => (day(r)?, 6),
                None => (day(r)?, day(r)?),
            },
        };
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    Ok(days.iter().zip(NAMES).filter(|(on, _)| **on).map(|(_, n)| n).collect::<Vec<_>>().join(","))
}

impl From<CronSchedule> for String {
    fn from(c: CronSchedule) -> String {
        c.source
    }
}

/// A retention period: `90 days`, `6 months`, `3 years`, `forever`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Retention {
    Days(u32),
    Months(u32),
    Years(u32),
    Forever,
}

impl JsonSchema for Retention {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Retention".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`N days`, `N months`, `N years` or `forever`.",
            "pattern": "^\\s*(forever|[1-9][0-9]*\\s+(day|days|month|months|year|years))\\s*$"
        })
    }
}

impl TryFrom<String> for Retention {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("invalid retention `{s}`: expected `N days`, `N months`, `N years` or `forever`");
        if s.trim() == "forever" {
            return Ok(Self::Forever);
        }
        let mut parts = s.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let n: u32 = n.parse().map_err(|_| bad())?;
        if n == 0 {
            return Err(bad());
        }
        let r = match unit {
            "day" | "days" => Self::Days(n),
            "month" | "months" => Self::Months(n),
            "year" | "years" => Self::Years(n),
            _ => return Err(bad()),
        };
        // Dates are computed from it: keep it to a range they can hold.
        if r.max_days().is_some_and(|d| d > 1000 * 366) {
            return Err(format!("retention `{s}` is longer than 1000 years: write `forever`"));
        }
        Ok(r)
    }
}

impl Retention {
    /// At least this many days (a month counted as 31, a year as 366); `None` for `forever`.
    pub fn max_days(self) -> Option<u64> {
        match self {
            Self::Days(n) => Some(u64::from(n)),
            Self::Months(n) => Some(u64::from(n) * 31),
            Self::Years(n) => Some(u64::from(n) * 366),
            Self::Forever => None,
        }
    }
}

impl From<Retention> for String {
    fn from(r: Retention) -> String {
        r.to_string()
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Days(n) => write!(f, "{n} day{}", if *n == 1 { "" } else { "s" }),
            Self::Months(n) => write!(f, "{n} month{}", if *n == 1 { "" } else { "s" }),
            Self::Years(n) => write!(f, "{n} year{}", if *n == 1 { "" } else { "s" }),
            Self::Forever => f.write_str("forever"),
        }
    }
}

/// A duration written for humans: `30 seconds`, `5 minutes`, `2 hours`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Duration(pub std::time::Duration);

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "`N seconds`, `N minutes` or `N hours`.",
            "pattern": "^\\s*[1-9][0-9]*\\s+(second|seconds|minute|minutes|hour|hours)\\s*$"
        })
    }
}

impl TryFrom<String> for Duration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let bad = || format!("invalid duration `{s}`: expected `N seconds`, `N minutes` or `N hours`");
        let mut parts = s.split_whitespace();
        let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let n: u64 = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        let secs = match unit {
            "second" | "seconds" => Some(n),
            "minute" | "minutes" => n.checked_mul(60),
            "hour" | "hours" => n.checked_mul(3600),
            _ => return Err(bad()),
        };
        // A year is already longer than any timeout, backoff or settle time means.
        const YEAR: u64 = 366 * 24 * 3600;
        match secs {
            Some(secs) if secs <= YEAR => Ok(Self(std::time::Duration::from_secs(secs))),
            _ => Err(format!("duration `{s}` is longer than a year (8784 hours)")),
        }
    }
}

impl From<Duration> for String {
    fn from(d: Duration) -> String {
        let s = d.0.as_secs();
        if s.is_multiple_of(3600) {
            format!("{} hours", s / 3600)
        } else if s.is_multiple_of(60) {
            format!("{} minutes", s / 60)
        } else {
            format!("{s} seconds")
        }
    }
}

/// An IANA time zone name such as `Europe/Paris`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct TimeZone(pub chrono_tz::Tz);

impl TryFrom<String> for TimeZone {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        chrono_tz::Tz::from_str(&s)
            .map(Self)
            .map_err(|_| format!("unknown time zone `{s}`: use an IANA name such as `Europe/Paris` or `UTC`"))
    }
}

impl From<TimeZone> for String {
    fn from(t: TimeZone) -> String {
        t.0.name().to_string()
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self(chrono_tz::Europe::Paris)
    }
}

/// The country whose national notation phone numbers are read in (`privacy.phone_country`, ISO 3166 code):
/// its calling code, and its trunk prefix (the `0` of `06 12 34 56 78`), which E.164 drops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "String", into = "String")]
#[schemars(with = "String")]
pub struct PhoneCountry(usize);

impl PhoneCountry {
    /// The ISO 3166 code (`FR`).
    pub fn code(self) -> &'static str {
        PHONE_COUNTRIES[self.0].0
    }
    /// The calling code without `+` (`33`).
    pub fn calling_code(self) -> &'static str {
        PHONE_COUNTRIES[self.0].1
    }
    /// The trunk prefix of national numbers (`0`), if the country has one that E.164 drops.
    pub fn trunk_prefix(self) -> Option<&'static str> {
        PHONE_COUNTRIES[self.0].2
    }
}

/// The countries `privacy.phone_country` accepts: ISO code, calling code, trunk prefix.
const PHONE_COUNTRIES: [(&str, &str, Option<&str>); 16] = [
    ("AT", "43", Some("0")),
    ("BE", "32", Some("0")),
    ("CA", "1", Some("1")),
    ("CH", "41", Some("0")),
    ("DE", "49", Some("0")),
    ("ES", "34", None),
    ("FR", "33", Some("0")),
    ("GB", "44", Some("0")),
    ("IE", "353", Some("0")),
    ("IT", "39", None),
    ("LU", "352", None),
    ("MA", "212", Some("0")),
    ("MC", "377", None),
    ("NL", "31", Some("0")),
    ("PT", "351", None),
    ("US", "1", Some("1")),
];

impl TryFrom<String> for PhoneCountry {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let code = s.trim().to_ascii_uppercase();
        PHONE_COUNTRIES.iter().position(|(c, ..)| *c == code).map(Self).ok_or_else(|| {
            let known: Vec<&str> = PHONE_COUNTRIES.iter().map(|(c, ..)| *c).collect();
            format!("unknown phone country `{s}`: use one of {}", known.join(", "))
        })
    }
}

impl From<PhoneCountry> for String {
    fn from(c: PhoneCountry) -> String {
        c.code().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_accepts_five_and_six_fields() {
        let five = CronSchedule::try_from("*/15 * * * *".to_string()).unwrap();
        assert_eq!(five.as_str(), "*/15 * * * *");
        assert!(CronSchedule::try_from("0 */15 * * * *".to_string()).is_ok());
        let err = CronSchedule::try_from("* * *".to_string()).unwrap_err();
        assert!(err.contains("found 3"), "{err}");
        assert!(CronSchedule::try_from("61 * * * *".to_string()).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(TableName::try_from("ddsp_incidents".to_string()).is_ok());
        for bad in ["", "Ddsp", "1abc", "a-b", "a__b"] {
            assert!(TableName::try_from(bad.to_string()).is_err(), "{bad}");
        }
    }

    #[test]
    fn retention_parses() {
        assert_eq!(Retention::try_from("3 years".to_string()), Ok(Retention::Years(3)));
        assert_eq!(Retention::try_from("forever".to_string()), Ok(Retention::Forever));
        assert!(Retention::try_from("3 fortnights".to_string()).is_err());
        assert!(Retention::try_from("0 days".to_string()).is_err());
    }
}
