//! The console contract: `NOVA-BOOTED` first, then only `NOVA-<KEY> k=v ...` lines,
//! errors reported as lines, and host-mode flags refused when malformed.

mod support;

use nova_guest_abi::line;
use std::time::Duration;
use support::{Agent, SECS};

const KEYS: [&str; 11] = [
    line::MEM,
    line::CPU,
    line::CPUS,
    line::TICK,
    line::DIRTY,
    line::DISK,
    line::NET,
    line::POWEROFF,
    line::RESET,
    line::ERROR,
    line::BOOTED,
];

/// A line is `NOVA-<KEY>` then space-separated `k=v` words (TICK: one number).
fn well_formed(l: &str) -> bool {
    let mut words = l.split(' ');
    let key = words.next().unwrap_or("");
    if !KEYS.contains(&key) || key == line::BOOTED {
        return false;
    }
    if key == line::TICK {
        return words.next().is_some_and(|w| w.parse::<u64>().is_ok()) && words.next().is_none();
    }
    words.all(|w| matches!(w.split_once('='), Some((k, v)) if !k.is_empty() && !v.is_empty()))
}

#[test]
fn booted_comes_first_and_every_later_line_is_a_nova_line() {
    let mut agent = Agent::start(&[
        "--cmdline",
        "console=ttyS0 nova.workload=counter,dirty:1:max,bogus",
    ]);
    let (_, first) = agent.next_line(SECS(10)).expect("a first line");
    assert_eq!(first, line::BOOTED);
    // Until both workloads spoke: by count alone, a counter thread kept off the CPU for
    // a few ms on a loaded machine can let the dirtier fill the first hundreds of lines.
    let (mut tick, mut dirty) = (false, false);
    let deadline = std::time::Instant::now() + SECS(10);
    while !(tick && dirty) {
        assert!(
            std::time::Instant::now() < deadline,
            "tick seen: {tick}, dirty seen: {dirty}, after 10 s"
        );
        let (_, l) = agent.next_line(SECS(10)).expect("more lines");
        assert!(well_formed(&l), "malformed line {l:?}");
        tick |= l.starts_with(line::TICK);
        dirty |= l.starts_with(line::DIRTY);
    }
}

#[test]
fn an_unknown_workload_is_reported_and_the_others_still_run() {
    let mut agent = Agent::start(&["--cmdline", "nova.workload=bogus,counter"]);
    let (_, err) = agent.wait_for(line::ERROR, SECS(10));
    assert_eq!(err, "NOVA-ERROR what=unknown_workload name=bogus");
    agent.wait_for(line::TICK, SECS(10));
}

#[test]
fn malformed_arguments_are_reported() {
    let mut agent = Agent::start(&[
        "--cmdline",
        "nova.workload=dirty:0:max,dirty:4:fast nova.ip=1.2.3",
    ]);
    let errors: Vec<String> = (0..3)
        .map(|_| agent.wait_for(line::ERROR, SECS(10)).1)
        .collect();
    assert_eq!(
        errors,
        [
            "NOVA-ERROR what=bad_ip value=1.2.3",
            "NOVA-ERROR what=bad_dirty_args name=dirty:0:max",
            "NOVA-ERROR what=bad_dirty_args name=dirty:4:fast",
        ]
    );
}

#[test]
fn idle_is_silent_and_stays_up() {
    let mut agent = Agent::start(&["--cmdline", "console=ttyS0"]);
    assert_eq!(agent.next_line(SECS(10)).expect("booted").1, line::BOOTED);
    assert!(
        agent.next_line(Duration::from_millis(300)).is_none(),
        "idle printed {:?}",
        agent.seen
    );
}

#[test]
fn an_unknown_flag_exits_with_usage_before_booting() {
    let mut agent = Agent::start(&["--frobnicate"]);
    assert_eq!(agent.wait_exit(SECS(10)).code(), Some(2));
    assert!(agent.rest(SECS(10)).is_empty());
}

#[test]
fn the_cmdline_flag_chooses_the_workloads() {
    let mut with = Agent::start(&["--cmdline", "nova.workload=counter"]);
    with.wait_for(line::TICK, SECS(10));
    let mut without = Agent::start(&[]);
    assert_eq!(without.next_line(SECS(10)).expect("booted").1, line::BOOTED);
    assert!(without.next_line(Duration::from_millis(200)).is_none());
}

#[test]
fn poweroff_alone_ends_at_once_and_reset_too() {
    for (w, l) in [("poweroff", line::POWEROFF), ("reset", line::RESET)] {
        let mut agent = Agent::start(&["--cmdline", &format!("nova.workload={w}")]);
        assert_eq!(agent.rest(SECS(10)), [line::BOOTED, l]);
        assert!(agent.wait_exit(SECS(10)).success());
    }
}

#[test]
fn poweroff_waits_for_the_first_pass_of_dirty_and_disk() {
    let disk = support::TempFile::new("poweroff");
    std::fs::write(disk.path(), vec![0u8; 1 << 20]).unwrap();
    let mut agent = Agent::start(&[
        "--cmdline",
        "nova.workload=poweroff,dirty:4:16,disk,counter",
        "--disk",
        disk.arg(),
    ]);
    let lines = agent.rest(SECS(20));
    let at = |key: &str| lines.iter().position(|l| l.starts_with(key));
    let off = at(line::POWEROFF).expect("NOVA-POWEROFF");
    assert_eq!(off, lines.len() - 1, "POWEROFF is the last line");
    assert!(at(line::DIRTY).expect("a dirty pass") < off);
    assert!(at(line::DISK).expect("a disk pass") < off);
    assert!(agent.wait_exit(SECS(10)).success());
}
