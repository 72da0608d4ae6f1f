//! One test suite for every backend: CRUD of each kind, compare-and-swap under
//! concurrent writers, the audit log. Runs against SQLite and a real etcd
//! (`/usr/bin/etcd`, started on a free loopback port, killed afterwards).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;

use super::*;
use crate::model::*;

fn vm(id: &str, tenant: &str) -> Vm {
    Vm {
        id: id.into(),
        tenant: tenant.into(),
        spec: serde_json::from_value(serde_json::json!({"name": id, "kernel": "/k"})).unwrap(),
        desired: DesiredState::Running,
        host: None,
        observed: None,
        migrating: None,
        created_at_ms: now_ms(),
        revision: 0,
    }
}

fn host(id: &str) -> Host {
    Host {
        id: id.into(),
        hostname: id.into(),
        url: "http://192.0.2.1:1".into(),
        hostd_token: "t".into(),
        labels: BTreeMap::new(),
        state: HostState::Ready,
        cordoned: false,
        draining: false,
        capacity: Resources {
            vcpus: 8,
            mem_mib: 8192,
            disk_mib: 0,
        },
        allocated: Resources::default(),
        kvm: "pvm".into(),
        image_version: None,
        registered_at_ms: 0,
        last_heartbeat_ms: 0,
        revision: 0,
    }
}

