//! Statistics over a series' points that alert rules and capacity planning share: the
//! least-squares line (trend and forecast) and the median and MAD (the robust
//! z-score of an anomaly rule).

/// A least-squares line through points `(seconds, value)`: `value = at0 + slope * (t - t0)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Line {
    /// The time the line is anchored at (the first point's).
    pub t0: u64,
    pub at0: f64,
    /// Change per second.
    pub slope: f64,
}

impl Line {
    /// The line's value at `t`.
    pub fn at(&self, t: u64) -> f64 {
        self.at0 + self.slope * (t as f64 - self.t0 as f64)
    }

    /// Seconds from `t` until the line reaches `limit`; None when it never does
    /// (flat or moving away), zero when it already has.
    pub fn seconds_until(&self, t: u64, limit: f64) -> Option<f64> {
        let now = self.at(t);
        if now >= limit {
            return Some(0.0);
        }
        (self.slope > 0.0).then(|| (limit - now) / self.slope)
    }
}

/// The least-squares line through `points`; None with fewer than two distinct times.
pub fn fit(points: &[(u64, f64)]) -> Option<Line> {
    let t0 = points.first()?.0;
    let n = points.len() as f64;
    let (mut sx, mut sy) = (0.0, 0.0);
    for &(t, v) in points {
        sx += (t - t0) as f64;
        sy += v;
    }
    let (mx, my) = (sx / n, sy / n);
    let (mut sxx, mut sxy) = (0.0, 0.0);
    for &(t, v) in points {
        let dx = (t - t0) as f64 - mx;
        sxx += dx * dx;
        sxy += dx * (v - my);
    }
    if sxx <= 0.0 {
        return None;
    }
    let slope = sxy / sxx;
    Some(Line {
        t0,
        at0: my - slope * mx,
        slope,
    })
}

/// The median of `v` (None when empty).
pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

/// The robust z-score of `x` against `baseline`: its distance from the baseline's
/// median in units of 1.4826 x MAD (the standard deviation, for normal noise). The
/// unit is at least 5 % of the median's size (and 0.001), so that a series that was
/// perfectly flat does not call every wobble an anomaly. None with fewer than
/// `min_points` in the baseline.
pub fn robust_z(baseline: &[f64], x: f64, min_points: usize) -> Option<f64> {
    if baseline.len() < min_points.max(1) {
        return None;
    }
    let med = median(baseline)?;
    let dev: Vec<f64> = baseline.iter().map(|v| (v - med).abs()).collect();
    let mad = median(&dev)?;
    let unit = (1.4826 * mad).max(0.05 * med.abs()).max(1e-3);
    Some((x - med) / unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_through_points_on_a_line_is_that_line() {
        let pts: Vec<(u64, f64)> = (0..10)
            .map(|i| (100 + i * 10, 5.0 + 2.0 * i as f64))
            .collect();
        let l = fit(&pts).unwrap();
        assert!((l.slope - 0.2).abs() < 1e-9, "{l:?}");
        assert!((l.at(100) - 5.0).abs() < 1e-9);
        // 5 + 0.2 * (t - 100) = 45 at t = 300; from t = 190 (value 23): 110 s.
        assert!((l.seconds_until(190, 45.0).unwrap() - 110.0).abs() < 1e-6);
        assert_eq!(l.seconds_until(190, 1.0), Some(0.0));
    }

    #[test]
    fn a_flat_or_falling_series_never_fills() {
        let flat: Vec<(u64, f64)> = (0..5).map(|i| (i, 3.0)).collect();
        assert_eq!(fit(&flat).unwrap().seconds_until(4, 10.0), None);
        let falling: Vec<(u64, f64)> = (0..5).map(|i| (i, 10.0 - i as f64)).collect();
        assert_eq!(fit(&falling).unwrap().seconds_until(4, 20.0), None);
        assert_eq!(fit(&[(1, 1.0)]), None);
        assert_eq!(fit(&[(1, 1.0), (1, 2.0)]), None);
    }

    #[test]
    fn a_spike_scores_high_and_noise_does_not() {
        let noise: Vec<f64> = (0..40)
            .map(|i| 10.0 + ((i * 7919) % 11) as f64 / 10.0 - 0.5)
            .collect();
        for &x in &noise {
            assert!(robust_z(&noise, x, 10).unwrap().abs() < 4.0, "{x}");
        }
        assert!(robust_z(&noise, 60.0, 10).unwrap() > 20.0);
        assert_eq!(robust_z(&noise[..3], 60.0, 10), None);
        // A flat series: a 1 % wobble is no anomaly, a jump is.
        let flat = vec![2.0; 20];
        assert!(robust_z(&flat, 2.02, 10).unwrap() < 1.0);
        assert!(robust_z(&flat, 4.0, 10).unwrap() > 6.0);
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }
}
