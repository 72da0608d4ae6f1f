//! A built VM's life: its vCPU threads started (or parked, ready to start), paused
//! and resumed with its devices, stopped, waited for; and what it reports of itself
//! (`GET /v1/vm`).

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::Duration;

use nova_vmm_api::{Counters, RunState, VmInfo};

use super::error::{setup, VmError};
use super::Vm;
use crate::vcpu::{self, VcpuContext, VcpuStats, VmExit};

impl Vm {
    /// Starts one thread per vCPU, each parked until [`start`](Self::start): a VM
    /// about to run (a migration's destination before the switch) has its threads
    /// ready, and starting it is a wake-up, not a thread creation.
    pub fn spawn_vcpus(&self) -> Result<(), VmError> {
        if self.vcpus_spawned.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        self.control.pause();
        self.spawn_vcpu_threads()
    }

    /// Runs the vCPUs, spawning their threads unless [`spawn_vcpus`](Self::spawn_vcpus)
    /// did. Later calls do nothing.
    pub fn start(&self) -> Result<(), VmError> {
        if self.vcpus_started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        if self.vcpus_spawned.swap(true, Ordering::SeqCst) {
            // Parked by spawn_vcpus; restored devices come back paused too.
            self.resume();
            return Ok(());
        }
        self.resume_devices();
        self.spawn_vcpu_threads()
    }

    fn spawn_vcpu_threads(&self) -> Result<(), VmError> {
        for (i, fd) in self.vcpus.iter().enumerate() {
            let ctx = VcpuContext {
                pio: self.pio.clone(),
                mmio: self.mmio.clone(),
                control: self.control.clone(),
                exit: self.exit.clone(),
                stats: self.vcpu_stats[i].clone(),
            };
            vcpu::spawn(i as u8, fd.clone(), ctx).map_err(setup("spawning a vCPU thread"))?;
        }
        Ok(())
    }

    /// Blocks until the VM must stop, stops the vCPUs, and says why.
    pub fn wait(&self) -> VmExit {
        let fds = [
            self.exit.evt.as_raw_fd(),
            self.reset_evt.as_raw_fd(),
            self.poweroff_evt.as_raw_fd(),
        ];
        let reason = loop {
            let mut pfds: Vec<libc::pollfd> = fds
                .iter()
                .map(|fd| libc::pollfd {
                    fd: *fd,
                    events: libc::POLLIN,
                    revents: 0,
                })
                .collect();
            let period = crate::devices::serial::FLUSH_PERIOD.as_millis() as libc::c_int;
            // SAFETY: pfds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, period) };
            if n <= 0 {
                // Quiet for a period: a line the guest left unended goes out now.
                self.flush_console();
                continue;
            }
            if pfds[1].revents != 0 {
                break VmExit::Reset;
            }
            if pfds[2].revents != 0 {
                break VmExit::Poweroff;
            }
            if pfds[0].revents != 0 {
                let _ = self.exit.evt.read();
                if let Some(r) = self.exit.reason() {
                    break r;
                }
            }
        };
        self.control.stop();
        self.flush_console();
        reason
    }

    /// Writes out console bytes the guest has not ended a line with.
    fn flush_console(&self) {
        self.serial
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .flush();
    }

    /// Asks the VM to stop (the API's shutdown).
    pub fn shutdown(&self) {
        self.exit.send(VmExit::Shutdown);
    }

    /// Whether `stop(force, ..)` stops the VM at once rather than pressing the power
    /// button: when forced, or without ACPI (no button the guest knows).
    pub fn stops_at_once(&self, force: bool) -> bool {
        force || !self.config.acpi
    }

    /// Stops the VM: at once when `force` or when it has no ACPI (no power button
    /// the guest knows); otherwise presses the power button and stops it after
    /// `timeout` unless the guest powers off first. Says whether the button was
    /// pressed.
    pub fn stop(&self, force: bool, timeout: Duration) -> bool {
        if self.stops_at_once(force) {
            self.shutdown();
            return false;
        }
        let pressed = self
            .ged
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .press_power_button();
        if let Err(e) = pressed {
            tracing::warn!("cannot press the power button ({e}); stopping the VM");
            self.shutdown();
            return false;
        }
        tracing::info!("power button pressed; the guest has {timeout:?} to power off");
        let exit = self.exit.clone();
        let timer = std::thread::Builder::new()
            .name("stop-timeout".into())
            .stack_size(64 << 10)
            .spawn(move || {
                std::thread::sleep(timeout);
                if exit.reason().is_none() {
                    tracing::warn!("the guest did not power off in {timeout:?}; stopping it");
                    exit.send(VmExit::StopTimeout);
                }
            });
        if let Err(e) = timer {
            tracing::warn!("cannot arm the stop timeout ({e}); stopping the VM");
            self.shutdown();
            return false;
        }
        true
    }

    /// State, configuration and counters.
    pub fn info(&self) -> VmInfo {
        let sum = |f: fn(&VcpuStats) -> u64| self.vcpu_stats.iter().map(|s| f(s)).sum();
        VmInfo {
            state: if self.control.is_paused() {
                RunState::Paused
            } else {
                RunState::Running
            },
            kvm: self.kind,
            pid: std::process::id(),
            uptime_ms: self.started.elapsed().as_millis() as u64,
            config: self.config.clone(),
            counters: Counters {
                vcpu_exits: sum(|s| s.exits.load(Ordering::Relaxed)),
                io_exits: sum(|s| s.io_exits.load(Ordering::Relaxed)),
                mmio_exits: sum(|s| s.mmio_exits.load(Ordering::Relaxed)),
                console_bytes: self
                    .serial
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .bytes_out(),
                devices: self
                    .virtio
                    .iter()
                    .filter_map(|s| {
                        s.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .transport
                            .as_ref()
                            .map(|t| t.device().counters())
                    })
                    .collect(),
            },
        }
    }

    /// Pauses the vCPUs and drains the devices: afterwards nothing writes guest memory.
    pub fn pause(&self) {
        self.control.pause();
        // What the guest wrote before the pause is out before anything that follows
        // it: a snapshot, or the destination's console after a migration.
        self.flush_console();
        for slot in &self.virtio {
            if let Some(t) = &mut slot.lock().unwrap_or_else(|e| e.into_inner()).transport {
                t.pause();
            }
        }
    }

    /// Lets the vCPUs and devices run again.
    pub fn resume(&self) {
        self.resume_devices();
        self.control.resume();
    }

    fn resume_devices(&self) {
        for (i, slot) in self.virtio.iter().enumerate() {
            if let Some(t) = &mut slot.lock().unwrap_or_else(|e| e.into_inner()).transport {
                if let Err(e) = t.resume() {
                    tracing::error!("virtio device {i} cannot resume: {e}");
                }
            }
        }
    }
}
