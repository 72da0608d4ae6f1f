//! The thread that serves a device's queues: started on activation, stopped (after
//! draining in-flight requests) on pause and reset, restarted on resume.

use std::io;
use std::os::fd::AsRawFd;
use std::thread::JoinHandle;

use virtio_queue::QueueState;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::device::ActivateError;

/// What runs on a device's worker thread.
pub(crate) trait QueueWorker: Send + 'static {
    /// Serves the queues until `stop` becomes readable; returns with nothing in flight
    /// and no guest memory being written.
    fn run(&mut self, stop: &EventFd);
    /// The queues' positions, for snapshots.
    fn queue_states(&self) -> Vec<QueueState>;
}

/// Where a device's worker is in its lifecycle.
#[derive(Default)]
pub(crate) enum WorkerSlot<W> {
    #[default]
    Inactive,
    Running {
        stop: EventFd,
        thread: JoinHandle<W>,
    },
    Paused(W),
}

impl<W: QueueWorker> WorkerSlot<W> {
    /// Starts `worker` on a thread called `name`.
    pub fn start(&mut self, name: &str, worker: W) -> Result<(), ActivateError> {
        if !matches!(self, WorkerSlot::Inactive | WorkerSlot::Paused(_)) {
            return Err(ActivateError::AlreadyActive);
        }
        let stop = EventFd::new(EFD_NONBLOCK).map_err(ActivateError::Thread)?;
        let thread_stop = stop.try_clone().map_err(ActivateError::Thread)?;
        let thread = crate::seccomp::spawn_filtered(
            crate::seccomp::ThreadKind::Device,
            name,
            None,
            move || {
                let mut worker = worker;
                worker.run(&thread_stop);
                worker
            },
        )
        .map_err(ActivateError::Thread)?;
        *self = WorkerSlot::Running { stop, thread };
        Ok(())
    }

    /// Keeps `worker` without running it (a restored, paused device).
    pub fn park(&mut self, worker: W) -> Result<(), ActivateError> {
        if !matches!(self, WorkerSlot::Inactive) {
            return Err(ActivateError::AlreadyActive);
        }
        *self = WorkerSlot::Paused(worker);
        Ok(())
    }

    /// Stops a running worker (it drains first) and keeps it, paused.
    pub fn pause(&mut self) {
        if let WorkerSlot::Running { .. } = self {
            *self = match std::mem::take(self) {
                WorkerSlot::Running { stop, thread } => match stop_and_join(stop, thread) {
                    Some(worker) => WorkerSlot::Paused(worker),
                    None => WorkerSlot::Inactive,
                },
                other => other,
            };
        }
    }

    /// Restarts a paused worker; a no-op if not paused.
    pub fn resume(&mut self, name: &str) -> Result<(), ActivateError> {
        match std::mem::take(self) {
            WorkerSlot::Paused(worker) => self.start(name, worker),
            other => {
                *self = other;
                Ok(())
            }
        }
    }

    /// Stops the worker (draining) and drops it with its queues.
    pub fn reset(&mut self) {
        if let WorkerSlot::Running { stop, thread } = std::mem::take(self) {
            stop_and_join(stop, thread);
        }
    }

    pub fn is_activated(&self) -> bool {
        !matches!(self, WorkerSlot::Inactive)
    }

    pub fn queue_states(&self) -> Option<Vec<QueueState>> {
        match self {
            WorkerSlot::Paused(worker) => Some(worker.queue_states()),
            _ => None,
        }
    }
}

fn stop_and_join<W>(stop: EventFd, thread: JoinHandle<W>) -> Option<W> {
    if let Err(err) = stop.write(1) {
        // Without the stop signal the join below would hang; the worker is lost.
        tracing::error!("cannot signal virtio worker to stop: {err}");
        return None;
    }
    match thread.join() {
        Ok(worker) => Some(worker),
        Err(_) => {
            tracing::error!("virtio worker thread panicked; device needs a reset");
            None
        }
    }
}

/// An epoll set over the fds a worker waits on, each tagged with a token.
pub(crate) struct Poller {
    epoll: Epoll,
    events: Vec<EpollEvent>,
}

impl Poller {
    pub fn new() -> io::Result<Self> {
        Ok(Self {
            epoll: Epoll::new()?,
            events: vec![EpollEvent::default(); 16],
        })
    }

    /// Wakes the worker with `token` when `fd` is readable.
    pub fn add(&self, fd: &impl AsRawFd, token: u64) -> io::Result<()> {
        let event = EpollEvent::new(EventSet::IN, token);
        self.epoll.ctl(ControlOperation::Add, fd.as_raw_fd(), event)
    }

    pub fn remove(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.epoll.ctl(
            ControlOperation::Delete,
            fd.as_raw_fd(),
            EpollEvent::default(),
        )
    }

    /// Waits for events; returns the tokens of the ready fds.
    pub fn wait(&mut self) -> io::Result<Vec<u64>> {
        loop {
            match self.epoll.wait(-1, &mut self.events) {
                Ok(n) => return Ok(self.events[..n].iter().map(|e| e.data()).collect()),
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => return Err(err),
            }
        }
    }
}
