//! When jobs are due. Users write standard 5-field crontab lines (Sunday is
//! 0 or 7, names, ranges, steps, `@daily`); the `cron` crate wants 6 fields
//! with seconds and numbers Sunday as 1. Each field is expanded here into
//! an explicit list, which sidesteps the numbering differences, validates
//! with messages that name the field, and keeps crontab's rule that a
//! restricted day-of-month and day-of-week match when *either* does.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{DateTime, Local, Timelike, Utc};

/// The jobs `run` knows, in the order it runs them when several are due.
pub const JOBS: [&str; 5] = ["sync", "send", "retry", "resync", "cleanup"];

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

    /// Whether a fire time falls in (`after`, `until`], in local time.
    pub fn fires_between(&self, after: DateTime<Utc>, until: DateTime<Utc>) -> bool {
        let after = after.with_timezone(&Local);
        let until = until.with_timezone(&Local);
        self.schedules
            .iter()
            .any(|s| s.after(&after).next().is_some_and(|t| t <= until))
    }

    /// The longest wait between two fire times, looking a week ahead of
    /// `from` (a year for rarer lines). `doctor` judges cron's liveness by it.
    pub fn longest_gap(&self, from: DateTime<Utc>) -> chrono::Duration {
        let from = from.with_timezone(&Local);
        for days in [8, 400] {
            let until = from + chrono::Duration::days(days);
            let mut times: Vec<DateTime<Local>> = self
                .schedules
                .iter()
                // A week of minutes is 10,080 fire times.
                .flat_map(|s| s.after(&from).take(20_000).take_while(|t| *t <= until))
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

/// The jobs due at `now`, in run order: those with a fire time in
/// (`last_check`, `now`]. The very first check looks at the current minute
/// only; after downtime each job is due once, however many times it fired.
pub fn due<'a>(
    jobs: impl IntoIterator<Item = (&'a str, &'a Cron)>,
    last_check: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Vec<&'a str> {
    let after = match last_check {
        Some(t) => t,
        None => {
            let minute = now
                .with_second(0)
                .and_then(|t| t.with_nanosecond(0))
                .unwrap_or(now);
            minute - chrono::Duration::seconds(1)
        }
    };
    let mut due: Vec<&str> = jobs
        .into_iter()
        .filter(|(_, cron)| after < now && cron.fires_between(after, now))
        .map(|(name, _)| name)
        .collect();
    due.sort_by_key(|j| JOBS.iter().position(|k| k == j));
    due
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
        let jobs = || [("cleanup", &nightly), ("retry", &five), ("sync", &every)];
        // First run: only the current minute counts.
        let now = local(2026, 11, 29, 10, 5) + chrono::Duration::seconds(30);
        assert_eq!(due(jobs(), None, now), vec!["sync", "retry"]);
        let now = local(2026, 11, 29, 10, 6) + chrono::Duration::seconds(30);
        assert_eq!(due(jobs(), None, now), vec!["sync"]);
        // After hours of downtime each job runs once.
        let last = local(2026, 11, 28, 22, 0);
        assert_eq!(
            due(jobs(), Some(last), now),
            vec!["sync", "retry", "cleanup"]
        );
        // Checked this minute already: nothing new.
        assert!(due(jobs(), Some(now), now).is_empty());
    }
}
