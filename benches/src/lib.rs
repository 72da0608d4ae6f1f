//! What every benchmark shares: timing a process to a console line, reading its
//! memory, summarising runs, and writing `docs/benchmarks/<name>.{json,md}`.

pub mod qmp;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
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
    pub fn of(values: &[f64]) -> Summary {
        let mut v = values.to_vec();
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

/// A child whose stdout is read line by line until a marker.
pub struct Timed {
    pub child: Child,
    pub reader: BufReader<std::process::ChildStdout>,
    pub started: Instant,
}

/// Spawns `cmd` and returns once a stdout line starts with `marker`, with the time from
/// just before spawn to that line's arrival.
pub fn spawn_until(
    mut cmd: Command,
    marker: &str,
    timeout: Duration,
) -> anyhow::Result<(Timed, Duration)> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let started = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            let _ = child.kill();
            bail!("{cmd:?} exited before printing {marker}");
        }
        if line.starts_with(marker) {
            let t = started.elapsed();
            return Ok((
                Timed {
                    child,
                    reader,
                    started,
                },
                t,
            ));
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            bail!("{cmd:?}: no {marker} within {timeout:?}");
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

/// The host's TSC frequency in kHz, for guests under QEMU.
pub fn host_tsc_khz() -> u64 {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpuinfo
        .lines()
        .find(|l| l.starts_with("cpu MHz"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|mhz| (mhz * 1000.0) as u64)
        .unwrap_or(2_000_000)
}

/// QEMU microvm with KVM, the peer every benchmark compares with: `-kernel` boot of
/// the same guest, guest RAM in a memfd like nova-vmm's, serial on stdout.
pub fn qemu_microvm(guest: &Path, mem_mib: u64, vcpus: u8, append: &str, ram: QemuRam) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-M", "microvm,x-option-roms=off,rtc=off"]);
    if ram == QemuRam::Memfd {
        c.args(["-machine", "memory-backend=mem"]).args([
            "-object",
            &format!("memory-backend-memfd,id=mem,size={mem_mib}M"),
        ]);
    }
    c.args(["-enable-kvm", "-cpu", "host,-arch-capabilities"])
        .args(["-m", &format!("{mem_mib}M"), "-smp", &vcpus.to_string()])
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
        ])
        .args(["-global", "virtio-mmio.force-legacy=false"])
        .arg("-kernel")
        .arg(guest)
        .args(["-append", append]);
    c
}

