//! A real etcd on loopback for the tests, benches and the controller's unit tests: the
//! one launcher. Killed and its data removed on drop.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::{free_port, require, wait_for, TempDir};

/// A real etcd on loopback with a temporary data dir.
pub struct Etcd {
    child: Child,
    _dir: TempDir,
    pub url: String,
}

impl Etcd {
    /// None (skipped loudly) when etcd is not installed; a failure under NOVA_REQUIRE_KVM=1.
    pub fn start() -> Option<Etcd> {
        let bin = std::env::var("NOVA_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
        if !require(
            Path::new(&bin).exists(),
            "etcd is not installed (Debian package etcd-server)",
        ) {
            return None;
        }
        let dir = TempDir::new();
        let (port, peer) = (free_port(), free_port());
        let child = Command::new(bin)
            .args([
                "--data-dir",
                &dir.join("etcd").to_string_lossy(),
                "--name",
                "t",
            ])
            .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let e = Etcd {
            child,
            _dir: dir,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_for(20, "etcd to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        Some(e)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
