//! When jobs are due. Users write standard 5-field crontab lines (Sunday is
//! 0 or 7, names, ranges, steps, `@daily`); the `cron` crate wants 6 fields
//! with seconds and numbers Sunday as 1. Each field is expanded here into
//! an explicit list, which sidesteps the numbering differences, validates
//! with messages that name the field, and keeps crontab's rule that a
//! restricted day-of-month and day-of-week match when *either* does.
//!
//! Time here can jump (guarantee 9): the lines name wall-clock times,
//! placed on the real time line so daylight saving neither skips nor
//! repeats a run, and the last check never goes back with a clock stepped
//! back, so no scheduled time runs twice.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Local, NaiveDateTime, Offset, TimeZone, Timelike, Utc};

use crate::job::Job;

/// The state's meta row where `run` records (unix seconds) when it last
/// looked at the schedule: the next `run`'s window starts there, and
/// `doctor` judges cron's liveness by it.
pub const SCHEDULE_CHECKED: &str = "schedule_checked_at";

/// A parsed crontab line.
#[derive(Debug, Clone)]
pub struct Cron {
    schedules: Vec<cron::Schedule>,
}

const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];

impl Cron {
    pub fn parse(line: &str) -> Result<Cron, String> {
        let line = line.trim();
        let expanded = match line.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            m if m.starts_with('@') => {
                return Err(format!("`{line}` is not a schedule feedsync knows"));
            }
            _ => line,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [min, hour, dom, month, dow] = fields[..] else {
            return Err(format!(
                "`{line}` has {} fields; write 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        };
        let (dom_raw, dow_raw) = (dom, dow);
        let min = list(expand(min, 0, 59, &[], 0).map_err(|e| format!("minute: {e}"))?);
        let hour = list(expand(hour, 0, 23, &[], 0).map_err(|e| format!("hour: {e}"))?);
        let dom = list(expand(dom, 1, 31, &[], 0).map_err(|e| format!("day of month: {e}"))?);
        let month = list(expand(month, 1, 12, &MONTHS, 1).map_err(|e| format!("month: {e}"))?);
        let dow = expand(dow, 0, 7, &DAYS, 0).map_err(|e| format!("day of week: {e}"))?;
        // 7 is Sunday too; emit names so the crate's own numbering never matters.
        let days: BTreeSet<u32> = dow.iter().map(|d| d % 7).collect();
        let dow = days
            .iter()
            .map(|d| DAYS[*d as usize])
            .collect::<Vec<_>>()
            .join(",");
        let make = |dom: &str, dow: &str| {
            cron::Schedule::from_str(&format!("0 {min} {hour} {dom} {month} {dow}"))
                .map_err(|e| format!("`{line}`: {e}"))
        };
        // Crontab: when both day fields are restricted (neither starts with
        // `*`), either one matching is enough; otherwise both must.
        let schedules = if !dom_raw.starts_with('*') && !dow_raw.starts_with('*') {
            vec![make(&dom, "*")?, make("*", &dow)?]
        } else {
            vec![make(&dom, &dow)?]
        };
        Ok(Cron { schedules })
    }

    /// Whether a fire time falls in (`after`, `until`].
    pub fn fires_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        self.fires_between_in(&Local, after, until)
    }

    fn fires_between_in<Z: TimeZone>(
        &self,
        zone: &Z,
        after: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> bool {
        self.schedules
            .iter()
            .any(|s| instants(s, zone, after).next().is_some_and(|t| t <= until))
    }

    /// The longest wait between two fire times, looking a week ahead of
    /// `from` (a year for rarer lines). `doctor` judges cron's liveness by it.
    pub fn longest_gap(&self, from: DateTime<Utc>) -> chrono::Duration {
        for days in [8, 400] {
            let until = from + chrono::Duration::days(days);
            let mut times: Vec<DateTime<Utc>> = self
                .schedules
                .iter()
                // A week of minutes is 10,080 fire times.
                .flat_map(|s| {
                    instants(s, &Local, from)
                        .take(20_000)
                        .take_while(|t| *t <= until)
                })
                .collect();
            times.sort();
            times.dedup();
            if times.len() >= 3 {
                return times
                    .windows(2)
                    .map(|w| w[1] - w[0])
                    .max()
                    .unwrap_or_default();
            }
        }
        chrono::Duration::days(400)
    }
}

/// A schedule's fire instants after `after`, in order (a time the gap
/// skips and the first time after it are one instant, so one run).
///
/// A crontab line names wall-clock times. Each is taken at the first
/// instant the zone's clock shows it, so a time the fall-back hour repeats
/// fires once; a time the spring-forward gap skips fires at the first
/// instant after the gap, as in Vixie cron and cronie. The `cron` crate,
/// given a zone, drops a gap's times and can take a repeated time's second
/// instant, so it is asked only for wall-clock times, in a zone without
/// daylight saving, and they are placed on the real time line here.
fn instants<'a, Z: TimeZone + 'a>(
    schedule: &'a cron::Schedule,
    zone: &'a Z,
    after: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + 'a {
    let wall = Utc.from_utc_datetime(&after.with_timezone(zone).naive_local());
    // Every instant after `after` is a wall-clock time after `wall`; only
    // the times of a repeated hour can map back before `after`.
    schedule
        .after(&wall)
        .filter_map(move |t| first_shown(zone, t.naive_utc()))
        .skip_while(move |t| *t <= after)
}

/// The first instant at which `zone`'s clock reads `wall`, or, for a time a
/// gap skips, the first instant after the gap.
fn first_shown<Z: TimeZone>(zone: &Z, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    // Gaps last an hour, rarely more; Samoa once skipped a whole day.
    (0..=48 * 60).find_map(|m| shown(zone, wall + chrono::Duration::minutes(m)))
}

/// The earliest instant at which `zone`'s clock reads `wall`, if any.
///
/// Found from the zone's offsets alone (instant → wall clock), not from
/// chrono's wall clock → instant, which for `Local` is wrong at the edges
/// of a change (03:00 on a fall-back night comes out ambiguous, 02:00 on a
/// spring-forward night as existing, and the two instants of a repeated
/// time in either order). The instant sought is within 14 h of `wall` read
/// as UTC, so the offsets a day either side are all it can have, as long
/// as the zone changes its offset at most once in two days.
fn shown<Z: TimeZone>(zone: &Z, wall: NaiveDateTime) -> Option<DateTime<Utc>> {
    let as_utc = Utc.from_utc_datetime(&wall);
    let day = chrono::Duration::days(1);
    [as_utc - day, as_utc + day]
        .into_iter()
        .map(|t| {
            as_utc
                - chrono::Duration::seconds(
                    t.with_timezone(zone)
                        .offset()
                        .fix()
                        .local_minus_utc()
                        .into(),
                )
        })
        .filter(|t| t.with_timezone(zone).naive_local() == wall)
        .min()
}

fn list(set: BTreeSet<u32>) -> String {
    set.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

/// Expands one crontab field (`*`, `a`, `a-b`, `*/n`, `a-b/n`, lists,
/// names, the first of which stands for `name_base`) into the set of
/// values it matches.
fn expand(
    field: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<BTreeSet<u32>, String> {
    let value = |s: &str| -> Result<u32, String> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(i as u32 + name_base);
        }
        let n: u32 = s.parse().map_err(|_| {
            format!(
                "`{s}` is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })?;
        if n < min || n > max {
            return Err(format!("{n} is outside {min}-{max}"));
        }
        Ok(n)
    };
    let mut out = BTreeSet::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| format!("step `{s}` is not a number"))?;
                if step == 0 {
                    return Err("a step of 0".into());
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!("range `{range}` runs backwards"));
            }
            (a, b)
        } else {
            let a = value(range)?;
            // `a/n` means from a to the end, as in Vixie cron.
            (a, if part.contains('/') { max } else { a })
        };
        out.extend((lo..=hi).step_by(step as usize));
    }
    if out.is_empty() {
        return Err(format!("`{field}` matches nothing"));
    }
    Ok(out)
}

/// How far back the clock may step and still be taken for the same clock:
/// within this, the last check stands and nothing runs until the clock
/// has passed it again; beyond it, the clock is taken to have been wrong
/// and set right (a fast clock corrected), and the schedule starts afresh
/// at the current minute instead of waiting, maybe years, for the old
/// time. Vixie cron and cronie draw the same line at three hours.
pub const STEP_BACK_HELD: chrono::Duration = chrono::Duration::hours(3);

/// The window a check at `now` looks at, (start, `now`], and the time it
/// leaves as the last check. The stored time never goes back, except when
/// the clock is set right past [`STEP_BACK_HELD`].
fn window(last_check: Option<DateTime<Utc>>, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    match last_check {
        Some(t) if t <= now => (t, now),
        Some(t) if t - now <= STEP_BACK_HELD => (t, t),
        // The first check, or a clock set right: the current minute only.
        _ => {
            let minute = now
                .with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(now);
            (minute - chrono::Duration::seconds(1), now)
        }
    }
}

/// The jobs due at `now`, in run order ([`Job::ALL`]): those with a fire time in
/// (`last_check`, `now`]. The very first check looks at the current minute
/// only; after downtime each job is due once, however many times it fired.
/// After the clock stepped back nothing is due until it has passed
/// `last_check` again, so no scheduled time runs twice.
pub fn due<'a>(
    jobs: impl IntoIterator<Item = (Job, &'a Cron)>,
    last_check: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<Job> {
    let (after, _) = window(last_check, now);
    let mut due: Vec<Job> = jobs
        .into_iter()
        .filter(|(_, cron)| after < now && cron.fires_between(after, now))
        .map(|(job, _)| job)
        .collect();
    due.sort_by_key(|j| j.run_order());
    due
}

/// What a check at `now` stores as the last check ([`SCHEDULE_CHECKED`]).
pub fn checked(last_check: Option<DateTime<Utc>>, now: DateTime<Utc>) -> DateTime<Utc> {
    window(last_check, now).1
}

/// A local wall-clock time as UTC.
#[cfg(test)]
fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    use chrono::TimeZone;
    Local
        .with_ymd_and_hms(y, mo, d, h, mi, 0)
        .single()
        .expect("an unambiguous local time")
        .with_timezone(&Utc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fires(line: &str, at: DateTime<Utc>) -> bool {
        Cron::parse(line)
            .unwrap()
            .fires_between(at - chrono::Duration::seconds(1), at)
    }

    #[test]
    fn sunday_is_0_and_7() {
        // 2026-11-29 is a Sunday; 2026-11-30 a Monday.
        let sunday = local(2026, 11, 29, 3, 0);
        let monday = local(2026, 11, 30, 3, 0);
        for line in [
            "0 3 * * 0",
            "0 3 * * 7",
            "0 3 * * sun",
            "0 3 * * SUN",
            "0 3 * * 6-7",
            "0 3 * * 0,3",
        ] {
            assert!(fires(line, sunday), "{line}");
            assert!(!fires(line, monday), "{line}");
        }
        assert!(fires("0 3 * * 1-5", monday));
        assert!(fires("0 3 * * MON-FRI", monday));
        assert!(!fires("0 3 * * 1-5", sunday));
    }

    #[test]
    fn steps_ranges_lists_names_and_macros() {
        let t = |h, m| local(2026, 3, 2, h, m);
        assert!(fires("*/5 * * * *", t(10, 35)));
        assert!(!fires("*/5 * * * *", t(10, 36)));
        assert!(fires("10-20/5 9-17 * * *", t(9, 15)));
        assert!(!fires("10-20/5 9-17 * * *", t(18, 15)));
        assert!(fires("0,30 * * * *", t(4, 30)));
        assert!(fires("0 0 2 mar *", t(0, 0)));
        assert!(fires("@daily", t(0, 0)));
        assert!(!fires("@daily", t(0, 1)));
        assert!(fires("@hourly", t(7, 0)));
        assert!(fires("@monthly", local(2026, 4, 1, 0, 0)));
        assert!(fires("@weekly", local(2026, 11, 29, 0, 0)));
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // "the 1st, and every Monday": either matches (crontab semantics).
        assert!(fires("0 0 1 * 1", local(2026, 11, 30, 0, 0)), "a Monday");
        assert!(fires("0 0 1 * 1", local(2026, 12, 1, 0, 0)), "the 1st");
        assert!(!fires("0 0 1 * 1", local(2026, 12, 2, 0, 0)));
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, want) in [
            ("* * * *", "4 fields"),
            ("61 * * * *", "minute: 61 is outside 0-59"),
            ("* * * * 8", "day of week"),
            ("* * * foo *", "month"),
            ("*/0 * * * *", "step of 0"),
            ("@reboot", "not a schedule"),
        ] {
            let e = Cron::parse(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

    #[test]
    fn longest_gap() {
        let from = local(2026, 11, 25, 12, 0); // a Wednesday
        let gap = |line: &str| Cron::parse(line).unwrap().longest_gap(from).num_minutes();
        assert_eq!(gap("* * * * *"), 1);
        assert_eq!(gap("*/5 * * * *"), 5);
        assert_eq!(gap("0 2 * * *"), 24 * 60);
        // Weekdays 9-17: from Friday 17:59 to Monday 9:00.
        assert_eq!(gap("* 9-17 * * 1-5"), (2 * 24 + 15) * 60 + 1);
        // Whole days, whatever daylight saving does to the hours.
        assert_eq!(gap("@monthly") / (24 * 60), 31);
    }

    #[test]
    fn due_window() {
        let every = Cron::parse("* * * * *").unwrap();
        let five = Cron::parse("*/5 * * * *").unwrap();
        let nightly = Cron::parse("0 2 * * *").unwrap();
        let jobs = || {
            [
                (Job::Cleanup, &nightly),
                (Job::Retry, &five),
                (Job::Sync, &every),
            ]
        };
        // First run: only the current minute counts.
        let now = local(2026, 11, 29, 10, 5) + chrono::Duration::seconds(30);
        assert_eq!(due(jobs(), None, now), vec![Job::Sync, Job::Retry]);
        let now = local(2026, 11, 29, 10, 6) + chrono::Duration::seconds(30);
        assert_eq!(due(jobs(), None, now), vec![Job::Sync]);
        // After hours of downtime each job runs once.
        let last = local(2026, 11, 28, 22, 0);
        assert_eq!(
            due(jobs(), Some(last), now),
            vec![Job::Sync, Job::Retry, Job::Cleanup]
        );
        // Checked this minute already: nothing new.
        assert!(due(jobs(), Some(now), now).is_empty());
    }

    /// Europe/Berlin in 2026, from its rules: CET, and CEST from
    /// 2026-03-29 01:00 UTC to 2026-10-25 01:00 UTC. (Only instant → wall
    /// clock is used by the schedule; the other way is here for the trait.)
    #[derive(Clone, Copy)]
    struct Berlin2026;

    impl Berlin2026 {
        fn offset_at(utc: &chrono::NaiveDateTime) -> chrono::FixedOffset {
            let summer = utc.and_utc() >= "2026-03-29T01:00:00Z".parse::<DateTime<Utc>>().unwrap()
                && utc.and_utc() < "2026-10-25T01:00:00Z".parse::<DateTime<Utc>>().unwrap();
            chrono::FixedOffset::east_opt(if summer { 7200 } else { 3600 }).unwrap()
        }
    }

    impl TimeZone for Berlin2026 {
        type Offset = chrono::FixedOffset;
        fn from_offset(_: &chrono::FixedOffset) -> Self {
            Berlin2026
        }
        fn offset_from_local_date(
            &self,
            local: &chrono::NaiveDate,
        ) -> chrono::LocalResult<chrono::FixedOffset> {
            self.offset_from_local_datetime(&local.and_hms_opt(0, 0, 0).unwrap())
        }
        fn offset_from_local_datetime(
            &self,
            local: &chrono::NaiveDateTime,
        ) -> chrono::LocalResult<chrono::FixedOffset> {
            let fits: Vec<chrono::FixedOffset> = [3600, 7200]
                .into_iter()
                .map(|s| chrono::FixedOffset::east_opt(s).unwrap())
                .filter(|o| Self::offset_at(&(*local - *o)) == *o)
                .collect();
            match fits[..] {
                [] => chrono::LocalResult::None,
                [o] => chrono::LocalResult::Single(o),
                [a, b] => chrono::LocalResult::Ambiguous(a, b),
                _ => unreachable!(),
            }
        }
        fn offset_from_utc_date(&self, utc: &chrono::NaiveDate) -> chrono::FixedOffset {
            Self::offset_at(&utc.and_hms_opt(0, 0, 0).unwrap())
        }
        fn offset_from_utc_datetime(&self, utc: &chrono::NaiveDateTime) -> chrono::FixedOffset {
            Self::offset_at(utc)
        }
    }

    /// The minutes (UTC, as `HH:MM`) from `from` for `minutes` minutes at
    /// which `line` fires in Berlin, checking minute by minute as `run` does.
    fn berlin_fires(line: &str, from: &str, minutes: i64) -> Vec<String> {
        let cron = Cron::parse(line).unwrap();
        let from: DateTime<Utc> = from.parse().unwrap();
        (0..minutes)
            .map(|m| from + chrono::Duration::minutes(m))
            .filter(|t| cron.fires_between_in(&Berlin2026, *t - chrono::Duration::minutes(1), *t))
            .map(|t| t.format("%H:%M").to_string())
            .collect()
    }

    #[test]
    fn spring_forward_runs_a_skipped_time_at_the_first_minute_after_the_gap() {
        // 2026-03-29: the clock goes from 01:59:59 CET (00:59:59 UTC) to
        // 03:00 CEST (01:00 UTC). From 00:00 CET to 05:00 CEST.
        let night = ("2026-03-28T23:00:00Z", 4 * 60);
        let fires = |line| berlin_fires(line, night.0, night.1);
        assert_eq!(fires("30 2 * * *"), ["01:00"], "02:30 runs at 03:00 CEST");
        assert_eq!(fires("0 2 * * *"), ["01:00"]);
        assert_eq!(fires("59 2 * * *"), ["01:00"]);
        // 02:00 and 03:00 are one instant: one run.
        assert_eq!(fires("0 * * * *"), ["23:00", "00:00", "01:00", "02:00"]);
        assert_eq!(fires("*/30 2-3 * * *"), ["01:00", "01:30"]);
        assert_eq!(fires("0 3 * * *"), ["01:00"]);
        // Days without a change are untouched.
        let day_before = berlin_fires("30 2 * * *", "2026-03-27T23:00:00Z", 4 * 60);
        assert_eq!(day_before, ["01:30"]);
    }

    #[test]
    fn fall_back_runs_a_repeated_time_once_the_first_time() {
        // 2026-10-25: the clock goes from 02:59:59 CEST (00:59:59 UTC) back
        // to 02:00 CET (01:00 UTC). From 00:00 CEST to 05:00 CET.
        let night = ("2026-10-24T22:00:00Z", 7 * 60);
        let fires = |line| berlin_fires(line, night.0, night.1);
        assert_eq!(fires("30 2 * * *"), ["00:30"], "02:30 CEST only");
        assert_eq!(fires("0 2 * * *"), ["00:00"]);
        assert_eq!(fires("0 3 * * *"), ["02:00"], "03:00 exists once, in CET");
        assert_eq!(
            fires("0 * * * *"),
            ["22:00", "23:00", "00:00", "02:00", "03:00", "04:00"],
            "each wall-clock hour once"
        );
        let every = fires("* * * * *");
        let mut unique = every.clone();
        unique.dedup();
        assert_eq!(every, unique);
        assert_eq!(every.len(), 7 * 60 - 60, "the repeated hour's minutes once");
    }

    #[test]
    fn a_clock_stepped_back_holds_the_last_check() {
        let every = Cron::parse("* * * * *").unwrap();
        let jobs = || [(Job::Sync, &every)];
        let ten = local(2026, 11, 29, 10, 0);
        let nine = local(2026, 11, 29, 9, 0);
        // Set back an hour: nothing is due, and the last check stays.
        assert!(due(jobs(), Some(ten), nine).is_empty());
        assert_eq!(checked(Some(ten), nine), ten);
        let past = ten + chrono::Duration::seconds(30);
        assert!(due(jobs(), Some(ten), past).is_empty(), "10:00 again");
        let next = local(2026, 11, 29, 10, 1);
        assert_eq!(due(jobs(), Some(ten), next), [Job::Sync]);
        assert_eq!(checked(Some(ten), next), next);
        // Set back further than STEP_BACK_HELD: a clock set right starts
        // afresh at the current minute.
        let fast = ten + chrono::Duration::days(365 * 70);
        assert_eq!(due(jobs(), Some(fast), ten), [Job::Sync]);
        assert_eq!(checked(Some(fast), ten), ten);
        let held = ten - STEP_BACK_HELD;
        assert!(due(jobs(), Some(ten), held).is_empty());
        assert_eq!(
            due(jobs(), Some(ten), held - chrono::Duration::minutes(1)),
            [Job::Sync]
        );
    }
}
