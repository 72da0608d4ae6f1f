//! The event stream is a log with revisions: a client that reconnects with the last
//! revision it saw gets every event after it exactly once, even across a controller
//! restart in between.

use std::collections::BTreeSet;
use std::time::Duration;

use nova_tests::controller::*;
use nova_tests::TempDir;

use nova_tests::controller::stopped_spec as spec;

/// Every event the stream has now, until it is quiet.
fn drain(s: &mut EventStream) -> Vec<nova_controller_api::Event> {
    let mut out = vec![];
    while let Some(e) = s.next(Duration::from_millis(800)) {
        out.push(e);
    }
    out
}

#[test]
fn a_stream_resumed_after_a_controller_restart_loses_and_repeats_nothing() {
    let d = TempDir::new();
    let mut c = Controller::sqlite(d.path());
    let mut s = EventStream::since(&c.url, &c.admin, Some(0)).unwrap();
    let before: Vec<String> = (0..3)
        .map(|i| {
            block_on(c.api.create_vm(&spec(&format!("a{i}")), None))
                .unwrap()
                .id
        })
        .collect();
    let first = drain(&mut s);
    let last = s.last;
    assert!(first.iter().all(|e| e.revision > 0));
    for id in &before {
        assert!(
            first.iter().any(|e| e.kind == "vm.created" && &e.id == id),
            "{id}"
        );
    }
    // The controller goes away; changes happen while nobody listens.
    c.kill();
    let c = Controller::sqlite(d.path());
    let during: Vec<String> = (0..3)
        .map(|i| {
            block_on(c.api.create_vm(&spec(&format!("b{i}")), None))
                .unwrap()
                .id
        })
        .collect();
    // Resumed from the last revision seen: what happened since, then live events.
    let mut s = EventStream::since(&c.url, &c.admin, Some(last)).unwrap();
    let after = block_on(c.api.create_vm(&spec("c0"), None)).unwrap().id;
    let second = drain(&mut s);
    let revs: Vec<u64> = second.iter().map(|e| e.revision).collect();
    assert!(revs.windows(2).all(|w| w[0] < w[1]), "in order: {revs:?}");
    assert!(
        revs.iter().all(|&r| r > last),
        "nothing repeated: {revs:?} after {last}"
    );
    let created: Vec<&str> = second
        .iter()
        .filter(|e| e.kind == "vm.created")
        .map(|e| e.id.as_str())
        .collect();
    let mut want: Vec<&str> = during.iter().map(String::as_str).collect();
    want.push(&after);
    assert_eq!(created, want, "nothing lost, nothing twice");
    // The whole log from the start is the two halves, with no revision twice.
    let mut all = EventStream::since(&c.url, &c.admin, Some(0)).unwrap();
    let whole: Vec<u64> = drain(&mut all).iter().map(|e| e.revision).collect();
    let halves: BTreeSet<u64> = first.iter().chain(&second).map(|e| e.revision).collect();
    assert_eq!(whole.iter().copied().collect::<BTreeSet<_>>(), halves);
    assert_eq!(whole.len(), halves.len());
}

#[test]
fn a_stream_resumes_on_another_controller_of_an_etcd_cluster() {
    let Some(etcd) = Etcd::start() else { return };
    let d = TempDir::new();
    let opts = |n: &str| Opts {
        store: Some(format!("etcd:{}", etcd.url)),
        node: n.into(),
        ..Opts::default()
    };
    let mut c1 = Controller::start(d.path(), opts("c1"));
    let c2 = Controller::start(d.path(), opts("c2"));
    let mut s = EventStream::since(&c1.url, &c1.admin, Some(0)).unwrap();
    let a = block_on(c1.api.create_vm(&spec("a"), None)).unwrap().id;
    s.until("vm.created", &a, 10);
    let last = s.last;
    c1.kill();
    let b = block_on(c2.api.create_vm(&spec("b"), None)).unwrap().id;
    let mut s = EventStream::since(&c2.url, &c2.admin, Some(last)).unwrap();
    let got = drain(&mut s);
    assert!(got.iter().all(|e| e.revision > last), "{got:?}");
    assert_eq!(
        got.iter()
            .filter(|e| e.kind == "vm.created")
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        vec![b.as_str()]
    );
}

#[test]
fn a_vms_history_lists_its_own_events_and_its_operations_only_to_its_tenant() {
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let mine = block_on(c.api.create_vm(&spec("hist"), None)).unwrap().id;
    let other = block_on(c.api.create_vm(&spec("other"), None)).unwrap().id;
    block_on(c.api.start_vm(&mine)).unwrap();
    block_on(c.api.stop_vm(&mine)).unwrap();

    let all = block_on(c.api.vm_events(&mine)).unwrap();
    let kinds: Vec<&str> = all.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"vm.created"), "{kinds:?}");
    assert!(all.iter().all(|e| e.id == mine), "{all:?}");
    assert!(
        all.windows(2).all(|w| w[0].revision < w[1].revision),
        "oldest first"
    );
    assert!(kinds.len() >= 3, "created, started, stopped: {kinds:?}");

    // Pages: one event at a time, the same events in the same order.
    let mut q = nova_controller_api::ListQuery {
        limit: Some(1),
        continue_token: None,
    };
    let mut paged = vec![];
    loop {
        let p = block_on(c.api.vm_events_page(&mine, &q)).unwrap();
        assert!(p.items.len() <= 1);
        paged.extend(p.items);
        match p.continue_token {
            Some(t) => q.continue_token = Some(t),
            None => break,
        }
    }
    assert_eq!(paged, all);

    // Another tenant sees no such VM; the other VM's history is its own.
    let stranger = c.as_(&c.token_for("acme", "eve", nova_controller_api::Role::Admin));
    let e = block_on(stranger.vm_events(&mine)).unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let theirs = block_on(c.api.vm_events(&other)).unwrap();
    assert!(theirs.iter().all(|e| e.id == other) && !theirs.is_empty());
    let bad = block_on(c.api.vm_events_page(
        &mine,
        &nova_controller_api::ListQuery {
            limit: Some(0),
            continue_token: None,
        },
    ))
    .unwrap_err();
    assert_eq!(bad.body().and_then(|b| b.field.as_deref()), Some("limit"));
}
