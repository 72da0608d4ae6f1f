//! Live migration test kit: a source and destination nova-vmm on loopback, a proxy
//! between them that can cut, corrupt or kill at a chosen protocol message, and the
//! checks every migration story makes (the counter never skips or repeats).

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nova_http::blocking::block_on;
use nova_vmm_api::migration::to_hex;
use nova_vmm_api::{IncomingCredential, MigrationPeer, MigrationStatus, VmmClient};

use crate::vmm::{ctl, Vm, VmmCmd};
use crate::Line;

/// Message kinds of the migration protocol (vmm/src/migration/protocol.rs).
pub mod kind {
    pub const HELLO: u8 = 1;
    pub const PAGES: u8 = 3;
    pub const ZERO_PAGES: u8 = 4;
    pub const FLUSH: u8 = 5;
    pub const STATE: u8 = 7;
    pub const POSTCOPY_STATE: u8 = 8;
    pub const SWITCH: u8 = 10;
    pub const BLOCKS: u8 = 17;
    pub const ZERO_BLOCKS: u8 = 18;
    pub const BLOCK_DELTAS: u8 = 19;
}

/// A fresh per-migration credential, as hostd makes one for each incoming migration:
/// the destination's file (written into `dir`) and the source's half.
pub fn credential(dir: &Path) -> (PathBuf, MigrationPeer) {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["nova-migration".into()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).unwrap();
    let cred = IncomingCredential {
        cert_der: to_hex(cert.der()),
        key_der: to_hex(&key.serialize_der()),
        secret: to_hex(&secret),
    };
    let path = dir.join("incoming-credential.json");
    std::fs::write(&path, serde_json::to_vec(&cred).unwrap()).unwrap();
    let sha = ring::digest::digest(&ring::digest::SHA256, cert.der());
    (
        path,
        MigrationPeer {
            cert_sha256: to_hex(sha.as_ref()),
            secret: to_hex(&secret),
        },
    )
}

/// A destination VMM waiting on a port.
pub struct Destination {
    pub vm: Vm,
    pub sock: PathBuf,
    pub port: u16,
    /// What a source needs to reach it (`None`: it runs `--insecure`).
    pub peer: Option<MigrationPeer>,
    _dir: crate::TempDir,
}

