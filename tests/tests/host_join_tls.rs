//! A host that has only the controller's URL, a join token and the controller's CA
//! (what fits on a kernel command line or in EC2 user-data) gets its serving
//! certificate at join: hostd makes its key, sends it with the single-use join
//! token, serves the certificate the controller signs with its hostd CA, renews it
//! with its own token, and the controller reaches it over verified TLS. A used join
//! token, a key proved for another host id, a renewal for another host, and a
//! controller without a CA key are all refused.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nova_controller_api::{NewJoinToken, VmSpec};
use nova_hostd_api::{HostCertificate, HostKeyRequest, RegisterRequest, RegisterResponse};
use nova_tests::controller::{block_on, host_info, refusal, wait_for, Controller, Opts};
use nova_tests::hostd::{self, testguest, Hostd};
use nova_tests::{binary, require_kvm, unique, TempDir};

/// `nova-controller dev-ca DIR`: ca.pem, ca.key, server.pem, server.key.
fn dev_ca(dir: &Path) {
    let out = Command::new(binary("nova-controller"))
        .arg("dev-ca")
        .arg(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A controller serving TLS with the dev CA's server pair, issuing host
/// certificates with the CA's key when `issue`; `extra` flags after.
fn controller(d: &TempDir, ca: &Path, issue: bool, extra: &[&str]) -> Controller {
    let mut args: Vec<String> = vec![
        "--tls-cert".into(),
        ca.join("server.pem").display().to_string(),
        "--tls-key".into(),
        ca.join("server.key").display().to_string(),
        "--hostd-ca".into(),
        ca.join("ca.pem").display().to_string(),
    ];
    if issue {
        args.extend([
            "--hostd-ca-key".into(),
            ca.join("ca.key").display().to_string(),
        ]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    Controller::start(
        d.path(),
        Opts {
            args,
            ca: Some(ca.join("ca.pem")),
            ..Opts::default()
        },
    )
}

/// A single-use join token of `c`.
fn join_token(c: &Controller) -> String {
    block_on(c.api.create_join_token(&NewJoinToken { ttl_s: Some(600) }))
        .unwrap()
        .token
}

/// A registration of `id` reached at `url`, asking for a certificate of a new key
/// proved for `proved_for`.
fn registration(id: &str, url: &str, proved_for: &str) -> RegisterRequest {
    let key = rcgen::KeyPair::generate().unwrap();
    RegisterRequest {
        host_id: id.into(),
        hostname: id.into(),
        url: url.into(),
        token: "hostd-secret-0123456789".into(),
        info: host_info(id, 4, 4096),
        tls_key: Some(HostKeyRequest::sign(&key.serialize_der(), proved_for).unwrap()),
    }
}

fn register(
    c: &Controller,
    token: &str,
    rq: &RegisterRequest,
) -> Result<RegisterResponse, nova_http::Error> {
    block_on(c.as_(token).http().post("/v1/hosts/register", rq))
}

#[test]
fn a_host_with_only_url_join_token_and_ca_gets_a_certificate_serves_tls_and_renews_it() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let ca = d.join("ca");
    dev_ca(&ca);
    // Certificates live 12 s: renewed at 8 s, well within the test.
    let c = controller(&d, &ca, true, &["--host-cert-ttl-s", "12"]);
    let token = join_token(&c);
    let token_file = d.join("join.token");
    std::fs::write(&token_file, &token).unwrap();
    // No --tls-cert, no --insecure-http: hostd asks the controller, and the test's
    // client trusts the CA only.
    let h = Hostd::start(hostd::Opts {
        args: vec![
            "--controller".into(),
            c.url.clone(),
            "--join-token-file".into(),
            token_file.display().to_string(),
            "--controller-ca".into(),
            ca.join("ca.pem").display().to_string(),
            "--bridge".into(),
            unique("nbr"),
        ],
        tls_ca: Some(ca.join("ca.pem")),
        ..hostd::Opts::default()
    });
    let id = h.ok(h.api().host()).host_id;
    let pem = h.data().join("tls/host.pem");
    let mode = std::fs::metadata(&pem).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is the host's only");
    let host = wait_for(20, "the host to be Ready", || {
        let hs = block_on(c.api.hosts()).ok()?;
        hs.into_iter()
            .find(|x| x.id == id && x.state == nova_controller_api::HostState::Ready)
    });
    assert!(host.url.starts_with("https://"), "{}", host.url);

    // The controller reaches the host over TLS verified against its hostd CA.
    let vm = block_on(c.api.create_vm(
        &VmSpec {
            mem_mib: 64,
            cmdline: Some("nova.workload=counter".into()),
            ..VmSpec::new("tls-web", testguest().display().to_string())
        },
        None,
    ))
    .unwrap();
    wait_for(60, "the VM to run on the TLS host", || {
        let v = block_on(c.api.vm(&vm.id)).ok()?;
        (v.observed.as_ref()?.state == "running").then_some(())
    });

    // Renewal with the host's own token: a new key and certificate replace the
    // file, and the server serves them without a restart.
    let before = std::fs::read_to_string(&pem).unwrap();
    wait_for(30, "the certificate to be renewed", || {
        let now = std::fs::read_to_string(&pem).ok()?;
        (now != before && now.contains("BEGIN CERTIFICATE")).then_some(())
    });
    // The server looks at the file once a second; a new connection then gets the
    // new certificate (the client pool's idle connections would not show it).
    std::thread::sleep(Duration::from_millis(1500));
    let fresh = nova_hostd_api::HostdClient::new(
        &format!("https://{}", h.addr),
        &h.token,
        &nova_http::ClientOptions {
            ca_file: Some(ca.join("ca.pem")),
            ..Default::default()
        },
    )
    .unwrap();
    h.ok(fresh.health());
    block_on(c.api.stop_vm(&vm.id)).unwrap();
    wait_for(30, "the VM to stop over the renewed certificate", || {
        let v = block_on(c.api.vm(&vm.id)).ok()?;
        (v.observed.as_ref()?.state == "stopped").then_some(())
    });

    // The join token was single use.
    let again = register(
        &c,
        &token,
        &registration("second-host", "https://127.0.0.1:1", "second-host"),
    );
    assert_eq!(refusal(again).0, 401);

    // A renewal for another host id with this host's own token is refused.
    let own = std::fs::read_to_string(h.data().join("controller.token")).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let other: Result<HostCertificate, _> = block_on(c.as_(own.trim()).http().post(
        "/v1/hosts/another-host/certificate",
        &HostKeyRequest::sign(&key.serialize_der(), "another-host").unwrap(),
    ));
    assert_eq!(refusal(other).0, 403);

    block_on(c.api.delete_vm(&vm.id)).unwrap();
    wait_for(30, "the VM to be gone", || {
        block_on(c.api.vm(&vm.id))
            .err()
            .filter(|e| e.is_not_found())
    });
}

#[test]
fn a_key_proved_for_another_host_id_is_refused_and_leaves_the_join_token_unused() {
    let d = TempDir::new();
    let ca = d.join("ca");
    dev_ca(&ca);
    let c = controller(&d, &ca, true, &[]);
    let token = join_token(&c);
    let forged = register(
        &c,
        &token,
        &registration("victim", "https://192.0.2.9:7070", "mallory"),
    );
    let (status, field) = refusal(forged);
    assert_eq!((status, field.as_deref()), (400, Some("tls_key.proof")));
    // Nothing was recorded and the token still admits one honest host.
    assert!(block_on(c.api.host("victim")).unwrap_err().is_not_found());
    // Nor is a certificate issued for an address the asking host does not have: this
    // one asks from 127.0.0.1 for 192.0.2.9 (and could then pose as that machine).
    let elsewhere = register(
        &c,
        &token,
        &registration("honest", "https://192.0.2.9:7070", "honest"),
    );
    let e = elsewhere.expect_err("a certificate for another machine's address");
    let body = e.body().expect("an error body").clone();
    assert_eq!(
        (e.status(), body.field.as_deref()),
        (Some(400), Some("url"))
    );
    assert!(
        body.error.contains("192.0.2.9") && body.error.contains("127.0.0.1"),
        "{}",
        body.error
    );
    assert!(block_on(c.api.host("honest")).unwrap_err().is_not_found());
    let ok = register(
        &c,
        &token,
        &registration("honest", "https://127.0.0.1:7070", "honest"),
    )
    .unwrap();
    let cert = ok.certificate.expect("a certificate for the key");
    assert!(cert.pem.starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        cert.not_after_ms - cert.not_before_ms,
        86_400_000 + 60_000,
        "the default lifetime, from a minute ago"
    );
    // A plain http:// host gets no certificate.
    let token = join_token(&c);
    let http = register(
        &c,
        &token,
        &registration("plain", "http://127.0.0.1:7070", "plain"),
    );
    assert_eq!(refusal(http), (400, Some("url".into())));
}

#[test]
fn a_controller_without_the_ca_key_issues_nothing_and_its_flags_are_checked() {
    let d = TempDir::new();
    let ca = d.join("ca");
    dev_ca(&ca);
    let c = controller(&d, &ca, false, &[]);
    let token = join_token(&c);
    let r = register(
        &c,
        &token,
        &registration("h", "https://127.0.0.1:7070", "h"),
    );
    assert_eq!(refusal(r), (409, Some("tls_key".into())));

    let start = |args: Vec<String>| {
        let d = TempDir::new();
        Controller::try_start(
            d.path(),
            Opts {
                args,
                ..Opts::default()
            },
        )
        .err()
        .expect("refused at start")
    };
    let p = |f: &str| ca.join(f).display().to_string();
    let e = start(vec!["--hostd-ca-key".into(), p("ca.key")]);
    assert!(e.contains("--hostd-ca-key: needs --hostd-ca"), "{e}");
    let e = start(vec![
        "--hostd-ca".into(),
        p("ca.pem"),
        "--hostd-ca-key".into(),
        p("server.key"),
    ]);
    assert!(e.contains("is not the key of"), "{e}");
    let e = start(vec![
        "--hostd-ca".into(),
        p("ca.pem"),
        "--hostd-ca-key".into(),
        p("ca.key"),
        "--host-cert-ttl-s".into(),
        "5".into(),
    ]);
    assert!(e.contains("--host-cert-ttl-s"), "{e}");
}
