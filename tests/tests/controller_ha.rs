//! Several controllers on one etcd: one leads (through etcd's election API); killing
//! it moves leadership in under 5 s and loses no acknowledged write; a leader that
//! shuts down cleanly resigns, and one that follows serves the event stream too.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nova_controller_api::VmSpec;
use nova_tests::controller::*;
use nova_tests::TempDir;

fn spec(name: &str) -> VmSpec {
    serde_json::from_value(serde_json::json!({"name": name, "kernel": "/k", "start": false}))
        .unwrap()
}

fn cluster(etcd: &Etcd, d: &TempDir, n: usize) -> Vec<Controller> {
    // The first bootstraps the cluster (admin and join tokens); the others share them.
    (1..=n)
        .map(|i| {
            Controller::start(
                d.path(),
                Opts {
                    store: Some(format!("etcd:{}", etcd.url)),
                    node: format!("c{i}"),
                    ..Opts::default()
                },
            )
        })
        .collect()
}

fn the_leader(ctls: &[Controller]) -> usize {
    wait_for(10, "one leader", || {
        let l: Vec<usize> = (0..ctls.len()).filter(|&i| ctls[i].leads()).collect();
        (l.len() == 1).then(|| l[0])
    })
}

#[test]
fn leadership_moves_when_the_leader_dies() {
    let Some(etcd) = Etcd::start() else { return };
    let d = TempDir::new();
    let mut ctls = cluster(&etcd, &d, 3);
    let leader = the_leader(&ctls);

    // Writers through every controller, recording what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = vec![];
    for (w, c) in ctls.iter().enumerate() {
        let (acked, stop, api) = (acked.clone(), stop.clone(), c.api.clone());
        writers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                match block_on(api.create_vm(&spec(&format!("w{w}-{n}")), None)) {
                    Ok(v) => acked.lock().unwrap().push(v.id),
                    // A killed controller refuses connections; that is no write.
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(700));
    let killed = Instant::now();
    ctls[leader].kill();
    let (next, took) = wait_for(10, "a new leader", || {
        (0..3)
            .filter(|&i| i != leader)
            .find(|&i| ctls[i].leads())
            .map(|i| (i, killed.elapsed()))
    });
    eprintln!(
        "leadership moved from {} to {} in {:?}",
        ctls[leader].node, ctls[next].node, took
    );
    assert!(
        took < Duration::from_secs(5),
        "leadership took {took:?} to move"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        w.join().unwrap();
    }
    // Exactly one leader, and every acknowledged write is there.
    let leaders = (0..3).filter(|&i| i != leader && ctls[i].leads()).count();
    assert_eq!(leaders, 1);
    let stored: Vec<String> = block_on(ctls[next].api.vms())
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}

#[test]
fn a_leader_that_shuts_down_resigns_at_once() {
    let Some(etcd) = Etcd::start() else { return };
    let d = TempDir::new();
    let mut ctls = cluster(&etcd, &d, 2);
    let leader = the_leader(&ctls);
    let other = 1 - leader;
    ctls[leader].stop();
    let stopped = Instant::now();
    wait_for(10, "the other to lead", || {
        ctls[other].leads().then_some(())
    });
    // Well under the lease's 2 s TTL: it resigned, nobody waited for the lease.
    eprintln!("handed over in {:?}", stopped.elapsed());
    assert!(
        ctls[leader].log().contains("resigned leadership"),
        "{}",
        ctls[leader].log()
    );
}

#[test]
fn every_controller_serves_the_event_stream_not_only_the_leader() {
    let Some(etcd) = Etcd::start() else { return };
    let d = TempDir::new();
    let ctls = cluster(&etcd, &d, 2);
    let leader = the_leader(&ctls);
    let follower = &ctls[1 - leader];
    let mut on_follower = EventStream::open(&follower.url, &follower.admin);
    // A change made through the leader, and one the leader's loops make (placement),
    // both reach the follower's subscribers.
    let h = register_host(&ctls[leader], "h1", "http://127.0.0.1:9", 8, 8192);
    heartbeat(&ctls[leader], "h1", &h, 8, 8192).unwrap();
    let mut s = spec("web");
    s.start = true;
    let id = block_on(ctls[leader].api.create_vm(&s, None)).unwrap().id;
    let created = on_follower.until("vm.created", &id, 10);
    let placed = on_follower.until("vm.placed", &id, 10);
    assert!(placed.revision > created.revision);
}