impl Destination {
    /// A destination given the VM it is to receive: `mem_mib`, `vcpus` and `disks`
    /// (the destination never takes them from the stream), with its own credential.
    pub fn start_for(mem_mib: u64, vcpus: u8, disks: &[&Path]) -> Destination {
        Destination::start(
            &Destination::vm_flags(mem_mib, vcpus, disks)
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    }

    /// [`start_for`](Self::start_for) in plaintext, without authentication
    /// (`--insecure`): for tests that read or break the stream on the wire.
    pub fn start_for_insecure(mem_mib: u64, vcpus: u8, disks: &[&Path]) -> Destination {
        let mut flags = Destination::vm_flags(mem_mib, vcpus, disks);
        flags.push("--insecure".into());
        Destination::start(&flags.iter().map(String::as_str).collect::<Vec<_>>())
    }

    fn vm_flags(mem_mib: u64, vcpus: u8, disks: &[&Path]) -> Vec<String> {
        let mut extra = vec![
            "--mem-mib".to_string(),
            mem_mib.to_string(),
            "--vcpus".into(),
            vcpus.to_string(),
        ];
        for d in disks {
            extra.extend(["--disk".into(), d.display().to_string()]);
        }
        extra
    }

    /// A destination with `extra` flags after `--incoming`; it gets a credential of
    /// its own unless `extra` holds `--insecure`.
    pub fn start(extra: &[&str]) -> Destination {
        let dir = crate::TempDir::new();
        let (cred, peer) = match extra.contains(&"--insecure") {
            true => (None, None),
            false => {
                let (path, peer) = credential(dir.path());
                (Some(path), Some(peer))
            }
        };
        // Port 0: the destination binds a free port itself and says which, so that
        // tests running side by side never race for one between choosing and binding.
        let mut cmd = VmmCmd::raw()
            .args(["--incoming", "tcp:127.0.0.1:0"])
            .args(extra);
        if let Some(c) = &cred {
            cmd = cmd.arg("--incoming-credential").arg(c);
        }
        let (cmd, sock) = cmd.with_api();
        let vm = cmd.spawn();
        const LISTENING: &str = "waiting for an incoming migration on 127.0.0.1:";
        for _ in 0..1000 {
            let err = vm.console.stderr();
            let port = err.split(LISTENING).nth(1).and_then(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().ok()
            });
            if let Some(port) = port {
                return Destination {
                    vm,
                    sock,
                    port,
                    peer,
                    _dir: dir,
                };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the destination never listened: {}", vm.console.stderr());
    }
}

/// `nova-vmm ctl migrate` from `src_sock` to `dst`, with its credential: (success,
/// the final status it printed, its stderr).
pub fn migrate_to(
    src_sock: &std::path::Path,
    dst: &Destination,
    args: &[&str],
) -> (bool, MigrationStatus, String) {
    let mut a: Vec<&str> = args.to_vec();
    if let Some(p) = &dst.peer {
        a.extend([
            "--peer-cert-sha256",
            p.cert_sha256.as_str(),
            "--peer-secret",
            p.secret.as_str(),
        ]);
    }
    migrate(src_sock, dst.port, &a)
}

/// `nova-vmm ctl migrate` from `src_sock` to `port` as `args` say (plaintext unless
/// they carry a credential): (success, the final status it printed, its stderr).
pub fn migrate(
    src_sock: &std::path::Path,
    port: u16,
    args: &[&str],
) -> (bool, MigrationStatus, String) {
    let to = format!("tcp:127.0.0.1:{port}");
    let mut a = vec!["migrate", "--to", &to];
    a.extend_from_slice(args);
    let (status, out, err) = ctl(src_sock, &a);
    let result = serde_json::from_str(out.trim())
        .unwrap_or_else(|e| panic!("ctl migrate printed no status ({e}): {out:?}\n{err}"));
    (status.success(), result, err)
}

/// The console of a VM that moved: the source's lines, then the destination's, with a
/// line split by the switch joined again.
pub fn joined(src: &[Line], dst: &[Line]) -> Vec<Line> {
    let mut out: Vec<Line> = src.to_vec();
    let mut rest = dst;
    if let (Some(last), Some(first)) = (out.last_mut(), dst.first()) {
        if !last.complete {
            last.text.push_str(&first.text);
            last.at = first.at;
            last.complete = first.complete;
            rest = &dst[1..];
        }
    }
    out.extend_from_slice(rest);
    out
}

/// Asserts the counter went up by exactly one per line; returns the longest gap between
/// two ticks (the guest-observed pause).
pub fn assert_counter_continuous(lines: &[Line]) -> Duration {
    let t = crate::vmm::ticks(lines);
    assert!(t.len() > 10, "too few ticks: {}", t.len());
    let mut gap = Duration::ZERO;
    for w in t.windows(2) {
        if w[1].0 != w[0].0 + 1 {
            let around: Vec<_> = lines
                .iter()
                .map(|l| format!("{:?} {}", l.complete, l.text))
                .filter(|l| {
                    l.contains(&format!(" {}", w[0].0)) || l.contains(&format!(" {}", w[1].0))
                })
                .collect();
            let i = lines
                .iter()
                .position(|l| l.text.ends_with(&format!(" {}", w[0].0)))
                .unwrap_or(0);
            let ctx: Vec<_> = lines[i.saturating_sub(3)..(i + 4).min(lines.len())]
                .iter()
                .map(|l| format!("{:?} {:?}", l.complete, l.text))
                .collect();
            panic!(
                "counter went from {} to {}: {around:?}\ncontext: {ctx:#?}",
                w[0].0, w[1].0
            );
        }
        gap = gap.max(w[1].1.saturating_duration_since(w[0].1));
    }
    gap
}

/// What the proxy does with a message from the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Close both connections instead of forwarding it.
    Cut,
    /// Forward it with its kind byte replaced by garbage.
    Corrupt,
    /// SIGKILL the destination, then go on forwarding (into a dead peer).
    KillDestination,
    /// Forward nothing more either way but keep both connections open, as a hung
    /// destination or a network that drops every packet would.
    Stall,
}

/// Where the proxy strikes: the `nth` (from 1) message of one of `kinds` the source
/// sends, counting only those sent while the source (its API) reports one of
/// `phases`, when given.
#[derive(Clone)]
pub struct Trigger {
    pub kinds: &'static [u8],
    pub nth: usize,
    pub phases: Option<(VmmClient, &'static [&'static str])>,
}

