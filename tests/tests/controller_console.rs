//! A VM's serial console through the controller: `GET /v1/vms/{id}/console/ws` is
//! proxied to the hostd running the VM (over hostd's own authenticated console
//! WebSocket). The test guest's `echo` workload answers what is typed; a viewer sees
//! the output but its typing never reaches the guest; another tenant's VM is 404; no
//! token, 401. `novactl vm console` attaches a (piped) terminal and Ctrl-] leaves.
//! With TLS everywhere (an https controller, an https hostd), the typed client's
//! console crosses both hops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nova_controller_api::{HostState, Role, VmSpec};
use nova_tests::controller::{block_on, wait_for, Controller};
use nova_tests::hostd::hostd_for;
use nova_tests::hostd::testguest;
use nova_tests::{binary, require_kvm, TempDir};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

fn echo_guest(name: &str) -> VmSpec {
    VmSpec {
        name: name.into(),
        vcpus: 1,
        mem_mib: 64,
        kernel: testguest().display().to_string(),
        initrd: None,
        cmdline: Some("nova.workload=echo".into()),
        disks: vec![],
        nics: vec![],
        labels: Default::default(),
        affinity: Default::default(),
        on_host_failure: Default::default(),
        start: true,
        cloud_init: None,
    }
}

/// Opens the controller's console WebSocket of `id` (a bearer header when `token`).
fn open(c: &Controller, id: &str, token: Option<&str>) -> Result<WebSocket<TcpStream>, u16> {
    let addr = c.url.strip_prefix("http://").unwrap();
    let mut rq = format!("ws://{addr}/v1/vms/{id}/console/ws")
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        rq.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    match tungstenite::client(rq, s) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => {
            Err(r.status().as_u16())
        }
        Err(e) => panic!("console handshake: {e}"),
    }
}

/// Reads binary messages into `got` until it contains `needle`.
fn read_until(ws: &mut WebSocket<TcpStream>, got: &mut Vec<u8>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if String::from_utf8_lossy(got).contains(needle) {
            return;
        }
        match ws.read() {
            Ok(Message::Binary(b)) => got.extend_from_slice(&b),
            Ok(Message::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => panic!("console socket: {e}"),
        }
    }
    panic!("no `{needle}`: {}", String::from_utf8_lossy(got));
}

#[test]
fn the_console_through_the_controller_echoes_for_operators_and_only_shows_viewers() {
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let c = Controller::sqlite(d.path());
    let _h = hostd_for(&c);
    wait_for(30, "the host to be ready", || {
        let hosts = block_on(c.api.hosts()).ok()?;
        hosts
            .iter()
            .any(|h| h.state == HostState::Ready)
            .then_some(())
    });
    let op = c.token_for("acme", "ops", Role::Operator);
    let viewer = c.token_for("acme", "watcher", Role::Viewer);
    let stranger = c.token_for("other", "mallory", Role::Admin);
    // A host path for the kernel: only the system tenant may name one, for acme.
    let id = block_on(c.api.create_vm_in(Some("acme"), &echo_guest("web"), None))
        .unwrap()
        .id;
    wait_for(40, "the VM to run", || {
        let v = block_on(c.api.vm(&id)).ok()?;
        (v.observed.as_ref()?.state == "running").then_some(())
    });

    assert_eq!(open(&c, &id, None).err(), Some(401), "no token, no console");
    assert_eq!(
        open(&c, &id, Some(&stranger)).err(),
        Some(404),
        "another tenant's VM does not exist for it"
    );
    assert_eq!(open(&c, "vm-nope", Some(&op)).err(), Some(404));

    let mut ops = open(&c, &id, Some(&op)).unwrap();
    let mut seen = Vec::new();
    read_until(&mut ops, &mut seen, "NOVA-BOOTED");
    ops.send(Message::Binary(b"via the controller\n".to_vec().into()))
        .unwrap();
    read_until(&mut ops, &mut seen, "NOVA-ECHO text=via the controller");

    // The viewer sees the same console, backlog included, but cannot type into it.
    let mut view = open(&c, &id, Some(&viewer)).unwrap();
    let mut watched = Vec::new();
    read_until(&mut view, &mut watched, "NOVA-ECHO text=via the controller");
    view.send(Message::Binary(b"from a viewer\n".to_vec().into()))
        .unwrap();
    view.send(Message::Text("also from a viewer\r".into()))
        .unwrap();
    // Whatever the operator types after it arrives after the viewer's would have.
    ops.send(Message::Text("after the viewer\r".into()))
        .unwrap();
    read_until(&mut ops, &mut seen, "NOVA-ECHO text=after the viewer");
    read_until(&mut view, &mut watched, "NOVA-ECHO text=after the viewer");
    for out in [&seen, &watched] {
        let text = String::from_utf8_lossy(out);
        assert!(
            !text.contains("text=from a viewer"),
            "a viewer's input reached the guest: {text}"
        );
        assert!(!text.contains("text=also from a viewer"), "{text}");
    }

    // novactl attaches a terminal (piped here), types, and leaves with Ctrl-].
    let mut child = Command::new(binary("novactl"))
        .args(["vm", "console", &id])
        .env("NOVA_URL", &c.url)
        .env("NOVA_TOKEN", &op)
        .env("HOME", d.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut stdout = child.stdout.take().unwrap();
    let o = out.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            o.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let mut stdin = child.stdin.take().unwrap();
    wait_for(20, "novactl to print the backlog", || {
        String::from_utf8_lossy(&out.lock().unwrap())
            .contains("NOVA-BOOTED")
            .then_some(())
    });
    stdin.write_all(b"typed in novactl\r").unwrap();
    wait_for(20, "the guest's echo in novactl's output", || {
        String::from_utf8_lossy(&out.lock().unwrap())
            .contains("NOVA-ECHO text=typed in novactl")
            .then_some(())
    });
    stdin.write_all(&[0x1d]).unwrap();
    let status = wait_for(10, "novactl to leave on Ctrl-]", || {
        child.try_wait().unwrap()
    });
    reader.join().unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "novactl: {err}");
    assert!(
        err.contains("Ctrl-] leaves") && err.contains("[left]"),
        "{err}"
    );
    // The operator's session saw the same echo: one console, many readers.
    read_until(&mut ops, &mut seen, "NOVA-ECHO text=typed in novactl");
    // hostd lets its VMMs outlive it: delete the VM before hostd goes.
    block_on(c.api.delete_vm(&id)).unwrap();
    wait_for(30, "the VM to be gone", || {
        block_on(c.api.vm(&id)).err().filter(|e| e.is_not_found())
    });
}

