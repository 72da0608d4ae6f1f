//! Several controllers on one etcd: one leads (through an etcd lease); killing it
//! moves leadership in under 5 s and loses no acknowledged write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nova_tests::controller::*;
use nova_tests::TempDir;
use serde_json::json;

fn leads(c: &str) -> bool {
    std::net::TcpStream::connect(c.trim_start_matches("http://")).is_ok()
        && call(c, None, "GET", "/v1/leader", None).body["leader"] == true
}

#[test]
fn leadership_moves_when_the_leader_dies() {
    let Some(etcd) = Etcd::start() else { return };
    let d = TempDir::new();
    let opts = |n: &str| Opts {
        store: Some(format!("etcd:{}", etcd.url)),
        node: n.into(),
        ..Opts::default()
    };
    // The first bootstraps the cluster (admin and join tokens); the others share them.
    let mut ctls = vec![Controller::start(d.path(), opts("c1"))];
    ctls.push(Controller::start(d.path(), opts("c2")));
    ctls.push(Controller::start(d.path(), opts("c3")));
    let admin = ctls[0].admin.clone();
    let leader = wait_for(10, "a leader", || {
        let l: Vec<usize> = (0..3).filter(|&i| leads(&ctls[i].url)).collect();
        (l.len() == 1).then(|| l[0])
    });

    // Writers through every controller, recording what was acknowledged.
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let urls: Vec<String> = ctls.iter().map(|c| c.url.clone()).collect();
    let mut writers = vec![];
    for (w, url) in urls.iter().enumerate() {
        let (acked, stop, url, admin) = (acked.clone(), stop.clone(), url.clone(), admin.clone());
        writers.push(std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                if std::net::TcpStream::connect(url.trim_start_matches("http://")).is_err() {
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                let a = call(
                    &url,
                    Some(&admin),
                    "POST",
                    "/v1/vms",
                    Some(json!({"name": format!("w{w}-{n}"), "image": "/k", "start": false})),
                );
                if a.status == 201 {
                    acked
                        .lock()
                        .unwrap()
                        .push(a.body["id"].as_str().unwrap().to_string());
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
            .find(|&i| leads(&ctls[i].url))
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
    let leaders = (0..3)
        .filter(|&i| i != leader && leads(&ctls[i].url))
        .count();
    assert_eq!(leaders, 1);
    let stored: Vec<String> = ctls[next]
        .admin("GET", "/v1/vms", None)
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect();
    let acked = acked.lock().unwrap();
    assert!(acked.len() > 20, "only {} writes acknowledged", acked.len());
    let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(id)).collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
}