/// The suite itself.
pub async fn run(store: DynStore) {
    let s = &*store;
    // hosts
    s.create(&host("h1")).await.unwrap();
    assert!(
        matches!(s.create(&host("h1")).await, Err(StoreError::Conflict(_))),
        "ids are unique"
    );
    let h = s
        .update::<Host, _>("h1", |h| {
            h.cordoned = true;
            true
        })
        .await
        .unwrap();
    assert!(h.cordoned);
    assert!(s.must_read::<Host>("h1").await.unwrap().cordoned);
    // VMs: desired and observed state
    s.create(&vm("a", "t1")).await.unwrap();
    s.create(&vm("b", "t2")).await.unwrap();
    let v = s.read::<Vm>("a").await.unwrap().unwrap();
    assert!(v.revision > 0);
    s.update::<Vm, _>("a", |v| {
        v.observed = Some(Observed {
            state: "running".into(),
            host: Some("h1".into()),
            at_ms: 1,
            error: None,
        });
        v.host = Some("h1".into());
        true
    })
    .await
    .unwrap();
    // A stale revision is refused.
    let mut stale = v.clone();
    stale.desired = DesiredState::Stopped;
    assert!(matches!(
        s.replace(&stale, v.revision).await,
        Err(StoreError::Conflict(_))
    ));
    let now = s.must_read::<Vm>("a").await.unwrap();
    assert_eq!(now.observed.as_ref().unwrap().state, "running");
    assert_eq!(s.list_all::<Vm>().await.unwrap().len(), 2);
    // Keys and revisions alone are those of the whole list.
    let whole: Vec<(String, u64)> = s
        .list("vms/")
        .await
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k, v.revision))
        .collect();
    assert_eq!(s.list_revisions("vms/").await.unwrap(), whole);
    assert_eq!(whole.len(), 2);
    assert!(s.remove::<Vm>("b").await.unwrap());
    assert!(!s.remove::<Vm>("b").await.unwrap());
    assert!(s.read::<Vm>("b").await.unwrap().is_none());
    assert!(matches!(
        s.update::<Vm, _>("b", |_| true).await,
        Err(StoreError::NotFound(_))
    ));
    // operations, tenants, users, tokens
    let op = Operation {
        id: "op1".into(),
        tenant: "t1".into(),
        kind: "migrate".into(),
        target: "a".into(),
        state: OpState::Running,
        progress: 10,
        message: String::new(),
        result: serde_json::json!({}),
        cancel_requested: false,
        created_at_ms: 0,
        updated_at_ms: 0,
        revision: 0,
    };
    s.create(&op).await.unwrap();
    s.update::<Operation, _>("op1", |o| {
        o.progress = 50;
        true
    })
    .await
    .unwrap();
    assert_eq!(s.must_read::<Operation>("op1").await.unwrap().progress, 50);
    s.create(&Tenant {
        id: "t1".into(),
        quota: Some(Quota {
            vcpus: 4,
            mem_mib: 1024,
            vms: 2,
        }),
        created_at_ms: 0,
    })
    .await
    .unwrap();
    assert_eq!(
        s.must_read::<Tenant>("t1")
            .await
            .unwrap()
            .quota
            .unwrap()
            .vms,
        2
    );
    s.create(&User {
        id: "ann".into(),
        tenant: "t1".into(),
        role: Role::Viewer,
        created_at_ms: 0,
    })
    .await
    .unwrap();
    let tok = Token {
        id: "abcd".into(),
        hash: "ff".repeat(32),
        user: "ann".into(),
        tenant: "t1".into(),
        role: Role::Viewer,
        host: None,
        created_at_ms: 0,
    };
    s.create(&tok).await.unwrap();
    let back = s.must_read::<Token>(&"ff".repeat(32)).await.unwrap();
    assert_eq!(back.user, "ann");
    assert_eq!(
        back.hash,
        "ff".repeat(32),
        "the hash is stored (it is only hidden from the API)"
    );
    assert_eq!(s.list_all::<User>().await.unwrap().len(), 1);
    // audit log: ordered, bounded
    for i in 0..5 {
        s.audit(&AuditEntry {
            id: String::new(),
            at_ms: 1000 + i,
            actor: "ann".into(),
            tenant: "t1".into(),
            method: "POST".into(),
            path: format!("/v1/vms/{i}"),
            status: 201,
        })
        .await
        .unwrap();
    }
    let (first, next) = s.page::<AuditEntry, _>(None, 3, |_| true).await.unwrap();
    assert_eq!(
        first.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        vec![1000, 1001, 1002],
        "oldest first"
    );
    let (rest, end) = s
        .page::<AuditEntry, _>(next.as_deref(), 3, |_| true)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|e| e.at_ms).collect::<Vec<_>>(),
        vec![1003, 1004]
    );
    assert_eq!(end, None, "the last page says so");
    // A filtered page still fills up, and continues after the last item it kept.
    for i in 0..7 {
        s.create(&vm(
            &format!("p{i}"),
            if i % 2 == 0 { "even" } else { "odd" },
        ))
        .await
        .unwrap();
    }
    let even = |v: &Vm| v.tenant == "even";
    let (p1, c1) = s.page::<Vm, _>(None, 2, even).await.unwrap();
    let (p2, c2) = s.page::<Vm, _>(c1.as_deref(), 2, even).await.unwrap();
    let ids: Vec<_> = p1.iter().chain(&p2).map(|v| v.id.as_str()).collect();
    assert_eq!(ids, vec!["p0", "p2", "p4", "p6"]);
    assert_eq!(c2, None);
    for i in 0..7 {
        s.remove::<Vm>(&format!("p{i}")).await.unwrap();
    }
    // Tokens continue from their public id, never their hash.
    let (toks, _) = s.page::<Token, _>(None, 1, |_| true).await.unwrap();
    assert_eq!(toks.len(), 1);
    // If-Match: an update at a stale revision changes nothing.
    let at = s.must_read::<Vm>("a").await.unwrap().revision;
    assert!(matches!(
        s.update_at::<Vm, _>("a", Some(at - 1), |_| true).await,
        Err(StoreError::Stale { .. })
    ));
    s.update_at::<Vm, _>("a", Some(at), |v| {
        v.desired = DesiredState::Stopped;
        true
    })
    .await
    .unwrap();
    // The log: revisions in order, read from one on, watched as it grows.
    let r1 = s.append("log/", b"one".to_vec()).await.unwrap();
    let r2 = s.append("log/", b"two".to_vec()).await.unwrap();
    assert!(r2 > r1);
    let after = s.log_since("log/", r1, 10).await.unwrap();
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].1.value, b"two");
    let mut w = store.clone().watch_log("log/", Some(0)).await;
    let mut seen = vec![];
    for _ in 0..2 {
        seen.push(w.next().await.unwrap().unwrap().value);
    }
    let r3 = s.append("log/", b"three".to_vec()).await.unwrap();
    let live = w.next().await.unwrap().unwrap();
    assert_eq!((live.value.as_slice(), live.revision), (&b"three"[..], r3));
    assert_eq!(seen, vec![b"one".to_vec(), b"two".to_vec()]);
    let mut fresh = store.clone().watch_log("log/", None).await;
    s.append("log/", b"four".to_vec()).await.unwrap();
    let next = tokio::time::timeout(std::time::Duration::from_secs(20), fresh.next()).await;
    assert_eq!(
        next.expect("an entry appended after the watch started is in it")
            .unwrap()
            .unwrap()
            .value,
        b"four",
        "only new ones"
    );
    // Prefixes do not leak into each other: "vms/" is not "vmsx/".
    s.put("vmsx/1", b"{}".to_vec(), Expect::Any).await.unwrap();
    assert_eq!(s.list_all::<Vm>().await.unwrap().len(), 1);

    // Concurrent read-modify-write loses no update.
    s.create(&host("counter")).await.unwrap();
    let mut tasks = vec![];
    for _ in 0..8 {
        let st = store.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                st.update::<Host, _>("counter", |h| {
                    h.allocated.vcpus += 1;
                    true
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        s.must_read::<Host>("counter")
            .await
            .unwrap()
            .allocated
            .vcpus,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_suite_passes_on_sqlite() {
    let tmp = nova_tests::TempDir::new();
    let dir = tmp.path();
    let store: DynStore = Arc::new(sqlite::SqliteStore::open(&dir.join("state.db")).unwrap());
    run(store).await;
    // Reopening the file keeps everything.
    let again = sqlite::SqliteStore::open(&dir.join("state.db")).unwrap();
    assert!(again.read::<Vm>("a").await.unwrap().is_some());
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn same_suite_passes_on_etcd() {
    let Some(etcd) = nova_tests::etcd::Etcd::start() else {
        return;
    };
    let store: DynStore = Arc::new(
        etcd::EtcdStore::connect(
            std::slice::from_ref(&etcd.url),
            "suite/",
            &EtcdOptions::default(),
        )
        .await
        .unwrap(),
    );
    run(store).await;
}
