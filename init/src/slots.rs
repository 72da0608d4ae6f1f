//! A/B boots, nova-init's side (hostd writes the inactive slot, `bootenv` is the
//! block's format). At boot: a slot booted off the default one is on trial; its hostd
//! must register with the controller (it writes `/run/nova/registered`) within
//! `nova.trial_secs`, and then the slot becomes the default (`nova_slot`); otherwise
//! nova-init reboots, and GRUB, whose one-time `nova_try` is spent, boots the
//! previous slot. At a reboot hostd asked for (`/run/nova/try-slot`), the slot it
//! wrote is set to boot once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::bootenv::{on_trial, Env};

/// Where GRUB's environment block is on the mounted EFI partition.
pub const GRUBENV: &str = "/boot/EFI/nova/grubenv";

/// The files hostd leaves in nova-init's run directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub grubenv: PathBuf,
    pub registered: PathBuf,
    pub try_slot: PathBuf,
}

impl Paths {
    pub fn new(grubenv: &Path, run_dir: &Path) -> Paths {
        Paths {
            grubenv: grubenv.to_path_buf(),
            registered: run_dir.join("registered"),
            try_slot: run_dir.join("try-slot"),
        }
    }
}

/// What to do about this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Boot {
    /// The default slot: nothing to watch.
    Good,
    /// A new slot booted once: it must register within the deadline.
    Trial { booted: char, previous: char },
    /// No boot loader state (a PXE or ISO boot): nothing to do.
    Unmanaged,
}

/// Reads the block and says what this boot of `slot` is; a leftover `nova_try` (GRUB
/// failed to clear it) is cleared so a failed trial cannot loop.
pub fn classify(paths: &Paths, slot: Option<char>) -> Boot {
    let Some(booted) = slot else {
        return Boot::Unmanaged;
    };
    let mut env = match Env::read(&paths.grubenv) {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!("{e:#}: A/B upgrades are off this boot");
            return Boot::Unmanaged;
        }
    };
    if env.get("nova_try").is_some_and(|t| !t.is_empty()) {
        env.set("nova_try", "");
        if let Err(e) = env.write(&paths.grubenv) {
            tracing::error!("clearing nova_try: {e:#}");
        }
    }
    if on_trial(&env, booted) {
        let previous = env
            .get("nova_slot")
            .and_then(|s| s.chars().next())
            .unwrap_or('a');
        Boot::Trial { booted, previous }
    } else {
        Boot::Good
    }
}

/// Makes `slot` the default boot.
pub fn mark_good(paths: &Paths, slot: char) -> anyhow::Result<()> {
    let mut env = Env::read(&paths.grubenv)?;
    env.set("nova_slot", &slot.to_string());
    env.set("nova_try", "");
    env.write(&paths.grubenv)
}

/// Watches a trial boot (a thread): marks the slot good once hostd registered, or
/// after `deadline` without it sends PID 1 SIGUSR1 (reboot: back to `previous`).
pub fn watch_trial(paths: Paths, booted: char, previous: char, deadline: Duration) {
    tracing::info!(slot = %booted, previous = %previous, deadline_s = deadline.as_secs(), "slot {booted} is on trial: it must register with the controller");
    std::thread::spawn(move || {
        let t = Instant::now();
        loop {
            if paths.registered.exists() {
                match mark_good(&paths, booted) {
                    Ok(()) => {
                        tracing::info!(slot = %booted, "slot {booted} registered: marked good (the default boot now)")
                    }
                    Err(e) => tracing::error!("marking slot {booted} good: {e:#}"),
                }
                return;
            }
            if t.elapsed() >= deadline {
                tracing::error!(slot = %booted, "slot {booted} did not register within {} s: rebooting into slot {previous}", deadline.as_secs());
                // SAFETY: kill(2) on our own pid with a valid signal.
                unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
}

/// At a reboot: when hostd wrote a new slot, boot it once.
pub fn arm_try(paths: &Paths) {
    let Ok(t) = std::fs::read_to_string(&paths.try_slot) else {
        return;
    };
    let slot = t.trim();
    if slot != "a" && slot != "b" {
        tracing::error!("{}: '{slot}' is not a slot", paths.try_slot.display());
        return;
    }
    let r = Env::read(&paths.grubenv).and_then(|mut env| {
        env.set("nova_try", slot);
        env.write(&paths.grubenv)
    });
    match r {
        Ok(()) => tracing::info!(slot, "rebooting into slot {slot} once"),
        Err(e) => tracing::error!("setting nova_try={slot}: {e:#}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootenv::SIZE;

    fn setup(name: &str, slot: &str) -> (PathBuf, Paths) {
        let dir = std::env::temp_dir().join(format!("nova-slots-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = dir.join("grubenv");
        let mut b = format!("# GRUB Environment Block\nnova_slot={slot}\n").into_bytes();
        b.resize(SIZE, b'#');
        std::fs::write(&env, b).unwrap();
        let p = Paths::new(&env, &dir);
        (dir, p)
    }

    #[test]
    fn an_upgrade_boots_once_then_is_on_trial_until_marked_good() {
        let (dir, p) = setup("cycle", "a");
        assert_eq!(classify(&p, Some('a')), Boot::Good);
        std::fs::write(&p.try_slot, "b\n").unwrap();
        arm_try(&p);
        assert_eq!(Env::read(&p.grubenv).unwrap().get("nova_try"), Some("b"));
        // GRUB boots b and clears nova_try; b is on trial.
        assert_eq!(
            classify(&p, Some('b')),
            Boot::Trial {
                booted: 'b',
                previous: 'a'
            }
        );
        mark_good(&p, 'b').unwrap();
        assert_eq!(classify(&p, Some('b')), Boot::Good);
        assert_eq!(std::fs::metadata(&p.grubenv).unwrap().len(), SIZE as u64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_leftover_try_is_cleared_so_a_failed_trial_cannot_loop() {
        let (dir, p) = setup("leftover", "a");
        std::fs::write(&p.try_slot, "b").unwrap();
        arm_try(&p);
        // The boot loader did not clear it (say it could not write): nova-init does.
        classify(&p, Some('b'));
        assert_eq!(Env::read(&p.grubenv).unwrap().get("nova_try"), Some(""));
        assert_eq!(classify(&p, None), Boot::Unmanaged);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
