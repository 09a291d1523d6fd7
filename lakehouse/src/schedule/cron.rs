//! When a cron schedule fires, in the project's time zone, across daylight-saving changes.
//!
//! Schedules are read in local wall-clock time. When clocks go forward (Europe: the last Sunday of March,
//! 02:00 → 03:00), a time in the skipped hour fires once at the change (as Vixie cron does). When clocks go
//! back (the last Sunday of October, 03:00 → 02:00), a job at a fixed hour (`30 2 * * *`) fires once, in the
//! first 02:30; an interval job (`*/15 * * * *`, hour `*`) fires in both occurrences of the repeated hour, so it
//! keeps its real-time rhythm.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Timelike, Utc};

use crate::manifest::CronSchedule;

/// The first time strictly after `after` at which `schedule` fires (the earliest of its crate schedules).
pub fn next_fire(schedule: &CronSchedule, tz: chrono_tz::Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if schedule.is_continuous() {
        return Some(after);
    }
    let both = schedule.hour_is_wildcard();
    schedule.schedules().iter().filter_map(|s| next_fire_of(s, both, tz, after)).min()
}

fn next_fire_of(
    schedule: &cron::Schedule,
    both: bool,
    tz: chrono_tz::Tz,
    after: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let local = after.with_timezone(&tz).naive_local();
    // Wall-clock candidates from a little before `after`: around a repeated hour, local time runs backwards.
    let start = Utc.from_utc_datetime(&(local - Duration::hours(3)));
    let mut best: Option<(DateTime<Utc>, NaiveDateTime)> = None;
    for candidate in schedule.after(&start).take(100_000) {
        let naive = candidate.naive_utc();
        if let Some((_, first)) = best
            && naive > first + Duration::hours(3)
        {
            break;
        }
        let instants: Vec<DateTime<Utc>> = match tz.from_local_datetime(&naive) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, b) if both => vec![a.with_timezone(&Utc), b.with_timezone(&Utc)],
            LocalResult::Ambiguous(a, _) => vec![a.with_timezone(&Utc)],
            LocalResult::None => gap_end(tz, naive).into_iter().collect(),
        };
        for t in instants.into_iter().filter(|t| *t > after) {
            if best.is_none_or(|(b, _)| t < b) {
                best = Some((t, best.map_or(naive, |(_, n)| n)));
            }
        }
    }
    best.map(|(t, _)| t)
}

