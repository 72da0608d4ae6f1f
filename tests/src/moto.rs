//! moto's server (`moto_server`, from PyPI's `moto[server]`): a local EC2-compatible
//! endpoint for the cloud connector tests. [`Moto::start`] runs one on a free loopback
//! port and waits until it answers; dropping it kills it. Missing `moto_server` skips
//! the test, or fails it under `NOVA_REQUIRE_KVM=1`.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{free_port, require, wait_for, which, TempDir};

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    /// `http://127.0.0.1:PORT`: the endpoint URL every AWS service answers on.
    pub url: String,
    /// Its log (stdout and stderr).
    pub log: std::path::PathBuf,
    _dir: TempDir,
}

impl Moto {
    /// Starts one, or None (skip) when moto_server is not installed.
    pub fn start() -> Option<Moto> {
        if !require(
            which("moto_server"),
            "moto_server is not installed (pip install 'moto[server]')",
        ) {
            return None;
        }
        let dir = TempDir::new();
        let log = dir.join("moto.log");
        let port = free_port();
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .expect("start moto_server");
        let m = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
            _dir: dir,
        };
        wait_for(60, "moto_server to listen", || {
            std::net::TcpStream::connect_timeout(
                &([127, 0, 0, 1], port).into(),
                Duration::from_millis(200),
            )
            .ok()
        });
        Some(m)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
