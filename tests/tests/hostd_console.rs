//! hostd serves each VM's serial console live: `GET /v1/vms/{id}/console/ws`, a
//! WebSocket behind the host's token, bridged to the VMM's console socket. The
//! client gets the backlog and new output; what it sends reaches the guest (the
//! test guest's `echo` workload answers); no token, no console.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use nova_tests::hostd::{guest, Hostd, Opts};
use nova_tests::require_kvm;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const BOOT: Duration = Duration::from_secs(30);

fn open(h: &Hostd, id: &str, token: Option<&str>) -> Result<WebSocket<TcpStream>, u16> {
    let mut rq = format!("ws://{}/v1/vms/{id}/console/ws", h.addr)
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        rq.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let s = TcpStream::connect(h.addr).unwrap();
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

/// Reads binary messages until their bytes contain `needle`.
fn read_until(ws: &mut WebSocket<TcpStream>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = Vec::new();
    while Instant::now() < deadline {
        if String::from_utf8_lossy(&got).contains(needle) {
            return String::from_utf8_lossy(&got).into_owned();
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
    panic!("no `{needle}`: {}", String::from_utf8_lossy(&got));
}

#[test]
fn hostd_serves_a_vms_console_as_a_websocket_both_ways() {
    if !require_kvm() {
        return;
    }
    let h = Hostd::start(Opts::default());
    h.create_vm(&guest("c", "echo"));
    h.wait_console("c", "NOVA-BOOTED", BOOT);

    assert_eq!(open(&h, "c", None).err(), Some(401), "no token, no console");
    assert_eq!(open(&h, "c", Some("wrong")).err(), Some(401));
    assert_eq!(open(&h, "nope", Some(&h.token)).err(), Some(404));

    let mut a = open(&h, "c", Some(&h.token)).unwrap();
    let mut b = open(&h, "c", Some(&h.token)).unwrap();
    read_until(&mut a, "NOVA-BOOTED");
    read_until(&mut b, "NOVA-BOOTED");
    a.send(Message::Binary(b"over the socket\n".to_vec().into()))
        .unwrap();
    read_until(&mut a, "NOVA-ECHO text=over the socket");
    read_until(&mut b, "NOVA-ECHO text=over the socket");
    // The console log has it as well.
    h.wait_console("c", "NOVA-ECHO text=over the socket", BOOT);
}
