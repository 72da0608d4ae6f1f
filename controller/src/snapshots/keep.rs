//! Which scheduled snapshots a keep policy keeps: the newest `last`, and the newest
//! of each of the most recent `hourly` hours, `daily` days and `weekly` weeks that
//! have a snapshot (the way restic and Borg forget). Pure, so it is tested alone.

use std::collections::BTreeSet;

use crate::model::KeepPolicy;

const HOUR_MS: u64 = 3_600_000;
const DAY_MS: u64 = 24 * HOUR_MS;
const WEEK_MS: u64 = 7 * DAY_MS;

/// The indices into `times_ms` (creation times, any order) that `keep` keeps. A
/// policy of all zeros keeps everything.
pub fn kept(times_ms: &[u64], keep: &KeepPolicy) -> BTreeSet<usize> {
    let mut order: Vec<usize> = (0..times_ms.len()).collect();
    // Newest first.
    order.sort_by(|&a, &b| times_ms[b].cmp(&times_ms[a]));
    if *keep == KeepPolicy::default() {
        return order.into_iter().collect();
    }
    let mut out: BTreeSet<usize> = order.iter().take(keep.last as usize).copied().collect();
    for (n, bucket) in [
        (keep.hourly, HOUR_MS),
        (keep.daily, DAY_MS),
        // Epoch day 0 was a Thursday: shift so weeks start on Monday.
        (keep.weekly, WEEK_MS),
    ] {
        let mut seen = BTreeSet::new();
        for &i in &order {
            if seen.len() >= n as usize {
                break;
            }
            let b = if bucket == WEEK_MS {
                (times_ms[i] + 3 * DAY_MS) / bucket
            } else {
                times_ms[i] / bucket
            };
            if seen.insert(b) {
                out.insert(i);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(last: u32, hourly: u32, daily: u32, weekly: u32) -> KeepPolicy {
        KeepPolicy {
            last,
            hourly,
            daily,
            weekly,
        }
    }

    #[test]
    fn keep_last_keeps_the_newest_n_whatever_the_order() {
        let t = [50, 10, 40, 20, 30];
        let k = kept(&t, &keep(2, 0, 0, 0));
        assert_eq!(k, BTreeSet::from([0, 2]));
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        assert_eq!(kept(&[1, 2, 3], &KeepPolicy::default()).len(), 3);
    }

    #[test]
    fn hourly_keeps_the_newest_of_each_recent_hour() {
        // Two per hour over four hours: hourly 3 keeps the newest of the newest three hours.
        let t: Vec<u64> = (0..8).map(|i| i / 2 * HOUR_MS + (i % 2) * 60_000).collect();
        let k = kept(&t, &keep(0, 3, 0, 0));
        assert_eq!(k, BTreeSet::from([3, 5, 7]));
    }

    #[test]
    fn rules_add_up_and_daily_and_weekly_reach_further_back() {
        // One a day for 30 days.
        let t: Vec<u64> = (0..30).map(|d| d * DAY_MS + HOUR_MS).collect();
        let k = kept(&t, &keep(1, 0, 3, 2));
        // last: day 29; daily: 29, 28, 27; weekly: the newest of this week and the one before.
        assert!(k.contains(&29) && k.contains(&28) && k.contains(&27));
        assert_eq!(k.len(), 4, "{k:?}");
    }
}
