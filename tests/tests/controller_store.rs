//! The same story, through the API, on both backends: a SQLite file and a real etcd.
//! Everything a user stores survives a controller restart.

use nova_controller_api::{
    MigrationMode, MigrationParamsPatch, MigrationPolicy, MigrationPolicyPatch, NewToken, Role,
    VmSpec,
};
use nova_tests::controller::*;
use nova_tests::TempDir;

fn spec(name: &str) -> VmSpec {
    serde_json::from_value(serde_json::json!({
        "name": name, "kernel": "sha256:0000000000000000000000000000000000000000000000000000000000000000", "labels": {"app": "web"}, "start": false
    }))
    .unwrap()
}

fn story(c: &Controller) {
    let op = c.as_(&c.token_for("acme", "olga", Role::Operator));
    // hosts
    let h = register_host(c, "h1", "http://127.0.0.1:9", 8, 8192);
    heartbeat(c, "h1", &h, 8, 8192).unwrap();
    assert!(block_on(c.api.cordon("h1")).unwrap().cordoned);
    assert!(!block_on(c.api.uncordon("h1")).unwrap().cordoned);
    // VMs: desired state changes
    let vm = block_on(op.create_vm(&spec("web"), None)).unwrap();
    let id = vm.id.clone();
    use nova_controller_api::DesiredState::*;
    assert_eq!(block_on(op.start_vm(&id)).unwrap().desired, Running);
    assert_eq!(block_on(op.stop_vm(&id)).unwrap().desired, Stopped);
    let got = block_on(op.vm(&id)).unwrap();
    assert_eq!(got.spec.labels["app"], "web");
    // The scheduler places it on the only host.
    wait_for(10, "placement", || {
        (block_on(op.vm(&id)).unwrap().host.as_deref() == Some("h1")).then_some(())
    });
    // policy: replaced whole, then patched field by field
    let mut p = MigrationPolicy::default();
    p.params.mode = MigrationMode::Precopy;
    p.params.downtime_ms = 250;
    p.params.bandwidth_mbit = Some(1000);
    p.completion_timeout_s = 120;
    p.max_parallel_cluster = 3;
    p.max_parallel_per_host = 1;
    let stored = block_on(c.api.set_migration_policy(&p)).unwrap();
    assert_eq!(
        MigrationPolicy {
            revision: 0,
            ..stored.clone()
        },
        p
    );
    let patched = block_on(c.api.patch_migration_policy(&MigrationPolicyPatch {
        params: Some(MigrationParamsPatch {
            connections: Some(2),
            ..Default::default()
        }),
        ..Default::default()
    }))
    .unwrap();
    assert_eq!(patched.params.connections, 2);
    assert_eq!(patched.params.downtime_ms, 250, "the rest is untouched");
    // a second VM, deleted: its record goes once no host holds it
    let gone = block_on(op.create_vm(&spec("tmp"), None)).unwrap().id;
    block_on(op.delete_vm(&gone)).unwrap();
    // tokens: revoke one
    let extra = block_on(c.api.create_token(&NewToken {
        user: "olga".into(),
        role: Some(Role::Viewer),
    }))
    .unwrap();
    let viewer = c.as_(&extra.token);
    block_on(viewer.vms()).unwrap();
    block_on(c.api.revoke_token(&extra.info.id)).unwrap();
    assert_eq!(status(block_on(viewer.vms())), 401, "revoked");
    // audit
    let log = block_on(c.api.audit()).unwrap();
    assert!(log.len() >= 8, "{log:?}");
}

fn after_restart(c: &Controller) {
    let names: Vec<String> = block_on(c.api.vms())
        .unwrap()
        .into_iter()
        .map(|v| v.spec.name)
        .collect();
    assert!(names.contains(&"web".to_string()), "{names:?}");
    block_on(c.api.host("h1")).unwrap();
    let p = block_on(c.api.migration_policy()).unwrap();
    assert_eq!((p.params.downtime_ms, p.params.connections), (250, 2));
    let olgas = block_on(c.api.users())
        .unwrap()
        .into_iter()
        .filter(|u| u.id == "olga")
        .count();
    assert_eq!(olgas, 1);
}

#[test]
fn same_suite_passes_on_sqlite_and_etcd() {
    // SQLite
    let d = TempDir::new();
    let mut c = Controller::sqlite(d.path());
    story(&c);
    c.kill();
    let c = Controller::sqlite(d.path());
    after_restart(&c);
    drop(c);
    // etcd
    let Some(etcd) = Etcd::start() else { return };
    let d = TempDir::new();
    let opts = Opts {
        store: Some(format!("etcd:{}", etcd.url)),
        ..Opts::default()
    };
    let mut c = Controller::start(d.path(), opts.clone());
    wait_for(10, "leadership", || c.leads().then_some(()));
    story(&c);
    c.kill();
    let c = Controller::start(
        d.path(),
        Opts {
            node: nova_tests::unique("ctl"),
            ..opts
        },
    );
    after_restart(&c);
}
