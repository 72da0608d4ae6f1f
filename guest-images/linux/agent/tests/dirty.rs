//! `dirty`: passes over the buffer verify the previous pass (errors=0), cover every
//! page of the requested size, and honour the rate limit.

mod support;

use nova_guest_abi::line;
use std::time::{Duration, Instant};
use support::{num, Agent, SECS};

/// Arrival times of the first `n` dirty passes, checking each line on the way.
fn passes(agent: &mut Agent, n: u64, pages: u64) -> Vec<Instant> {
    (1..=n)
        .map(|pass| {
            let (t, l) = agent.wait_for(line::DIRTY, SECS(20));
            assert_eq!(num(&l, "pass"), pass, "{l}");
            assert_eq!(num(&l, "pages"), pages, "{l}");
            assert_eq!(num(&l, "errors"), 0, "{l}");
            t
        })
        .collect()
}

fn median_gap(times: &[Instant]) -> Duration {
    let mut gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort();
    gaps[gaps.len() / 2]
}

#[test]
fn passes_cover_every_page_without_errors() {
    let mut agent = Agent::start(&["--cmdline", "nova.workload=dirty:3:max"]);
    passes(&mut agent, 20, 3 * 256);
}

#[test]
fn the_rate_limit_slows_passes_down() {
    // 8 MiB at 16 MiB/s: about 0.5 s a pass; unlimited: milliseconds.
    let mut limited = Agent::start(&["--cmdline", "nova.workload=dirty:8:16"]);
    let mut max = Agent::start(&["--cmdline", "nova.workload=dirty:8:max"]);
    let limited_gap = median_gap(&passes(&mut limited, 4, 2048));
    let max_gap = median_gap(&passes(&mut max, 9, 2048));
    assert!(
        limited_gap >= Duration::from_millis(250) && limited_gap <= Duration::from_secs(5),
        "8 MiB at 16 MiB/s took {limited_gap:?} a pass"
    );
    assert!(
        max_gap * 4 < limited_gap,
        "unlimited {max_gap:?} a pass is not much faster than limited {limited_gap:?}"
    );
}
