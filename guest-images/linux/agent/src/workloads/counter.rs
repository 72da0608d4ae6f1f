//! `counter`: `NOVA-TICK <seq>` every millisecond on CLOCK_MONOTONIC, so a pause of the
//! VM shows on the host as a gap in the lines' arrival, never as a burst after it.

use crate::console;
use nova_guest_abi::line;
use std::time::{Duration, Instant};

const PERIOD: Duration = Duration::from_millis(1);

/// Ticks forever.
pub fn run() {
    let mut deadline = Instant::now();
    let mut seq: u64 = 0;
    loop {
        let now = Instant::now();
        if now < deadline {
            std::thread::sleep(deadline - now);
            continue;
        }
        console::line(&format!("{} {seq}", line::TICK));
        seq += 1;
        deadline += PERIOD;
        let now = Instant::now();
        if now > deadline + PERIOD {
            // Late by more than a period (paused, or the console blocked): restart
            // the schedule from now instead of catching up.
            deadline = now + PERIOD;
        }
    }
}
