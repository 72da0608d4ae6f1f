//! A real etcd on loopback for the tests, benches and the controller's unit tests: the
//! one launcher. Plain, over TLS with client certificates (from a throwaway CA made
//! here), or with authentication enabled (a root user and a `nova` user whose role may
//! read and write only under `nova/`). Killed and its data removed on drop.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{free_port, require, wait_for, TempDir};

/// How to start etcd.
#[derive(Debug, Clone, Default)]
pub struct EtcdOpts {
    /// Serve `https://` only, with a certificate of a throwaway CA, and ask clients
    /// for a certificate of that CA.
    pub tls: bool,
    /// Enable authentication: users `root` and `nova` (the latter may read and write
    /// under `nova/` only), with these passwords.
    pub auth: Option<(String, String)>,
}

/// The files a TLS client of the etcd needs.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// PEM of the CA that signed the server's (and the client's) certificate.
    pub ca: PathBuf,
    /// A client certificate and its key, signed by the CA.
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A real etcd on loopback with a temporary data dir.
pub struct Etcd {
    child: Child,
    dir: TempDir,
    /// `http://127.0.0.1:PORT` (or `https://`).
    pub url: String,
    pub tls: Option<TlsFiles>,
}

impl Etcd {
    /// A plain etcd. None (skipped loudly) when etcd is not installed; a failure under
    /// NOVA_REQUIRE_KVM=1.
    pub fn start() -> Option<Etcd> {
        Self::start_with(EtcdOpts::default())
    }

    /// An etcd as `o` says.
    pub fn start_with(o: EtcdOpts) -> Option<Etcd> {
        let bin = std::env::var("NOVA_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
        if !require(
            Path::new(&bin).exists(),
            "etcd is not installed (Debian package etcd-server)",
        ) {
            return None;
        }
        let dir = TempDir::new();
        let (port, peer) = (free_port(), free_port());
        let scheme = if o.tls { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let mut cmd = Command::new(bin);
        cmd.args([
            "--data-dir",
            &dir.join("etcd").to_string_lossy(),
            "--name",
            "t",
        ])
        .arg(format!("--listen-client-urls={url}"))
        .arg(format!("--advertise-client-urls={url}"))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer}"));
        let tls = o.tls.then(|| {
            let files = make_certs(dir.path());
            cmd.arg("--cert-file")
                .arg(dir.join("server.pem"))
                .arg("--key-file")
                .arg(dir.join("server.key"))
                .arg("--trusted-ca-file")
                .arg(&files.ca)
                .arg("--client-cert-auth");
            files
        });
        let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
        let child = cmd
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        let e = Etcd {
            child,
            dir,
            url,
            tls,
        };
        wait_for(20, "etcd to listen", || {
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        if let Some((root, nova)) = &o.auth {
            e.enable_auth(root, nova);
        }
        Some(e)
    }

    /// What etcd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Users `root` (role root) and `nova` (read-write under `nova/`), then auth on,
    /// through etcd's JSON gateway.
    fn enable_auth(&self, root_password: &str, nova_password: &str) {
        let c = nova_http::Client::new(&self.url, None, &Default::default()).unwrap();
        let call = |path: &str, body: serde_json::Value| {
            let r: Result<serde_json::Value, _> =
                nova_http::blocking::block_on(c.post(&format!("/v3/auth/{path}"), &body));
            r.unwrap_or_else(|e| panic!("etcd {path}: {e}\n{}", self.log()));
        };
        use serde_json::json;
        call("role/add", json!({"name": "root"}));
        call(
            "user/add",
            json!({"name": "root", "password": root_password}),
        );
        call("user/grant", json!({"user": "root", "role": "root"}));
        call("role/add", json!({"name": "nova"}));
        call(
            "role/grant",
            json!({"name": "nova", "perm": {"permType": "READWRITE",
                "key": base64("nova/"), "range_end": base64("nova0")}}),
        );
        call(
            "user/add",
            json!({"name": "nova", "password": nova_password}),
        );
        call("user/grant", json!({"user": "nova", "role": "nova"}));
        call("enable", json!({}));
    }
}

/// Standard base64 (the JSON gateway's encoding of keys).
fn base64(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A throwaway CA (`ca.pem`), a server certificate for 127.0.0.1 (`server.pem`,
/// `server.key`) and a client certificate, in `dir`.
pub fn make_certs(dir: &Path) -> TlsFiles {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose as Eku, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "NovaCron test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let leaf = |name: &str, sans: Vec<String>, eku: Vec<Eku>, file: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(sans).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = eku;
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{file}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{file}.key")), key.serialize_pem()).unwrap();
    };
    leaf(
        "etcd",
        vec!["127.0.0.1".into(), "localhost".into()],
        vec![Eku::ServerAuth, Eku::ClientAuth],
        "server",
    );
    leaf("nova-controller", vec![], vec![Eku::ClientAuth], "client");
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("client.pem"),
        key: dir.join("client.key"),
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(super::base64("nova/"), "bm92YS8=");
        assert_eq!(super::base64("nova0"), "bm92YTA=");
        assert_eq!(super::base64("ab"), "YWI=");
        assert_eq!(super::base64("abc"), "YWJj");
    }
}
