//! hostd joins a controller: it registers with the join token, is given its own
//! credentials, and heartbeats with its capacity and VMs.

use std::process::Command;
use std::time::Duration;

use nova_controller_api::HostState;
use nova_tests::controller::{block_on, client};
use nova_tests::hostd::{free_port, Hostd, Opts};
use nova_tests::{binary, wait_for, Console, TempDir};

#[test]
fn hostd_registers_with_the_controller_and_heartbeats() {
    let dir = TempDir::new();
    let port = free_port();
    let mut cmd = Command::new(binary("nova-controller"));
    cmd.args([
        "--insecure-http",
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
    let url = format!("http://127.0.0.1:{port}");
    wait_for(20, "the controller to answer", || {
        block_on(client(&url, None).health()).ok()
    });
    let join = dir.join("join");
    let h = Hostd::start(Opts {
        args: vec![
            "--controller".into(),
            url.clone(),
            "--join-token-file".into(),
            join.to_string_lossy().into_owned(),
        ],
        ..Opts::default()
    });
    let hostd = nova_hostd_api::HostdClient::new(
        &format!("http://{}", h.addr),
        &h.token,
        &Default::default(),
    )
    .unwrap();
    let host_id = block_on(hostd.health()).unwrap().host_id;
    let admin = std::fs::read_to_string(dir.join("admin")).unwrap();
    let api = client(&url, Some(admin.trim()));
    let host = |id: &str| {
        block_on(api.hosts())
            .unwrap_or_default()
            .into_iter()
            .find(|x| x.id == id)
    };
    let first = wait_for(20, "hostd to register", || host(&host_id));
    assert_eq!(first.url, format!("http://{}", h.addr), "{first:?}");
    assert_eq!(first.state, HostState::Ready);
    wait_for(10, "a heartbeat after registering", || {
        host(&host_id).filter(|x| x.last_heartbeat_ms > first.last_heartbeat_ms)
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        !h.stderr().contains("heartbeat:"),
        "heartbeats were refused: {}",
        h.stderr()
    );
    drop(ctl);
}
