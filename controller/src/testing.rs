//! Test fixtures of the controller's own unit tests: a real etcd on loopback.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// An etcd server with a temporary data dir, killed and removed on drop.
pub struct Etcd {
    child: Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Etcd {
    /// Starts `/usr/bin/etcd`; None (test skipped, loudly) when it is not installed,
    /// a failure under `NOVA_REQUIRE_KVM=1`.
    pub fn start() -> Option<Etcd> {
        let bin = std::env::var("NOVA_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
        if !std::path::Path::new(&bin).exists() {
            if std::env::var("NOVA_REQUIRE_KVM").is_ok_and(|v| v == "1") {
                panic!("NOVA_REQUIRE_KVM=1 but etcd is not installed");
            }
            eprintln!("\n*** SKIPPED: etcd is not installed ***\n");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("nova-etcd-{}", rand::random::<u64>()));
        let (port, peer) = (free_port(), free_port());
        let child = Command::new(bin)
            .args(["--data-dir", &dir.to_string_lossy(), "--name", "t"])
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
        let e = Etcd { child, dir, port };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(e)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