/// `nova-controller dev-ca DIR`: a development CA and a server certificate.
fn dev_ca(dir: &std::path::Path) {
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

#[test]
fn the_console_reaches_an_https_hostd_through_an_https_controller() {
    use futures_util::{SinkExt, StreamExt};
    use nova_http::websocket::Message as M;
    if !require_kvm() {
        return;
    }
    let d = TempDir::new();
    let ca = d.join("ca");
    dev_ca(&ca);
    let tls = |extra: &[String]| {
        let mut a = vec![
            "--tls-cert".to_string(),
            ca.join("server.pem").display().to_string(),
            "--tls-key".into(),
            ca.join("server.key").display().to_string(),
        ];
        a.extend_from_slice(extra);
        a
    };
    let c = Controller::start(
        d.path(),
        nova_tests::controller::Opts {
            args: tls(&["--hostd-ca".into(), ca.join("ca.pem").display().to_string()]),
            ca: Some(ca.join("ca.pem")),
            ..Default::default()
        },
    );
    let hdir = TempDir::new();
    std::fs::write(hdir.join("token"), "nova-test-token-0123456789abcdef").unwrap();
    let mut cmd = Command::new(binary("nova-hostd"));
    cmd.args([
        "--listen",
        &format!("127.0.0.1:{}", nova_tests::free_port()),
    ])
    .arg("--data-dir")
    .arg(hdir.join("data"))
    .arg("--token-file")
    .arg(hdir.join("token"))
    .arg("--vmm-bin")
    .arg(binary("nova-vmm"))
    .args(["--image-root", "/"])
    .args(tls(&[
        "--controller".into(),
        c.url.clone(),
        "--join-token-file".into(),
        d.join("join.token").display().to_string(),
        "--controller-ca".into(),
        ca.join("ca.pem").display().to_string(),
    ]));
    let _hostd = nova_tests::Console::spawn(cmd);
    let host = wait_for(30, "hostd to register over TLS", || {
        block_on(c.api.hosts()).ok()?.into_iter().next()
    });
    assert!(host.url.starts_with("https://"), "{}", host.url);
    let id = block_on(c.api.create_vm(&echo_guest("tls"), None))
        .unwrap()
        .id;
    wait_for(40, "the VM to run", || {
        let v = block_on(c.api.vm(&id)).ok()?;
        (v.observed.as_ref()?.state == "running").then_some(())
    });
    // The typed client (novactl's): wss:// to the controller, which opens wss:// to hostd.
    let got = block_on(async {
        let mut ws = c.api.console_ws(&id).await.unwrap();
        ws.send(M::Binary(b"over two tls hops\n".to_vec().into()))
            .await
            .unwrap();
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !String::from_utf8_lossy(&got).contains("NOVA-ECHO text=over two tls hops") {
            match tokio::time::timeout_at(deadline, ws.next()).await {
                Ok(Some(Ok(M::Binary(b)))) => got.extend_from_slice(&b),
                Ok(Some(Ok(_))) => {}
                other => panic!("{other:?}: {}", String::from_utf8_lossy(&got)),
            }
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    assert!(got.contains("NOVA-BOOTED"), "the backlog came first: {got}");
    // hostd lets its VMMs outlive it: delete the VM before hostd goes.
    block_on(c.api.delete_vm(&id)).unwrap();
    wait_for(30, "the VM to be gone", || {
        block_on(c.api.vm(&id)).err().filter(|e| e.is_not_found())
    });
}
