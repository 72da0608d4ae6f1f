//! What every benchmark shares: reading a process's memory, summarising runs, what a
//! migration looked like from inside the guest, and writing
//! `docs/benchmarks/<name>.{json,md}`. Guests are booted (under nova-vmm or QEMU) and
//! their consoles read with the test harness's launcher (`nova_tests::vmm`), and the
//! VMM is driven with its contract's client, as the tests do; [`jail`] starts it as
//! hostd does.

pub mod jail;
pub mod qmp;

use std::path::Path;
use std::time::Instant;

use nova_tests::migration::joined;
use nova_tests::vmm::ticks;
use nova_tests::Line;
use serde::Serialize;

/// Median, min and max of a set of runs.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Of the values that were measured: a run whose figure could not be taken (NaN)
    /// does not count, rather than sorting last and passing for the worst.
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let n = v.len();
        let median = if n == 0 {
            f64::NAN
        } else if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Summary {
            runs: n,
            median,
            min: *v.first().unwrap_or(&f64::NAN),
            max: *v.last().unwrap_or(&f64::NAN),
        }
    }
}

/// Resident memory of `pid` from /proc: (anonymous + file-backed, shmem) in KiB.
/// Guest RAM of both VMMs is a memfd, so shmem is the guest pages touched and the
/// rest is what the VMM itself uses.
pub fn rss_kib(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((field("RssAnon:") + field("RssFile:"), field("RssShmem:")))
}

/// Writes `name.json` (the data) and `name.md` (a table) under `dir`.
pub fn write_report(
    dir: &Path,
    name: &str,
    json: &impl Serialize,
    markdown: &str,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)? + "\n",
    )?;
    std::fs::write(dir.join(format!("{name}.md")), markdown)?;
    Ok(())
}

/// CPU time the hypervisor under this machine gave to others ("steal", /proc/stat),
/// from when the sample was taken: on a shared cloud host, the reason millisecond
/// timings spread from one run to the next, for every VMM alike.
pub struct StealSample {
    steal: u64,
    total: u64,
}

impl StealSample {
    pub fn now() -> StealSample {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        // cpu user nice system idle iowait irq softirq steal guest guest_nice
        let fields: Vec<u64> = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .map(|l| {
                l.split_whitespace()
                    .skip(1)
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        StealSample {
            steal: fields.get(7).copied().unwrap_or(0),
            total: fields.iter().take(8).sum(),
        }
    }

    /// Percent of all CPU time since this sample that was stolen.
    pub fn percent_since(&self) -> f64 {
        let now = StealSample::now();
        let total = now.total.saturating_sub(self.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * now.steal.saturating_sub(self.steal) as f64 / total as f64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn median_of_even_and_odd_runs() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).median, 2.0);
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.5, 1.0, 4.0, 4));
    }

    fn line(t0: Instant, ms: u64, text: &str, complete: bool) -> Line {
        Line {
            at: t0 + Duration::from_millis(ms),
            text: text.into(),
            complete,
        }
    }

    #[test]
    fn the_pause_spans_the_switch_and_the_worst_stall_may_lie_elsewhere() {
        let t0 = Instant::now();
        let src = [
            line(t0, 1, "NOVA-TICK 1", true),
            line(t0, 9, "NOVA-TICK 2", true),
            line(t0, 10, "NOVA-TI", false),
        ];
        let dst = [
            line(t0, 14, "CK 3", true),
            line(t0, 15, "NOVA-TICK 4", true),
        ];
        let v = guest_view(&src, &dst, t0);
        assert_eq!(
            (v.pause_ms.round(), v.worst_stall_ms.round(), v.continuous),
            (5.0, 8.0, true)
        );
    }

    #[test]
    fn a_repeated_tick_breaks_continuity() {
        let t0 = Instant::now();
        let src = [line(t0, 1, "NOVA-TICK 1", true)];
        let dst = [line(t0, 3, "NOVA-TICK 1", true)];
        let v = guest_view(&src, &dst, t0);
        assert_eq!((v.pause_ms.round(), v.continuous), (2.0, false));
    }
}

/// What the guest saw of a migration, from its `NOVA-TICK` lines (one per ms) on both
/// consoles merged by host arrival time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GuestView {
    /// The gap across the switch: last tick from the source to first from the
    /// destination (a line the switch cut in two counts as the destination's).
    pub pause_ms: f64,
    /// The longest gap between any two ticks from `from` on: the switch, or a stall
    /// the migration caused before it (dirty logging) or after it (post-copy faults).
    pub worst_stall_ms: f64,
    /// The counter went up by exactly one from line to line: nothing lost or repeated.
    pub continuous: bool,
}

/// Reads a migration's effect on the guest from both consoles' lines after `from`.
pub fn guest_view(src: &[Line], dst: &[Line], from: Instant) -> GuestView {
    // Guest order is the source's lines, then the destination's: the source stops
    // before the destination starts. (Sorting by arrival could swap two lines whose
    // reader threads ran late.) A line the switch cut in two is joined, and counts as
    // the destination's: it arrived with the destination's output.
    let all = joined(src, dst);
    let cut = src.last().is_some_and(|l| !l.complete) && !dst.is_empty();
    let from_src = src.len() - usize::from(cut);
    let since =
        |lines: &[Line]| -> Vec<Line> { lines.iter().filter(|l| l.at >= from).cloned().collect() };
    let mut seq: Vec<(Instant, u64, bool)> = ticks(&since(&all[..from_src]))
        .into_iter()
        .map(|(n, at)| (at, n, false))
        .collect();
    seq.extend(
        ticks(&since(&all[from_src..]))
            .into_iter()
            .map(|(n, at)| (at, n, true)),
    );
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    let mut view = GuestView {
        pause_ms: f64::NAN,
        worst_stall_ms: 0.0,
        continuous: true,
    };
    for w in seq.windows(2) {
        view.worst_stall_ms = view.worst_stall_ms.max(ms(w[0].0, w[1].0));
        if w[1].1 != w[0].1 + 1 && view.continuous {
            eprintln!("counter went from {} to {}", w[0].1, w[1].1);
            view.continuous = false;
        }
        if !w[0].2 && w[1].2 {
            view.pause_ms = ms(w[0].0, w[1].0);
        }
    }
    view
}

#[cfg(test)]
mod steal_tests {
    use super::StealSample;

    #[test]
    fn steal_is_a_share_of_the_cpu_time_since_the_sample() {
        let sample = StealSample::now();
        assert!(sample.total > 0, "/proc/stat has a cpu line");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let percent = sample.percent_since();
        assert!((0.0..=100.0).contains(&percent), "{percent}");
    }
}

/// Kills (by pid) every nova-vmm a benchmark started: their command lines name `dir`.
pub fn kill_vmms_under(dir: &Path) {
    let needle = format!("{}/", dir.to_string_lossy());
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let exe_is_vmm = String::from_utf8_lossy(c.split(|&b| b == 0).next().unwrap_or_default())
            .ends_with("nova-vmm");
        if exe_is_vmm && String::from_utf8_lossy(&c).contains(&needle) {
            // SAFETY: kill(2) on a VMM this benchmark started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