impl Trigger {
    fn counts(&self, frame_kind: u8) -> bool {
        self.kinds.contains(&frame_kind)
            && self.phases.as_ref().is_none_or(|(source, phases)| {
                block_on(source.migration()).is_ok_and(|m| phases.contains(&m.phase.as_str()))
            })
    }
}

/// A TCP proxy from the source to a destination that injects a fault where the
/// trigger says.
pub struct Proxy {
    pub port: u16,
    pub fired: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(dest_port: u16, dest_pid: u32, trigger: Trigger, fault: Fault) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let fired = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(0usize));
        let f = fired.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(("127.0.0.1", dest_port)) else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                // Destination -> source: plain copy.
                std::thread::spawn(move || pipe(s2, c2));
                let (f, seen, t) = (f.clone(), seen.clone(), trigger.clone());
                std::thread::spawn(move || inject(client, server, &t, fault, dest_pid, &f, &seen));
            }
        });
        Proxy { port, fired }
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

fn inject(
    mut from: TcpStream,
    mut to: TcpStream,
    trigger: &Trigger,
    fault: Fault,
    pid: u32,
    fired: &AtomicBool,
    seen: &Mutex<usize>,
) {
    loop {
        let mut len = [0u8; 4];
        if from.read_exact(&mut len).is_err() {
            break;
        }
        let n = u32::from_le_bytes(len) as usize;
        let mut frame = vec![0u8; n];
        if n > 64 << 20 || from.read_exact(&mut frame).is_err() {
            break;
        }
        let hit = !fired.load(Ordering::SeqCst) && trigger.counts(frame[0]) && {
            let mut s = seen.lock().unwrap();
            *s += 1;
            *s == trigger.nth
        };
        if hit && !fired.swap(true, Ordering::SeqCst) {
            match fault {
                Fault::Cut => {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
                Fault::Corrupt => frame[0] = 0xee,
                Fault::Stall => {
                    // Read nothing more, so the source's writes block once the socket
                    // buffers fill, and close nothing: each side must notice by itself.
                    std::thread::sleep(Duration::from_secs(60));
                    return;
                }
                Fault::KillDestination => {
                    // SAFETY-free: plain kill(2) of a child we started.
                    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        if to
            .write_all(&len)
            .and_then(|_| to.write_all(&frame))
            .is_err()
        {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Both);
    let _ = from.shutdown(Shutdown::Both);
}

/// A TLS client of a destination with this migration's credential (or a wrong one):
/// what a source's connection is, minus the source. It checks the destination's
/// certificate against `peer.cert_sha256` and sends `peer.secret` first.
pub fn connect_secure(port: u16, peer: &MigrationPeer) -> std::io::Result<SecureConn> {
    use rustls::pki_types::ServerName;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let pin = peer.cert_sha256.clone();
    let verifier = std::sync::Arc::new(PinnedCert {
        pin,
        algs: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(std::io::Error::other)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    let conn = rustls::ClientConnection::new(
        std::sync::Arc::new(config),
        ServerName::try_from("nova-migration").unwrap(),
    )
    .map_err(std::io::Error::other)?;
    let sock = TcpStream::connect(("127.0.0.1", port))?;
    sock.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut s = SecureConn(rustls::StreamOwned::new(conn, sock));
    let secret: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&peer.secret[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    s.write_all(&secret)?;
    Ok(s)
}

/// A TLS connection to a destination (see [`connect_secure`]).
pub struct SecureConn(rustls::StreamOwned<rustls::ClientConnection, TcpStream>);

impl Read for SecureConn {
    fn read(&mut self, b: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(b)
    }
}

impl Write for SecureConn {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.0.write(b)?;
        self.0.flush()?;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

#[derive(Debug)]
struct PinnedCert {
    pin: String,
    algs: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl rustls::client::danger::ServerCertVerifier for PinnedCert {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let got = to_hex(ring::digest::digest(&ring::digest::SHA256, end_entity).as_ref());
        if got != self.pin {
            return Err(rustls::Error::General("not the pinned certificate".into()));
        }
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.algs.supported_schemes()
    }
}
