//! One alert rule's condition on one series: whether it holds now, and the value it
//! holds with (the latest value, the change, the seconds of silence, the z-score,
//! the days left). Pure arithmetic over points the caller read from the history.

use crate::model::RuleKind;
use crate::monitoring::trend;

/// Points an anomaly's baseline needs before it judges anything.
pub const ANOMALY_MIN_POINTS: usize = 10;
/// Points a forecast's line needs.
pub const FORECAST_MIN_POINTS: usize = 5;

/// Seconds of history before `now` a rule of `kind` reads, with scrapes every
/// `interval_s`.
pub fn lookback(kind: &RuleKind, interval_s: u64) -> u64 {
    let fresh = (3 * interval_s).max(5);
    match kind {
        RuleKind::Threshold { .. } => fresh,
        RuleKind::Change { window_s, .. } => window_s + interval_s,
        // Series seen in this span and silent for the window are the absent ones.
        RuleKind::Absent { window_s } => (window_s * 10).clamp(window_s + 3600, 86_400),
        RuleKind::Anomaly { window_s, .. } | RuleKind::Forecast { window_s, .. } => *window_s,
    }
}

/// The history a rule reads: its metric's points for one target, and the latest value
/// of the other metric it names (`ratio_of`, `capacity_of`) for that target.
pub struct Series<'a> {
    /// `(seconds, value)`, oldest first, within [`lookback`] of `now`.
    pub points: &'a [(u64, f64)],
    pub other: Option<f64>,
}

/// The value the condition holds with at `now`, or None when it does not hold.
pub fn holds(kind: &RuleKind, s: &Series, now: u64, interval_s: u64) -> Option<f64> {
    let last = s.points.last().copied();
    match kind {
        RuleKind::Threshold {
            cmp,
            value,
            ratio_of,
        } => {
            let (t, v) = last?;
            if t + lookback(kind, interval_s) < now {
                return None; // stale: absent rules speak for silent series
            }
            let v = match ratio_of {
                Some(_) => {
                    let d = s.other.filter(|d| *d != 0.0)?;
                    v / d
                }
                None => v,
            };
            cmp.holds(v, *value).then_some(v)
        }
        RuleKind::Change {
            cmp,
            value,
            window_s,
        } => {
            let start = now.saturating_sub(*window_s);
            let mut inside = s.points.iter().filter(|p| p.0 >= start);
            let first = inside.next()?.1;
            let (_, v) = last?;
            let d = v - first;
            cmp.holds(d, *value).then_some(d)
        }
        RuleKind::Absent { window_s } => {
            let (t, _) = last?;
            let silent = now.saturating_sub(t);
            (silent > *window_s).then_some(silent as f64)
        }
        RuleKind::Anomaly { z, .. } => {
            let (_, x) = last?;
            let baseline: Vec<f64> = s.points[..s.points.len() - 1].iter().map(|p| p.1).collect();
            let score = trend::robust_z(&baseline, x, ANOMALY_MIN_POINTS)?;
            (score.abs() > *z).then_some(score)
        }
        RuleKind::Forecast { days, .. } => {
            if s.points.len() < FORECAST_MIN_POINTS {
                return None;
            }
            let (_, v) = last?;
            let cap = s.other?;
            let line = trend::fit(s.points)?;
            // From the latest value on, at the fitted rate.
            let left = if v >= cap {
                0.0
            } else if line.slope > 0.0 {
                (cap - v) / line.slope
            } else {
                return None;
            };
            let d = left / 86_400.0;
            (d < *days).then_some(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cmp;

    fn at(points: &[(u64, f64)], other: Option<f64>) -> Series<'_> {
        Series { points, other }
    }

    #[test]
    fn a_threshold_holds_on_a_fresh_value_beyond_it_and_ratios_divide() {
        let k = RuleKind::Threshold {
            cmp: Cmp::Below,
            value: 0.5,
            ratio_of: None,
        };
        assert_eq!(holds(&k, &at(&[(100, 0.0)], None), 101, 1), Some(0.0));
        assert_eq!(holds(&k, &at(&[(100, 1.0)], None), 101, 1), None);
        // A stale value is no longer evidence.
        assert_eq!(holds(&k, &at(&[(100, 0.0)], None), 200, 1), None);
        let r = RuleKind::Threshold {
            cmp: Cmp::Above,
            value: 0.9,
            ratio_of: Some("host.mem_total_bytes".into()),
        };
        assert_eq!(
            holds(&r, &at(&[(100, 95.0)], Some(100.0)), 100, 1),
            Some(0.95)
        );
        assert_eq!(holds(&r, &at(&[(100, 85.0)], Some(100.0)), 100, 1), None);
        assert_eq!(holds(&r, &at(&[(100, 95.0)], None), 100, 1), None);
    }

    #[test]
    fn a_change_counts_from_the_first_point_in_its_window() {
        let k = RuleKind::Change {
            cmp: Cmp::Above,
            value: 2.0,
            window_s: 60,
        };
        let pts = [(0, 0.0), (50, 1.0), (80, 2.0), (100, 4.0)];
        assert_eq!(holds(&k, &at(&pts, None), 100, 1), Some(3.0));
        // Later the window starts at (80, 2.0): a change of 2 is not above 2.
        assert_eq!(holds(&k, &at(&pts, None), 130, 1), None);
    }

    #[test]
    fn absence_is_silence_longer_than_the_window() {
        let k = RuleKind::Absent { window_s: 30 };
        assert_eq!(holds(&k, &at(&[(100, 1.0)], None), 120, 1), None);
        assert_eq!(holds(&k, &at(&[(100, 1.0)], None), 140, 1), Some(40.0));
    }

    #[test]
    fn an_anomaly_needs_a_baseline_and_a_jump() {
        let k = RuleKind::Anomaly {
            z: 6.0,
            window_s: 60,
        };
        let mut pts: Vec<(u64, f64)> = (0..30)
            .map(|i| (i, 0.02 + (i % 5) as f64 * 0.002))
            .collect();
        assert_eq!(holds(&k, &at(&pts, None), 30, 1), None);
        pts.push((30, 1.0));
        assert!(holds(&k, &at(&pts, None), 30, 1).unwrap() > 6.0);
        assert_eq!(
            holds(&k, &at(&pts[25..], None), 30, 1),
            None,
            "short baseline"
        );
    }

    #[test]
    fn a_forecast_counts_days_left_at_the_fitted_rate() {
        let k = RuleKind::Forecast {
            capacity_of: "host.disk_total_bytes".into(),
            days: 7.0,
            window_s: 3600,
        };
        // 1000 bytes a second into 1e9: from 5e8, 5e5 s = 5.787 days.
        let pts: Vec<(u64, f64)> = (0..10)
            .map(|i| (i * 10, 5e8 - 9e4 + i as f64 * 1e4))
            .collect();
        let d = holds(&k, &at(&pts, Some(1e9)), 90, 1).unwrap();
        assert!((d - 5e5 / 86_400.0).abs() < 1e-6, "{d}");
        assert_eq!(holds(&k, &at(&pts, Some(1e10)), 90, 1), None, "months left");
        assert_eq!(holds(&k, &at(&pts[..3], Some(1e9)), 90, 1), None);
    }
}
