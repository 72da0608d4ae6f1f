//! hostd joins a controller: it registers with the join token, is given its own
//! credentials, and heartbeats with its capacity and VMs.

use std::process::Command;
use std::time::{Duration, Instant};

use nova_tests::hostd::{free_port, http, Hostd, Opts};
use nova_tests::{binary, Console, TempDir};

#[test]
fn hostd_registers_with_the_controller_and_heartbeats() {
    let dir = TempDir::new();
    let port = free_port();
    let mut cmd = Command::new(binary("nova-controller"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--heartbeat-ms",
        "300",
        "--store",
    ])
    .arg(format!("sqlite:{}", dir.join("c.db").display()))
    .arg("--admin-token-file")
    .arg(dir.join("admin"))
    .arg("--join-token-file")
    .arg(dir.join("join"));
    let ctl = Console::spawn(cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("join").exists() || !dir.join("admin").exists() {
        assert!(
            Instant::now() < deadline,
            "the controller made no tokens: {}",
            ctl.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let join = dir.join("join");
    let h = Hostd::start(Opts {
        args: vec![
            "--controller".into(),
            format!("http://127.0.0.1:{port}"),
            "--join-token-file".into(),
            join.to_string_lossy().into_owned(),
        ],
        ..Opts::default()
    });
    let host_id = h.get("/v1/health")["host_id"].as_str().unwrap().to_string();
    let admin = std::fs::read_to_string(dir.join("admin"))
        .unwrap()
        .trim()
        .to_string();
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let get_hosts = || -> serde_json::Value {
        http(addr, "GET", "/v1/hosts", None, Some(&admin))
            .map(|(_, v)| v)
            .unwrap_or(serde_json::Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        let hosts = get_hosts();
        if let Some(hh) = hosts
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == host_id.as_str()))
        {
            break hh.clone();
        }
        assert!(
            Instant::now() < deadline,
            "hostd did not register: {hosts}\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first["url"], format!("http://{}", h.addr), "{first}");
    assert_eq!(first["state"], "ready");
    let hb0 = first["last_heartbeat_ms"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let hosts = get_hosts();
        let hb = hosts
            .as_array()
            .and_then(|a| a.iter().find(|x| x["id"] == host_id.as_str()))
            .map(|x| x["last_heartbeat_ms"].as_u64().unwrap());
        if hb.is_some_and(|t| t > hb0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no heartbeat after registering: {hosts}\n{}",
            h.stderr()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !h.stderr().contains("heartbeat:"),
        "heartbeats were refused: {}",
        h.stderr()
    );
    drop(ctl);
}
