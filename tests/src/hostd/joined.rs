//! hostds that join a test controller the way a new host does (with the controller's
//! join token, on a bridge of their own), and waiting until the controller has them.

use nova_controller_api::HostState;
use nova_http::blocking::block_on;

use crate::controller::Controller;
use crate::{unique, wait_for};

use super::{Hostd, Opts};

/// A hostd joined to `c` with its join token, on a bridge of its own.
pub fn hostd_for(c: &Controller) -> Hostd {
    Hostd::start(Opts {
        args: vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            c.dir.join("join.token").display().to_string(),
            "--bridge".into(),
            unique("nbr"),
        ],
        ..Opts::default()
    })
}

/// Waits until `n` hosts are Ready in `c`.
pub fn wait_hosts_ready(c: &Controller, n: usize) {
    wait_for(30, "hosts to register", || {
        let hosts = block_on(c.api.hosts()).ok()?;
        let ready = hosts.iter().filter(|h| h.state == HostState::Ready).count();
        (ready == n).then_some(())
    });
}
