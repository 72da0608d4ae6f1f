//! The ACPI power button: the kernel's `button` driver reports it as KEY_POWER on an
//! input device named "Power Button". A thread reads those devices and turns a press
//! into SIGPWR to PID 1, which the supervisor handles like any other stop request.

use std::io::Read;
use std::path::PathBuf;

/// `EV_KEY` and `KEY_POWER` of <linux/input-event-codes.h>.
const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit Linux: a timeval (16 bytes), type, code, value.
const EVENT_SIZE: usize = 24;

/// The event devices whose name says power button.
pub fn power_buttons() -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir("/sys/class/input") else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = dir
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("device/name"))
                .is_ok_and(|n| n.trim() == "Power Button")
        })
        .map(|e| PathBuf::from("/dev/input").join(e.file_name()))
        .collect();
    v.sort();
    v
}

/// Whether a raw input event is a power-button press.
pub fn is_power_press(ev: &[u8; EVENT_SIZE]) -> bool {
    let ty = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    ty == EV_KEY && code == KEY_POWER && value == 1
}

/// Starts one thread per power button; each sends SIGPWR to this process on a press.
pub fn watch() -> usize {
    let buttons = power_buttons();
    for dev in &buttons {
        let dev = dev.clone();
        std::thread::spawn(move || {
            let Ok(mut f) = std::fs::File::open(&dev) else {
                tracing::warn!(dev = %dev.display(), "cannot open the power button");
                return;
            };
            let mut ev = [0u8; EVENT_SIZE];
            while f.read_exact(&mut ev).is_ok() {
                if is_power_press(&ev) {
                    tracing::info!("power button pressed");
                    // SAFETY: kill(2) on our own pid with a valid signal.
                    unsafe { libc::kill(libc::getpid(), libc::SIGPWR) };
                }
            }
        });
    }
    buttons.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut e = [0u8; EVENT_SIZE];
        e[16..18].copy_from_slice(&ty.to_ne_bytes());
        e[18..20].copy_from_slice(&code.to_ne_bytes());
        e[20..24].copy_from_slice(&value.to_ne_bytes());
        e
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)), "release");
        assert!(!is_power_press(&event(EV_KEY, 28, 1)), "enter");
        assert!(!is_power_press(&event(0, 0, 0)), "sync");
    }
}