/// The instant clocks jump to when `naive` falls in a skipped hour: the next whole local hour.
fn gap_end(tz: chrono_tz::Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    let hour = naive.date().and_hms_opt(naive.hour(), 0, 0)? + Duration::hours(1);
    tz.from_local_datetime(&hour).earliest().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cron(s: &str) -> CronSchedule {
        CronSchedule::try_from(s.to_string()).unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    /// Every firing in [from, to).
    fn fires(schedule: &str, from: &str, to: &str) -> Vec<String> {
        let (s, tz, end) = (cron(schedule), chrono_tz::Europe::Paris, utc(to));
        let mut t = utc(from) - Duration::seconds(1);
        let mut out = Vec::new();
        while let Some(n) = next_fire(&s, tz, t).filter(|n| *n < end) {
            out.push(n.format("%Y-%m-%dT%H:%MZ").to_string());
            t = n;
        }
        out
    }

    #[test]
    fn fixed_time_in_the_skipped_hour_fires_once_at_the_change() {
        // 2026-03-29 in Paris: 02:00 CET → 03:00 CEST (01:00 UTC). 02:30 does not exist that day.
        assert_eq!(
            fires("30 2 * * *", "2026-03-28T00:00:00Z", "2026-03-31T00:00:00Z"),
            ["2026-03-28T01:30Z", "2026-03-29T01:00Z", "2026-03-30T00:30Z"]
        );
    }

    #[test]
    fn interval_jobs_keep_their_rhythm_when_clocks_go_forward() {
        let got = fires("*/30 * * * *", "2026-03-29T00:00:00Z", "2026-03-29T02:00:00Z");
        // 01:00, 01:30 CET, then the jump: 03:00, 03:30 CEST.
        assert_eq!(got, ["2026-03-29T00:00Z", "2026-03-29T00:30Z", "2026-03-29T01:00Z", "2026-03-29T01:30Z"]);
    }

    #[test]
    fn fixed_time_in_the_repeated_hour_fires_once() {
        // 2026-10-25 in Paris: 03:00 CEST → 02:00 CET (01:00 UTC). 02:30 happens twice; the job runs once.
        assert_eq!(
            fires("30 2 * * *", "2026-10-24T00:00:00Z", "2026-10-27T00:00:00Z"),
            ["2026-10-24T00:30Z", "2026-10-25T00:30Z", "2026-10-26T01:30Z"]
        );
    }

    #[test]
    fn hourly_jobs_run_25_times_on_the_long_day() {
        let got = fires("0 * * * *", "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z");
        assert_eq!(got.len(), 25, "{got:?}");
        assert!(got.contains(&"2026-10-25T00:00Z".to_string()) && got.contains(&"2026-10-25T01:00Z".to_string()));
        // And 23 times on the short day.
        assert_eq!(fires("0 * * * *", "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z").len(), 23);
    }

    /// Weekdays as crontab(5) numbers them: 0 and 7 are Sunday, 1 Monday; names; ranges; lists; steps.
    #[test]
    fn weekdays_mean_what_crontab_means() {
        let days = |s: &str| -> Vec<String> {
            fires(s, "2026-11-29T00:00:00Z", "2026-12-06T00:00:00Z") // Sunday 29 Nov to Saturday 5 Dec
                .iter()
                .map(|t| {
                    utc(&format!("{}:00Z", &t[..16])).with_timezone(&chrono_tz::Europe::Paris).format("%a").to_string()
                })
                .collect()
        };
        let weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri"];
        assert_eq!(days("0 6 * * 1-5"), weekdays);
        assert_eq!(days("0 6 * * mon-fri"), weekdays);
        assert_eq!(days("0 6 * * MON,tue,3-5"), weekdays);
        assert_eq!(days("0 6 * * 0"), ["Sun"]);
        assert_eq!(days("0 6 * * 7"), ["Sun"]);
        assert_eq!(days("0 6 * * 5-7"), ["Sun", "Fri", "Sat"]);
        assert_eq!(days("0 6 * * */2"), ["Sun", "Tue", "Thu", "Sat"]);
        assert_eq!(days("0 6 * * 1-5/2"), ["Mon", "Wed", "Fri"]);
        assert_eq!(days("0 6 * * 6,0"), ["Sun", "Sat"]);
        // On a Sunday evening, the next run of a weekday job is Monday.
        assert_eq!(
            next_fire(&cron("0 23 * * 1-5"), chrono_tz::Europe::Paris, utc("2026-11-29T18:00:00Z")),
            Some(utc("2026-11-30T22:00:00Z"))
        );
        for bad in ["0 6 * * 8", "0 6 * * 5-1", "0 6 * * fri-mon", "0 6 * * funday"] {
            let e = CronSchedule::try_from(bad.to_string()).unwrap_err();
            assert!(e.contains("invalid cron schedule") && e.contains("crontab"), "{bad}: {e}");
        }
    }

    /// Day of month and day of week both restricted: either matches (Vixie cron), not both.
    #[test]
    fn restricted_day_of_month_or_day_of_week() {
        // December 2026: the 1st is a Tuesday; Mondays are the 7th, 14th, 21st, 28th.
        let got = fires("0 0 1 * 1", "2026-11-30T12:00:00Z", "2026-12-31T12:00:00Z");
        let dates: Vec<String> = got
            .iter()
            .map(|t| {
                utc(&format!("{}:00Z", &t[..16])).with_timezone(&chrono_tz::Europe::Paris).format("%d").to_string()
            })
            .collect();
        assert_eq!(dates, ["01", "07", "14", "21", "28"]);
        // A star in either field keeps the other's meaning alone.
        assert_eq!(fires("0 0 1 * *", "2026-11-30T12:00:00Z", "2026-12-31T12:00:00Z").len(), 1);
        assert_eq!(fires("0 0 * * 1", "2026-11-30T12:00:00Z", "2026-12-31T12:00:00Z").len(), 4);
    }

    /// Weekday schedules across both daylight-saving changes: the local time holds.
    #[test]
    fn weekday_jobs_across_daylight_saving_changes() {
        // Sunday 29 March 2026 (clocks forward) and Sunday 25 October 2026 (clocks back).
        assert_eq!(
            fires("30 2 * * 0", "2026-03-22T12:00:00Z", "2026-04-06T00:00:00Z"),
            ["2026-03-29T01:00Z", "2026-04-05T00:30Z"]
        );
        assert_eq!(
            fires("30 2 * * sun", "2026-10-18T12:00:00Z", "2026-11-02T00:00:00Z"),
            ["2026-10-25T00:30Z", "2026-11-01T01:30Z"]
        );
        assert_eq!(fires("0 8 * * mon", "2026-03-28T00:00:00Z", "2026-04-01T00:00:00Z"), ["2026-03-30T06:00Z"]);
    }

    #[test]
    fn six_fields_read_seconds_first() {
        assert_eq!(fires("*/20 * * * * *", "2026-11-28T10:00:00Z", "2026-11-28T10:01:00Z").len(), 3);
        assert_eq!(
            next_fire(&cron("0 6 * * *"), chrono_tz::Europe::Paris, utc("2026-11-28T05:00:00Z")),
            Some(utc("2026-11-29T05:00:00Z"))
        );
    }
}
