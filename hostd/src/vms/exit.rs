//! What a VMM's exit means: the VM's new state, the reason people read in
//! `exit.reason`, and whether (and after what pause) its restart policy starts it
//! again. Pure decisions, recorded by [`record`].

use std::time::Duration;

use nova_hostd_api::{ExitInfo, RestartPolicy, VmState};

use crate::vms::record::{now_ms, Vm};
use crate::vms::tail::tail_lines;

/// How a VMM ended, as far as hostd can know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    /// hostd was its parent and reaped it (false after a reattach: then only its log
    /// tells).
    pub reaped: bool,
}

/// The state and reason of an exit.
pub fn judge(end: Ending, stop_requested: bool, log_tail: &[String]) -> (VmState, String) {
    const UNKNOWN: &str = "exit code unknown: hostd was restarted since it started";
    let logged = |needle: &str| log_tail.iter().any(|l| l.contains(needle));
    if stop_requested {
        return (VmState::Stopped, "stopped by request".into());
    }
    if end.reaped {
        return match (end.code, end.signal) {
            (Some(0), _) => (VmState::Stopped, "the guest powered off or reset".into()),
            (Some(c), _) => (VmState::Crashed, format!("nova-vmm exited with code {c}")),
            (None, Some(s)) => (
                VmState::Crashed,
                format!("nova-vmm was killed by signal {s}"),
            ),
            _ => (VmState::Crashed, "nova-vmm ended, status unknown".into()),
        };
    }
    if logged("VM failed") {
        (
            VmState::Crashed,
            format!("nova-vmm failed (its log says VM failed; {UNKNOWN})"),
        )
    } else if logged("VM stopped") {
        (
            VmState::Stopped,
            format!("the guest stopped (from the VMM's log; {UNKNOWN})"),
        )
    } else {
        (VmState::Crashed, format!("nova-vmm is gone ({UNKNOWN})"))
    }
}

/// Whether the policy restarts a VM that ended in `state`.
pub fn wants_restart(policy: RestartPolicy, state: VmState) -> bool {
    match policy {
        RestartPolicy::Never => false,
        RestartPolicy::OnFailure => state == VmState::Crashed,
        RestartPolicy::Always => true,
    }
}

/// The pause before restart number `restarts + 1`: 0.25 s doubling, at most 30 s.
pub fn backoff(restarts: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1 << restarts.min(7))).min(Duration::from_secs(30))
}

/// Records the exit of the VMM of generation `gen` (a stale generation is ignored)
/// and persists it. Returns the pause before a restart when the policy wants one.
pub fn record(vm: &Vm, gen: u64, end: Ending) -> Option<Duration> {
    let console_tail = tail_lines(&vm.console_log(), 20).0;
    let log_tail = tail_lines(&vm.vmm_log(), 20).0;
    let restart = {
        let mut g = vm.lock();
        if g.rt.generation != gen {
            return None;
        }
        g.rt.pid = None;
        g.rt.started = None;
        g.rt.vmm = None;
        let stop_requested = g.rt.stop_requested;
        let (state, reason) = judge(end, stop_requested, &log_tail);
        tracing::info!(vm = vm.id, code = ?end.code, signal = ?end.signal, reason, "VMM exited");
        g.rec.exit = Some(ExitInfo {
            code: end.code,
            signal: end.signal,
            reason,
            console_tail,
            log_tail,
            at_ms: now_ms(),
        });
        // A migration decides a migrating VM's state, not its VMM's exit.
        let migrating = matches!(g.rec.state, VmState::MigratingOut | VmState::MigratingIn);
        if !migrating {
            g.rec.state = state;
        }
        (!stop_requested && !migrating && wants_restart(g.rec.spec.restart, state))
            .then(|| backoff(g.rec.restarts))
    };
    let _ = vm.persist();
    let _ = std::fs::remove_file(vm.pid_file());
    vm.exited.notify_waiters();
    restart
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAPED: Ending = Ending {
        code: Some(0),
        signal: None,
        reaped: true,
    };

    #[test]
    fn a_clean_exit_is_a_stop_and_a_signal_is_a_crash() {
        assert_eq!(judge(REAPED, false, &[]).0, VmState::Stopped);
        let (s, why) = judge(
            Ending {
                code: None,
                signal: Some(9),
                ..REAPED
            },
            false,
            &[],
        );
        assert_eq!(
            (s, why.as_str()),
            (VmState::Crashed, "nova-vmm was killed by signal 9")
        );
        let (s, why) = judge(
            Ending {
                code: Some(2),
                ..REAPED
            },
            false,
            &[],
        );
        assert_eq!((s, why.contains("code 2")), (VmState::Crashed, true));
    }

    #[test]
    fn a_requested_stop_is_never_a_crash() {
        let killed = Ending {
            code: None,
            signal: Some(9),
            reaped: true,
        };
        assert_eq!(judge(killed, true, &[]).0, VmState::Stopped);
    }

    #[test]
    fn after_a_reattach_the_vmm_log_tells_how_it_ended() {
        let gone = Ending {
            code: None,
            signal: None,
            reaped: false,
        };
        let log = |l: &str| vec![l.to_string()];
        assert_eq!(judge(gone, false, &log("x VM stopped")).0, VmState::Stopped);
        assert_eq!(
            judge(gone, false, &log("x VM failed: y")).0,
            VmState::Crashed
        );
        let (s, why) = judge(gone, false, &[]);
        assert_eq!(s, VmState::Crashed);
        assert!(why.contains("exit code unknown"), "{why}");
    }

    #[test]
    fn policies_restart_what_they_name_with_a_growing_pause() {
        use RestartPolicy::*;
        assert!(!wants_restart(Never, VmState::Crashed));
        assert!(wants_restart(OnFailure, VmState::Crashed));
        assert!(!wants_restart(OnFailure, VmState::Stopped));
        assert!(wants_restart(Always, VmState::Stopped));
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(100), Duration::from_secs(30));
    }

    #[test]
    fn an_exit_of_a_stale_generation_changes_nothing() {
        let dir = std::env::temp_dir().join(format!("hostd-exit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut rec = crate::vms::record::test_record(VmState::Running);
        rec.spec.restart = RestartPolicy::Always;
        let vm = Vm::new("x".into(), dir.clone(), rec);
        vm.lock().rt.generation = 2;
        vm.lock().rt.pid = Some(1234);
        assert_eq!(record(&vm, 1, REAPED), None);
        assert_eq!(vm.lock().rt.pid, Some(1234));
        assert_eq!(record(&vm, 2, REAPED), Some(Duration::from_millis(250)));
        assert_eq!(vm.lock().rt.pid, None);
        assert_eq!(vm.state(), VmState::Stopped);
        assert!(vm.lock().rec.exit.is_some());
        // A migrating VM keeps its state: the migration decides.
        vm.set_state(VmState::MigratingOut);
        vm.lock().rt.generation = 3;
        assert_eq!(record(&vm, 3, REAPED), None);
        assert_eq!(vm.state(), VmState::MigratingOut);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
