//! `counter`: one `NOVA-TICK` a millisecond, its sequence counting up by exactly one.

mod support;

use nova_guest_abi::line;
use std::time::Duration;
use support::{Agent, SECS};

#[test]
fn ticks_count_up_by_one_about_every_millisecond() {
    let mut agent = Agent::start(&["--cmdline", "nova.workload=counter"]);
    let (t0, first) = agent.wait_for(line::TICK, SECS(10));
    assert_eq!(first, "NOVA-TICK 0");
    let mut last = t0;
    const N: u64 = 500;
    for want in 1..=N {
        let (t, l) = agent.next_line(SECS(10)).expect("another tick");
        assert_eq!(l, format!("{} {want}", line::TICK));
        last = t;
    }
    // 500 ticks at 1 ms: about 0.5 s. Order of magnitude only (loaded CI machines).
    let took = last - t0;
    assert!(
        took >= Duration::from_millis(250),
        "{N} ticks in {took:?}: faster than 1 ms each"
    );
    assert!(
        took <= Duration::from_secs(5),
        "{N} ticks in {took:?}: far slower than 1 ms each"
    );
}
