//! Runs the workloads the command line names, together (a thread each), and holds
//! `poweroff`/`reset` back until the finite workloads (`disk`, `dirty`) made a pass.

pub mod counter;
pub mod dirty;
pub mod disk;
pub mod net;

use crate::cmdline::{Plan, Workload};
use crate::{console, init};
use nova_guest_abi::line;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// Where the workloads run: as the guest's pid 1, or as an ordinary process on a host.
#[derive(Debug, Clone)]
pub struct Env {
    /// Pid 1 in a guest: devices are the guest's own, poweroff is real.
    pub pid1: bool,
    /// The disk `disk` works on (`/dev/vda` in a guest).
    pub disk: Option<PathBuf>,
    /// The UDP echo port of `net`.
    pub udp_port: u16,
    /// Whether `net` may look at (host) or configure (guest) the first interface.
    pub net_config: bool,
}

/// Counts the finite workloads that have not finished their first pass yet.
struct FirstPasses {
    pending: Mutex<usize>,
    done: Condvar,
}

/// A finite workload's promise to report its first pass; dropping it (the workload
/// failed or ended) counts as done, so poweroff is never held back forever.
pub struct FirstPass(Option<Arc<FirstPasses>>);

impl FirstPass {
    /// Marks the first pass done (later calls do nothing).
    pub fn passed(&mut self) {
        if let Some(g) = self.0.take() {
            let mut n = g.pending.lock().unwrap_or_else(|e| e.into_inner());
            *n -= 1;
            g.done.notify_all();
        }
    }
}

impl Drop for FirstPass {
    fn drop(&mut self) {
        self.passed();
    }
}

impl FirstPasses {
    fn token(self: &Arc<Self>) -> FirstPass {
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        FirstPass(Some(self.clone()))
    }

    fn wait(&self) {
        let mut n = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.done.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Starts every planned workload and never returns (poweroff/reset end the machine,
/// or in host mode the process).
pub fn run(plan: &Plan, env: &Env) -> ! {
    let gate = Arc::new(FirstPasses {
        pending: Mutex::new(0),
        done: Condvar::new(),
    });
    for &w in &plan.workloads {
        let env = env.clone();
        let ip = plan.ip;
        let spawned = match w {
            Workload::Counter => spawn("counter", counter::run),
            Workload::Dirty { mib, rate_mib_s } => {
                let token = gate.token();
                spawn("dirty", move || dirty::run(mib, rate_mib_s, token))
            }
            Workload::Disk => {
                let token = gate.token();
                spawn("disk", move || disk::run(&env, token))
            }
            Workload::Net => spawn("net", move || net::run(&env, ip)),
            Workload::Poweroff | Workload::Reset => Ok(()),
        };
        if let Err(e) = spawned {
            console::error(
                "spawn",
                &format!(" errno={}", e.raw_os_error().unwrap_or(0)),
            );
        }
    }
    let (ends, end_line): (fn() -> !, &str) = if plan.has(Workload::Poweroff) {
        (init::power_off, line::POWEROFF)
    } else if plan.has(Workload::Reset) {
        (init::reset, line::RESET)
    } else {
        init::sleep_forever()
    };
    gate.wait();
    console::last_line(end_line);
    if env.pid1 {
        ends()
    }
    std::process::exit(0)
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map(drop)
}