/// How QEMU backs guest RAM.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QemuRam {
    /// A memfd, like nova-vmm's: memory figures compare like with like.
    Memfd,
    /// QEMU's default anonymous RAM: its fastest migration (on a memfd it reads every
    /// never-touched page through the mapping, which allocates it: 1 GiB takes seconds).
    Anonymous,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_runs() {
        assert_eq!(Summary::of(&[3.0, 1.0, 2.0]).median, 2.0);
        let s = Summary::of(&[4.0, 1.0, 3.0, 2.0]);
        assert_eq!((s.median, s.min, s.max, s.runs), (2.5, 1.0, 4.0, 4));
    }

    fn line(t0: Instant, ms: u64, text: &str, complete: bool) -> Stamped {
        Stamped {
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

/// A console line and when it arrived.
#[derive(Clone, Debug)]
pub struct Stamped {
    pub at: Instant,
    pub text: String,
    /// False for a last line cut off without its newline.
    pub complete: bool,
}

/// Makes the calling reader thread real-time (SCHED_FIFO, lowest priority): a line is
/// stamped when it arrives, not when the scheduler next gets round to the reader. On
/// 2 cores the destination's vCPU spins on one, and a starved reader stamped five
/// lines at once, inflating the measured pause for whichever VMM it hit. The reader
/// blocks in read() between lines, so it takes no CPU from the VMMs. Without the
/// privilege (not root) it stays an ordinary thread.
fn stamp_promptly() {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: sets this thread's own policy, with a valid parameter struct.
    let r = unsafe { libc::pthread_setschedparam(libc::pthread_self(), libc::SCHED_FIFO, &param) };
    if r != 0 {
        eprintln!(
            "console reader stays SCHED_OTHER: {}",
            std::io::Error::from_raw_os_error(r)
        );
    }
}

/// A child's stdout lines with arrival times, read on a thread of its own.
pub struct LineReader {
    lines: std::sync::Arc<std::sync::Mutex<Vec<Stamped>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LineReader {
    pub fn start(stdout: std::process::ChildStdout) -> LineReader {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let l = lines.clone();
        let thread = std::thread::spawn(move || {
            stamp_promptly();
            let mut r = BufReader::new(stdout);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let complete = buf.ends_with(b"\n");
                        // Only the line end goes: a cut line's trailing space is content.
                        let end = buf.len() - usize::from(complete);
                        let text = String::from_utf8_lossy(&buf[..end]).into_owned();
                        l.lock().unwrap().push(Stamped {
                            at: Instant::now(),
                            text,
                            complete,
                        });
                    }
                }
            }
        });
        LineReader {
            lines,
            thread: Some(thread),
        }
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<Stamped> {
        self.lines.lock().unwrap().clone()
    }

    /// Every line, once the child has closed its stdout (a last line without its
    /// newline included).
    pub fn finish(&mut self) -> Vec<Stamped> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.lines()
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
pub fn guest_view(src: &[Stamped], dst: &[Stamped], from: Instant) -> GuestView {
    // A line the switch cut in two: the source printed its start, the destination the rest.
    let mut src = src.to_vec();
    let mut dst = dst;
    let mut joined = false;
    if let (Some(last), Some(first)) = (src.last_mut(), dst.first()) {
        if !last.complete {
            last.text.push_str(&first.text);
            last.at = first.at;
            dst = &dst[1..];
            joined = true;
        }
    }
    let tick = |l: &Stamped| {
        l.text
            .strip_prefix("NOVA-TICK ")
            .and_then(|n| n.parse::<u64>().ok())
    };
    // Guest order is the source's lines, then the destination's: the source stops
    // before the destination starts. (Sorting by arrival could swap two lines whose
    // reader threads ran late.)
    let ticks = |lines: &[Stamped], from_dst: bool| -> Vec<(Instant, u64, bool)> {
        lines
            .iter()
            .filter(|l| l.at >= from)
            .filter_map(|l| tick(l).map(|n| (l.at, n, from_dst)))
            .collect()
    };
    let mut all = ticks(&src, false);
    if joined && src.last().and_then(tick).is_some() {
        // The joined line arrived with the destination's output.
        if let Some(last) = all.last_mut() {
            last.2 = true;
        }
    }
    all.extend(ticks(dst, true));
    let ms = |a: Instant, b: Instant| b.saturating_duration_since(a).as_secs_f64() * 1000.0;
    let mut view = GuestView {
        pause_ms: f64::NAN,
        worst_stall_ms: 0.0,
        continuous: true,
    };
    for w in all.windows(2) {
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
    use super::{stamp_promptly, StealSample};

    #[test]
    fn console_readers_run_real_time_when_root() {
        let policy = std::thread::spawn(|| {
            stamp_promptly();
            // SAFETY: queries the calling thread's own policy.
            unsafe { libc::sched_getscheduler(0) }
        })
        .join()
        .unwrap();
        // SAFETY: no arguments, no memory.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(policy, libc::SCHED_FIFO);
        } else {
            assert_eq!(policy, libc::SCHED_OTHER);
        }
    }

    #[test]
    fn steal_is_a_share_of_the_cpu_time_since_the_sample() {
        let sample = StealSample::now();
        assert!(sample.total > 0, "/proc/stat has a cpu line");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let percent = sample.percent_since();
        assert!((0.0..=100.0).contains(&percent), "{percent}");
    }
}
