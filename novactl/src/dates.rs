//! Times as people read them: a date in RFC 3339 in the local time zone (`TZ`, else
//! the system's), or how long ago ("5m ago"). The API's milliseconds since the epoch
//! stay as they are in json and yaml.

use jiff::tz::TimeZone;
use jiff::Timestamp;

/// `ms` (since the epoch) as RFC 3339 in the local time zone, to the second.
pub fn date(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    match Timestamp::from_millisecond(ms as i64) {
        Ok(t) => t
            .to_zoned_datetime(TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S%:z")
            .to_string(),
        Err(_) => ms.to_string(),
    }
}

/// How long before now `ms` was: "5m ago" (or "in 5s" for a clock ahead of ours).
pub fn ago(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    ago_from(ms, Timestamp::now().as_millisecond().max(0) as u64)
}

/// [`ago`] seen from `now_ms`.
pub fn ago_from(ms: u64, now_ms: u64) -> String {
    if ms > now_ms {
        return format!("in {}", span((ms - now_ms) / 1000));
    }
    let s = (now_ms - ms) / 1000;
    if s == 0 {
        "just now".into()
    } else {
        format!("{} ago", span(s))
    }
}

/// A date with how long ago it was: "2025-05-01T10:00:00+02:00 (5m ago)".
pub fn date_and_ago(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    format!("{} ({})", date(ms), ago(ms))
}

/// `s` seconds in the largest two units, kubectl style: 45s, 5m10s, 3h5m, 2d4h.
fn span(s: u64) -> String {
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) if s.is_multiple_of(60) || m >= 10 => format!("{m}m"),
        (0, 0, _) => format!("{m}m{}s", s % 60),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h{m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d{h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let now = 10_000_000_000;
        assert_eq!(ago_from(now, now), "just now");
        assert_eq!(ago_from(now - 45_000, now), "45s ago");
        assert_eq!(ago_from(now - 310_000, now), "5m10s ago");
        assert_eq!(ago_from(now - 900_000, now), "15m ago");
        assert_eq!(ago_from(now - 3_900_000, now), "1h5m ago");
        assert_eq!(ago_from(now - 2 * 86_400_000, now), "2d ago");
        assert_eq!(ago_from(now + 5_000, now), "in 5s");
    }

    #[test]
    fn a_date_is_rfc3339_in_the_local_zone() {
        // 2023-11-14T22:13:20Z; TZ decides the zone, so only the shape is fixed here.
        let d = date(1_700_000_000_000);
        assert_eq!(d.len(), "2023-11-14T22:13:20+00:00".len(), "{d}");
        assert_eq!(&d[4..5], "-");
        assert_eq!(&d[10..11], "T");
        assert_eq!(date(0), "-");
    }
}
