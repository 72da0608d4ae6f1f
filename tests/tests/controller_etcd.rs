//! The controller on a secured etcd, as production runs it: over TLS with a client
//! certificate (`--etcd-ca`, `--etcd-cert`, `--etcd-key`), and signed in to an etcd
//! with authentication enabled (`--etcd-user`, `--etcd-password-file`). Without the
//! right credentials it does not start, and says why.

use nova_controller_api::VmSpec;
use nova_tests::controller::*;
use nova_tests::TempDir;

fn works(c: &Controller) {
    wait_for(10, "leadership", || c.leads().then_some(()));
    let s: VmSpec =
        serde_json::from_value(serde_json::json!({"name": "web", "kernel": "/k", "start": false}))
            .unwrap();
    let v = block_on(c.api.create_vm(&s, None)).unwrap();
    let mut events = EventStream::since(&c.url, &c.admin, Some(0)).unwrap();
    events.until("vm.created", &v.id, 10);
}

#[test]
fn the_controller_speaks_tls_to_etcd_with_a_client_certificate() {
    let Some(etcd) = Etcd::start_with(EtcdOpts {
        tls: true,
        ..Default::default()
    }) else {
        return;
    };
    let tls = etcd.tls.clone().unwrap();
    let d = TempDir::new();
    let flags = |cert: bool| {
        let mut a = vec!["--etcd-ca".to_string(), tls.ca.display().to_string()];
        if cert {
            a.extend([
                "--etcd-cert".into(),
                tls.cert.display().to_string(),
                "--etcd-key".into(),
                tls.key.display().to_string(),
            ]);
        }
        a
    };
    let opts = |cert: bool| Opts {
        store: Some(format!("etcd:{}", etcd.url)),
        args: flags(cert),
        ..Opts::default()
    };
    // etcd asks for a client certificate: without one the controller cannot start.
    let refused = Controller::try_start(d.path(), opts(false))
        .err()
        .expect("no client certificate, no store");
    assert!(
        refused.contains("using etcd:https://") && refused.contains("refuses writes"),
        "{refused}"
    );
    let c = Controller::start(d.path(), opts(true));
    works(&c);
}

#[test]
fn the_controller_signs_in_to_an_etcd_with_authentication() {
    let Some(etcd) = Etcd::start_with(EtcdOpts {
        auth: Some(("root-secret".into(), "nova-secret".into())),
        ..Default::default()
    }) else {
        return;
    };
    let d = TempDir::new();
    let good = d.join("etcd-password");
    std::fs::write(&good, "nova-secret\n").unwrap();
    let bad = d.join("wrong-password");
    std::fs::write(&bad, "guess").unwrap();
    let opts = |pw: &std::path::Path| Opts {
        store: Some(format!("etcd:{}", etcd.url)),
        args: vec![
            "--etcd-user".into(),
            "nova".into(),
            "--etcd-password-file".into(),
            pw.display().to_string(),
        ],
        ..Opts::default()
    };
    let refused = Controller::try_start(d.path(), opts(&bad))
        .err()
        .expect("a wrong password, no store");
    assert!(refused.contains("authentication failed"), "{refused}");
    // Without credentials at all, etcd refuses every key.
    let anonymous = Controller::try_start(
        d.path(),
        Opts {
            store: Some(format!("etcd:{}", etcd.url)),
            ..Opts::default()
        },
    )
    .err()
    .expect("no user, no store");
    assert!(anonymous.contains("user name is empty"), "{anonymous}");
    // User `nova` may use only keys under `nova/`: everything the controller keeps.
    let c = Controller::start(d.path(), opts(&good));
    works(&c);
}
