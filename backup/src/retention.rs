//! Owns retention: which backups to keep given their times (keep last N, plus the newest
//! backup of each of the last N hours, days and ISO weeks, in UTC). A pure function.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// How many backups to keep in each class; a backup kept by any class is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// The newest N backups.
    pub keep_last: u32,
    /// The newest backup of each of the N most recent hours that have one.
    pub keep_hourly: u32,
    /// The newest backup of each of the N most recent days that have one.
    pub keep_daily: u32,
    /// The newest backup of each of the N most recent ISO weeks (Monday start) that have one.
    pub keep_weekly: u32,
}

/// Maps a time (seconds since the epoch) to its hour, day or week number.
type Bucket = fn(u64) -> u64;

/// Returns the indices into `times_unix` (seconds since the epoch) of the backups to keep.
pub fn select_retained(times_unix: &[u64], policy: &RetentionPolicy) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..times_unix.len()).collect();
    // Newest first; ties broken by index so the result is deterministic.
    order.sort_by(|a, b| times_unix[*b].cmp(&times_unix[*a]).then(a.cmp(b)));
    let mut keep: BTreeSet<usize> = order
        .iter()
        .take(policy.keep_last as usize)
        .copied()
        .collect();
    // 1970-01-01 was a Thursday: shifting by 3 days makes buckets start on Monday.
    let buckets: [(u32, Bucket); 3] = [
        (policy.keep_hourly, |t| t / 3600),
        (policy.keep_daily, |t| t / 86_400),
        (policy.keep_weekly, |t| (t / 86_400 + 3) / 7),
    ];
    for (n, bucket) in buckets {
        let mut seen = BTreeSet::new();
        for &i in &order {
            if seen.len() >= n as usize {
                break;
            }
            if seen.insert(bucket(times_unix[i])) {
                keep.insert(i);
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: u64 = 3600;
    const D: u64 = 86_400;
    // Monday 2026-12-07 00:00:00 UTC.
    const MON: u64 = 1_796_601_600;

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let t = [10, 40, 20, 30];
        let p = RetentionPolicy {
            keep_last: 2,
            ..Default::default()
        };
        assert_eq!(select_retained(&t, &p), BTreeSet::from([1, 3]));
    }

    #[test]
    fn hourly_keeps_the_newest_backup_of_each_recent_hour() {
        // Two backups per hour for three hours.
        let t = [
            MON,
            MON + 1800,
            MON + H,
            MON + H + 1800,
            MON + 2 * H,
            MON + 2 * H + 1800,
        ];
        let p = RetentionPolicy {
            keep_hourly: 2,
            ..Default::default()
        };
        assert_eq!(select_retained(&t, &p), BTreeSet::from([3, 5]));
    }

    #[test]
    fn daily_counts_days_that_have_backups_not_calendar_days() {
        let t = [MON, MON + 5 * D, MON + 5 * D + H, MON + 9 * D];
        let p = RetentionPolicy {
            keep_daily: 3,
            ..Default::default()
        };
        assert_eq!(select_retained(&t, &p), BTreeSet::from([0, 2, 3]));
    }

    #[test]
    fn weekly_buckets_start_on_monday() {
        // Sunday 23:00 and Monday 01:00 fall in different ISO weeks.
        let t = [MON - H, MON + H, MON + 2 * H];
        let p = RetentionPolicy {
            keep_weekly: 2,
            ..Default::default()
        };
        assert_eq!(select_retained(&t, &p), BTreeSet::from([0, 2]));
    }

    #[test]
    fn classes_combine_and_empty_policy_keeps_nothing() {
        let t = [MON, MON + D, MON + 8 * D];
        assert!(select_retained(&t, &RetentionPolicy::default()).is_empty());
        let p = RetentionPolicy {
            keep_last: 1,
            keep_weekly: 2,
            ..Default::default()
        };
        assert_eq!(select_retained(&t, &p), BTreeSet::from([1, 2]));
    }
}
