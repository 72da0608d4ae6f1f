//! Cross-cluster live migration end to end (over 500 lines: four stories on one
//! two-cluster fixture). Two clusters, alpha and beta, each a real controller with
//! one hostd in its own network namespace, on one bridge shaped to 100 Mbit/s each
//! way (`tc ... tbf`). `novactl vm migrate --cluster beta` moves a VM running the
//! test guest's counter: beta's admission and scheduler pick its host, the source
//! hostd prepares it through beta's gateway for that migration, and the VMMs stream
//! over TLS with alpha's bandwidth cap and compression. The counter is continuous,
//! beta lists the VM (same id and name, an event naming its origin), alpha does
//! not, and both audited it. When beta refuses (trust policy, admission, down), or
//! the link to its host is cut or its hostd killed mid-stream, the VM runs on in
//! alpha's hostd, untouched, and beta holds nothing of it; alpha restarted mid-move
//! ends it by its hostd's word.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use nova_controller_api::{
    Compression, HostState, IdentityPatch, IncomingVm, JoinRequest, MigrateBody, MigrationParams,
    MigrationPolicy, MigrationResult, NewFederatedToken, OpState, PeerPolicy, Role, TrustPolicy,
    TrustRule, Vm, VmSpec,
};
use nova_tests::controller::{block_on, client, raw, stopped_spec, wait_for, Controller, Opts};
use nova_tests::hostd::{testguest, Bridged, Hostd};
use nova_tests::net::require_netns;
use nova_tests::{binary, require, require_kvm, which, TempDir};
use sha2::{Digest, Sha256};

/// The cap alpha's migration policy sets, below the link's 100 Mbit/s.
const CAP_MBIT: u64 = 80;

/// Two clusters on a shaped bridge. Fields drop in order: hosts, controllers, then
/// the namespaces and the bridge.
struct Clusters {
    hosts: [Hostd; 2],
    alpha: Controller,
    beta: Controller,
    /// Host ids: alpha's, beta's.
    ids: [String; 2],
    _net: Bridged,
}

/// A controller on the bridge's address, named `name` in the federation.
fn cluster(dir: &Path, name: &str, net: &Bridged) -> Controller {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let c = Controller::start(
        &d,
        Opts {
            ip: Some(net.root_ip()),
            ..Default::default()
        },
    );
    block_on(c.api.set_identity(&IdentityPatch {
        name: Some(name.into()),
        region: None,
    }))
    .unwrap();
    c
}

/// Shapes both namespaces' links to 100 Mbit/s (tbf: netem is not in this kernel).
fn shape(net: &Bridged) {
    for (ns, dev) in net.ns.iter().zip(&net.dev) {
        let out = ns.run(&[
            "tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", "100mbit", "burst", "128kb",
            "latency", "100ms",
        ]);
        assert!(
            out.status.success(),
            "tc tbf on {dev}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let show = ns.run(&["tc", "qdisc", "show", "dev", dev]);
        let text = String::from_utf8_lossy(&show.stdout);
        assert!(text.contains("tbf") && text.contains("100Mbit"), "{text}");
    }
}

/// Alpha and beta, peered (alpha joined beta), beta honouring `trust` of alpha's
/// users; each with its hostd ready; the test guest's kernel in alpha only (a
/// migration carries it).
fn clusters(d: &TempDir, trust: Vec<TrustRule>) -> Option<Clusters> {
    if !require_netns() || !require_kvm() || !require(which("tc"), "tc (iproute2) is not installed")
    {
        return None;
    }
    let net = Bridged::new();
    shape(&net);
    let alpha = cluster(d.path(), "alpha", &net);
    let beta = cluster(d.path(), "beta", &net);
    let joining = |c: &Controller| {
        vec![
            "--controller".to_string(),
            c.url.clone(),
            "--join-token-file".into(),
            c.dir.join("join.token").display().to_string(),
        ]
    };
    let hosts = [
        net.hostd(0, &joining(&alpha)),
        net.hostd(1, &joining(&beta)),
    ];
    let ids = [0, 1].map(|i| hosts[i].ok(hosts[i].api().host()).host_id);
    for c in [&alpha, &beta] {
        wait_for(30, "the host to register", || {
            block_on(c.api.hosts())
                .ok()?
                .iter()
                .any(|h| h.state == HostState::Ready)
                .then_some(())
        });
    }
    block_on(alpha.api.join_federation(&JoinRequest {
        peer_url: beta.url.clone(),
        peer_token: beta.admin.clone(),
        self_url: alpha.url.clone(),
        trust: TrustPolicy::default(),
        placement: true,
    }))
    .unwrap();
    let alpha_id = block_on(alpha.api.federation()).unwrap().cluster.cluster_id;
    block_on(beta.api.set_peer_policy(
        &alpha_id,
        &PeerPolicy {
            trust: TrustPolicy { rules: trust },
            placement: true,
        },
    ))
    .unwrap();
    let policy = MigrationPolicy {
        completion_timeout_s: 120,
        params: MigrationParams {
            bandwidth_mbit: Some(CAP_MBIT),
            compress: Compression::Zstd,
            ..Default::default()
        },
        ..Default::default()
    };
    block_on(alpha.api.set_migration_policy(&policy)).unwrap();
    Some(Clusters {
        hosts,
        alpha,
        beta,
        ids,
        _net: net,
    })
}

/// Alpha's system admins act as system admins in beta.
fn admins() -> Vec<TrustRule> {
    vec![TrustRule {
        remote_tenant: "system".into(),
        local_tenant: None,
        roles: vec![Role::Admin],
    }]
}

fn counter(name: &str) -> VmSpec {
    VmSpec {
        mem_mib: 64,
        // The counter, and 16 MiB of memory rewritten (and checked) at 4 MiB/s:
        // below the cap, so pre-copy converges.
        cmdline: Some("nova.workload=counter,dirty:16:4".into()),
        ..VmSpec::new(name, testguest().display().to_string())
    }
}

/// Creates a counter VM in alpha and waits for it to tick on alpha's host.
fn ticking_vm(c: &Clusters, name: &str) -> Vm {
    let vm = block_on(c.alpha.api.create_vm(&counter(name), None)).unwrap();
    wait_for(60, "the VM to run on alpha's host", || {
        block_on(c.alpha.api.vm(&vm.id))
            .ok()
            .filter(|v| v.observed.as_ref().is_some_and(|o| o.state == "running"))
    });
    // One whole pass of the dirtier: its 16 MiB are in use.
    c.hosts[0].wait_console(&vm.id, "NOVA-DIRTY", std::time::Duration::from_secs(60));
    vm
}

/// The console file of VM `id` on host `h`.
fn console_file(h: &Hostd, id: &str) -> PathBuf {
    h.data().join("vms").join(id).join("console.log")
}

/// The `NOVA-TICK` numbers of a console text, in order.
fn ticks(text: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("NOVA-TICK ")?.trim().parse().ok())
        .collect()
}

/// The counter went up by exactly one from each tick to the next.
fn assert_continuous(t: &[u64]) {
    assert!(t.len() > 10, "too few ticks: {}", t.len());
    for w in t.windows(2) {
        assert_eq!(w[1], w[0] + 1, "the counter went from {} to {}", w[0], w[1]);
    }
}

fn novactl(c: &Controller, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(binary("novactl"))
        .args(["--url", &c.url, "--token", &c.admin])
        .args(args)
        .env("HOME", c.dir.join("home"))
        .env_remove("NOVA_CONTEXT")
        .env_remove("NOVA_CONFIG")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_vm_moves_to_a_peer_cluster_over_a_shaped_link_with_its_counter_continuous() {
    let d = TempDir::new();
    let Some(c) = clusters(&d, admins()) else {
        return;
    };
    let vm = ticking_vm(&c, "traveller");
    let pid = c.hosts[0].ok(c.hosts[0].api().vm(&vm.id)).pid;
    // Held open, the source's console stays readable after its hostd lets the VM go.
    let mut src_console = std::fs::File::open(console_file(&c.hosts[0], &vm.id)).unwrap();

    let kernel = block_on(c.alpha.api.images()).unwrap().images;
    assert_eq!(kernel.len(), 1, "{kernel:?}");
    let kernel = kernel[0].id.clone();
    assert!(block_on(c.beta.api.images()).unwrap().images.is_empty());

    let (ok, out, err) = novactl(&c.alpha, &["vm", "migrate", &vm.id, "--cluster", "beta"]);
    assert!(ok, "novactl vm migrate --cluster beta: {out}\n{err}");
    assert!(err.contains("succeeded"), "progress output: {err}");

    // Beta lists the VM (same id and name, on its host, running); alpha does not.
    let there = wait_for(30, "beta to see the VM running", || {
        block_on(c.beta.api.vm(&vm.id))
            .ok()
            .filter(|v| v.migrating.is_none())
    });
    assert_eq!(there.spec.name, "traveller");
    // Its kernel came along (through beta's gateway), and beta knows it by content.
    assert_eq!(there.spec.kernel, kernel);
    let images = block_on(c.beta.api.images()).unwrap().images;
    assert!(images.iter().any(|i| i.id == kernel), "{images:?}");
    assert_eq!(there.tenant, "system");
    assert_eq!(there.host.as_deref(), Some(c.ids[1].as_str()));
    assert_eq!(
        there.created_at_ms, vm.created_at_ms,
        "its history follows it"
    );
    assert!(block_on(c.beta.api.vms())
        .unwrap()
        .iter()
        .any(|v| v.id == vm.id));
    assert!(!block_on(c.alpha.api.vms())
        .unwrap()
        .iter()
        .any(|v| v.id == vm.id));
    assert_eq!(
        nova_tests::controller::status(block_on(c.alpha.api.vm(&vm.id))),
        404
    );
    let (_, listed, _) = novactl(&c.beta, &["vm", "list"]);
    assert!(listed.contains(&vm.id), "{listed}");
    // Beta's host runs it; alpha's let it go.
    let on_b = c.hosts[1].ok(c.hosts[1].api().vm(&vm.id));
    assert_eq!(on_b.state, nova_hostd_api::VmState::Running, "{on_b:?}");
    assert_ne!(on_b.pid, pid);
    wait_for(30, "alpha's host to let the VM go", || {
        (!c.hosts[0].vm_ids().contains(&vm.id)).then_some(())
    });

    // The guest's counter: alpha's ticks up to the switch, then beta's, one by one.
    let first_there = c.hosts[1]
        .wait_console(&vm.id, "NOVA-TICK", std::time::Duration::from_secs(10))
        .trim()
        .to_string();
    let before: u64 = first_there
        .strip_prefix("NOVA-TICK ")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    wait_for(30, "more ticks on beta", || {
        let t = ticks(&std::fs::read_to_string(console_file(&c.hosts[1], &vm.id)).ok()?);
        (t.last().copied().unwrap_or(0) > before + 20).then_some(())
    });
    let mut text = String::new();
    src_console.read_to_string(&mut text).unwrap();
    let src_ticks = ticks(&text);
    let passes_before = text.lines().filter(|l| l.starts_with("NOVA-DIRTY")).count();
    text.push_str(&std::fs::read_to_string(console_file(&c.hosts[1], &vm.id)).unwrap());
    let all = ticks(&text);
    assert!(all.len() > src_ticks.len() + 20, "ticks on beta too");
    assert_continuous(&all);
    // The dirtier's checks of its memory pass on beta: every page arrived.
    let checked = wait_for(60, "a dirtier pass on beta", || {
        let t = std::fs::read_to_string(console_file(&c.hosts[1], &vm.id)).ok()?;
        t.lines()
            .filter(|l| l.starts_with("NOVA-DIRTY"))
            .nth(1)
            .map(str::to_string)
    });
    assert!(checked.contains("errors=0"), "{checked}");
    assert!(passes_before > 0, "a whole pass on alpha before the move");

    // The operation says where it went and what it cost; the policy's cap and
    // compression were the stream's.
    let ops = block_on(c.alpha.api.operations()).unwrap();
    let op = ops.iter().find(|o| o.target == vm.id).unwrap();
    assert_eq!(op.state, OpState::Succeeded, "{op:?}");
    let r: MigrationResult = serde_json::from_value(op.result.clone()).unwrap();
    assert_eq!(r.cluster.as_deref(), Some("beta"), "{r:?}");
    assert_eq!(
        (r.from.as_str(), r.to.as_str()),
        (c.ids[0].as_str(), c.ids[1].as_str())
    );
    assert!(r.downtime_ms.is_some() && r.total_ms.is_some(), "{r:?}");

    let m = c.hosts[0].ok(c.hosts[0].api().migrations()).migrations;
    let m = m.iter().find(|m| m.vm_id == vm.id).unwrap();
    let vmm = m.vmm.as_ref().unwrap();
    assert!(
        vmm.pages.sent > 4096 && vmm.pages.compressed == vmm.pages.sent,
        "zstd, every page: {:?}",
        vmm.pages
    );
    assert!(vmm.bytes_sent < vmm.pages.sent * 4096 / 4, "{vmm:?}");
    let fastest = vmm
        .round_log
        .iter()
        .map(|r| r.bandwidth_mbit)
        .fold(0.0, f64::max);
    assert!(
        fastest <= CAP_MBIT as f64 * 1.5,
        "a round at {fastest} Mbit/s over a {CAP_MBIT} Mbit/s cap"
    );
    // It went through beta's gateway, not to beta's hostd directly.
    assert!(
        m.peer.starts_with(&c.beta.url) && m.peer.contains("/hostd"),
        "{}",
        m.peer
    );

    // Beta's event log says where it came from; both clusters audited the move.
    let alpha_id = block_on(c.alpha.api.federation())
        .unwrap()
        .cluster
        .cluster_id;
    let events = block_on(c.beta.api.vm_events(&vm.id)).unwrap();
    let arrived = events
        .iter()
        .find(|e| e.kind == "vm.migrated_in")
        .unwrap_or_else(|| panic!("{events:?}"));
    assert_eq!(arrived.data["from_cluster"], alpha_id.as_str());
    assert_eq!(arrived.data["from_host"], c.ids[0].as_str());
    assert_eq!(arrived.data["operation"], op.id.as_str());
    let audit = block_on(c.alpha.api.audit()).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.path == format!("/v1/vms/{}/migrate", vm.id) && a.status == 202),
        "{audit:?}"
    );
    let audit = block_on(c.beta.api.audit()).unwrap();
    assert!(
        audit
            .iter()
            .any(|a| a.path == "/v1/federation/migrations" && a.status == 201),
        "{audit:?}"
    );
    for (path, method) in [
        ("/hostd/v1/migrations/incoming", "POST"),
        ("/hostd/v1/images", "PUT"),
    ] {
        assert!(
            audit.iter().any(|a| a.actor.starts_with("migration:xmig-")
                && a.path.ends_with(path)
                && a.method == method
                && a.status == 201),
            "{path}: {audit:?}"
        );
    }
    // The gateway is closed to anything but its migration's token.
    let mid = arrived.data["migration"].as_str().unwrap();
    let a = raw(
        &c.beta.url,
        Some("not-the-token"),
        "GET",
        &format!("/v1/federation/migrations/{mid}/hostd/v1/health"),
        b"",
    );
    assert_eq!(a.status, 401);
}

#[test]
fn a_peer_that_refuses_leaves_the_vm_running_on_the_source_and_holds_nothing() {
    let d = TempDir::new();
    // Beta honours nothing of alpha's users yet.
    let Some(mut c) = clusters(&d, vec![]) else {
        return;
    };
    let vm = ticking_vm(&c, "homebody");
    let pid = c.hosts[0].ok(c.hosts[0].api().vm(&vm.id)).pid;
    let alpha_id = block_on(c.alpha.api.federation())
        .unwrap()
        .cluster
        .cluster_id;
    let attempt = |c: &Clusters| -> String {
        let body = MigrateBody {
            cluster: Some("beta".into()),
            ..Default::default()
        };
        let op = block_on(c.alpha.api.migrate_vm(&vm.id, &body)).unwrap();
        let done = wait_for(60, "the migration to end", || {
            block_on(c.alpha.api.operation(&op.id))
                .ok()
                .filter(|o| o.state.is_final())
        });
        assert_eq!(done.state, OpState::Failed, "{done:?}");
        // The VM runs on in the same VMM; alpha still holds it; beta nothing.
        let v = block_on(c.alpha.api.vm(&vm.id)).unwrap();
        assert!(v.migrating.is_none(), "{v:?}");
        assert_eq!(v.host.as_deref(), Some(c.ids[0].as_str()));
        let on_a = c.hosts[0].ok(c.hosts[0].api().vm(&vm.id));
        assert_eq!(on_a.state, nova_hostd_api::VmState::Running);
        assert_eq!(on_a.pid, pid);
        let n = c.hosts[0].console_bytes(&vm.id);
        wait_for(10, "the guest to go on ticking", || {
            (c.hosts[0].console_bytes(&vm.id) > n).then_some(())
        });
        assert!(
            !c.hosts[1].vm_ids().contains(&vm.id),
            "beta's host holds nothing of it"
        );
        done.message
    };

    // Beta's trust policy: no rule honours alpha's admins.
    let why = attempt(&c);
    assert!(
        why.contains("refused") && why.contains("trust policy") && why.contains("Admin"),
        "{why}"
    );
    assert!(block_on(c.beta.api.vms()).unwrap().is_empty());

    // Beta's own admission: a VM of that name exists in the tenant there.
    block_on(c.beta.api.set_peer_policy(
        &alpha_id,
        &PeerPolicy {
            trust: TrustPolicy { rules: admins() },
            placement: true,
        },
    ))
    .unwrap();
    let squatter = block_on(c.beta.api.create_vm(&stopped_spec("homebody"), None)).unwrap();
    let why = attempt(&c);
    assert!(why.contains("homebody") && why.contains("exists"), "{why}");
    let left: Vec<String> = block_on(c.beta.api.vms())
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    assert_eq!(left, vec![squatter.id], "only beta's own VM");

    // Beta down: unreachable, said so.
    c.beta.kill();
    let why = attempt(&c);
    assert!(why.contains("could not be reached"), "{why}");
}

/// Starts moving `vm` to beta and waits until its memory streams (past the
/// admission and the preparation); answers the operation's id. A source VMM whose
/// last stream died on a cut link may still be winding that one down: then the
/// move is refused by the VMM itself ("already running") and asked again.
fn streaming(c: &Clusters, vm: &str) -> String {
    let body = MigrateBody {
        cluster: Some("beta".into()),
        ..Default::default()
    };
    wait_for(60, "the memory to stream to beta", || {
        let op = block_on(c.alpha.api.migrate_vm(vm, &body)).unwrap();
        for _ in 0..600 {
            let o = block_on(c.alpha.api.operation(&op.id)).unwrap();
            if o.state.is_final() {
                assert!(
                    o.message.contains("already running"),
                    "it ended before streaming: {o:?}"
                );
                std::thread::sleep(std::time::Duration::from_secs(1));
                return None;
            }
            let m = c.hosts[0].wait(c.hosts[0].api().migration(vm)).ok();
            if m.is_some_and(|m| {
                m.state == nova_hostd_api::MigrationState::Running
                    && m.bytes_sent.unwrap_or(0) > 1 << 20
            }) {
                return Some(op.id);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("operation {} neither streamed nor ended in 60 s", op.id)
    })
}

/// The operation failed, the VM runs on alpha's host in the same VMM (and ticks),
/// alpha holds its record, and beta dropped everything it had made for it.
fn stayed_home(c: &Clusters, vm: &str, op: &str, pid: Option<u32>) -> String {
    let done = wait_for(60, "the migration to fail", || {
        block_on(c.alpha.api.operation(op))
            .ok()
            .filter(|o| o.state.is_final())
    });
    assert_eq!(done.state, OpState::Failed, "{done:?}");
    let v = block_on(c.alpha.api.vm(vm)).unwrap();
    assert!(v.migrating.is_none(), "{v:?}");
    assert_eq!(v.host.as_deref(), Some(c.ids[0].as_str()));
    let on_a = c.hosts[0].ok(c.hosts[0].api().vm(vm));
    assert_eq!(on_a.state, nova_hostd_api::VmState::Running, "{on_a:?}");
    assert_eq!(on_a.pid, pid);
    let n = c.hosts[0].console_bytes(vm);
    wait_for(10, "the guest to go on ticking", || {
        (c.hosts[0].console_bytes(vm) > n).then_some(())
    });
    wait_for(30, "beta to drop the VM's record", || {
        (!block_on(c.beta.api.vms()).ok()?.iter().any(|v| v.id == vm)).then_some(())
    });
    done.message
}

#[test]
fn a_cut_link_or_a_killed_destination_host_before_the_switch_leaves_the_vm_on_the_source() {
    let d = TempDir::new();
    let Some(mut c) = clusters(&d, admins()) else {
        return;
    };
    // A stream that cannot finish on its own: pre-copy only, uncompressed, capped
    // at 8 Mbit/s below a guest rewriting 4 MiB/s.
    let slow = MigrationPolicy {
        completion_timeout_s: 300,
        params: MigrationParams {
            mode: nova_controller_api::MigrationMode::Precopy,
            bandwidth_mbit: Some(8),
            compress: Compression::None,
            ..Default::default()
        },
        ..Default::default()
    };
    block_on(c.alpha.api.set_migration_policy(&slow)).unwrap();
    let vm = ticking_vm(&c, "anchored");
    let pid = c.hosts[0].ok(c.hosts[0].api().vm(&vm.id)).pid;

    // The link to beta's host goes down mid-stream.
    let op = streaming(&c, &vm.id);
    let dev = &c._net.dev[1];
    let down = c._net.ns[1].run(&["ip", "link", "set", dev, "down"]);
    assert!(down.status.success());
    let why = stayed_home(&c, &vm.id, &op, pid);
    assert!(
        why.contains("stopped answering") || why.contains("cancel"),
        "{why}"
    );
    let up = c._net.ns[1].run(&["ip", "link", "set", dev, "up"]);
    assert!(up.status.success());
    wait_for(30, "beta's host to drop the arriving VM", || {
        let ids = c.hosts[1].wait(c.hosts[1].api().vms()).ok()?;
        ids.vms.is_empty().then_some(())
    });
    // Beta says so: its record of the migration (found through its audit log, where
    // the gateway wrote the source hostd's calls) is dropped, saying why.
    let mid = block_on(c.beta.api.audit())
        .unwrap()
        .iter()
        .find_map(|a| {
            let rest = a.path.strip_prefix("/v1/federation/migrations/")?;
            let (mid, tail) = rest.split_once('/')?;
            (tail == "hostd/v1/migrations/incoming").then(|| mid.to_string())
        })
        .expect("the gateway audited the preparation");
    let m = block_on(c.beta.api.incoming_migration(&mid)).unwrap();
    assert_eq!(
        m.phase,
        nova_controller_api::IncomingPhase::Dropped,
        "{m:?}"
    );
    assert_eq!(m.vm_id, vm.id);
    assert!(m.error.is_some(), "{m:?}");

    // The cut made beta's host miss its heartbeats: it is back once they arrive.
    wait_for(30, "beta's host to be ready again", || {
        block_on(c.beta.api.hosts())
            .ok()?
            .iter()
            .all(|h| h.state == HostState::Ready)
            .then_some(())
    });
    // Beta's hostd is killed mid-stream (its VMMs live on); it comes back later.
    let op = streaming(&c, &vm.id);
    c.hosts[1].kill();
    let why = stayed_home(&c, &vm.id, &op, pid);
    assert!(
        why.contains("stopped answering") || why.contains("cancel"),
        "{why}"
    );
    c.hosts[1].restart();
    wait_for(30, "beta's host, back, to hold nothing of it", || {
        let vms = c.hosts[1].wait(c.hosts[1].api().vms()).ok()?;
        (vms.vms.is_empty() && c.hosts[1].vmm_pids().is_empty()).then_some(())
    });
    assert!(block_on(c.beta.api.vms()).unwrap().is_empty());
}

#[test]
fn a_source_controller_restarted_mid_move_ends_the_migration_by_its_hostds_word() {
    let d = TempDir::new();
    let Some(mut c) = clusters(&d, admins()) else {
        return;
    };
    // A move of several seconds: 16 MiB uncompressed at 24 Mbit/s.
    let slow = MigrationPolicy {
        completion_timeout_s: 120,
        params: MigrationParams {
            bandwidth_mbit: Some(24),
            compress: Compression::None,
            ..Default::default()
        },
        ..Default::default()
    };
    block_on(c.alpha.api.set_migration_policy(&slow)).unwrap();
    let vm = ticking_vm(&c, "restless");
    let op = streaming(&c, &vm.id);
    // Alpha's controller dies mid-stream; the hosts finish the move without it.
    c.alpha.kill();
    wait_for(120, "the source hostd to complete the move", || {
        let m = c.hosts[0].wait(c.hosts[0].api().migration(&vm.id)).ok();
        let gone = c.hosts[0].wait(c.hosts[0].api().vm(&vm.id)).is_err();
        (gone || m.is_some_and(|m| m.state == nova_hostd_api::MigrationState::Completed))
            .then_some(())
    });
    let port: u16 = c.alpha.url.rsplit(':').next().unwrap().parse().unwrap();
    c.alpha = Controller::start(
        &c.alpha.dir.clone(),
        Opts {
            ip: Some(c._net.root_ip()),
            port: Some(port),
            ..Default::default()
        },
    );
    // Back, alpha ends the operation by its hostd's word and forgets the VM; beta
    // (whose host took it) has adopted it.
    let done = wait_for(60, "the operation to end", || {
        block_on(c.alpha.api.operation(&op))
            .ok()
            .filter(|o| o.state.is_final())
    });
    assert_eq!(done.state, OpState::Succeeded, "{done:?}");
    assert_eq!(
        nova_tests::controller::status(block_on(c.alpha.api.vm(&vm.id))),
        404
    );
    let there = wait_for(30, "beta to adopt the VM", || {
        block_on(c.beta.api.vm(&vm.id))
            .ok()
            .filter(|v| v.migrating.is_none())
    });
    assert_eq!(there.host.as_deref(), Some(c.ids[1].as_str()));
    let on_b = c.hosts[1].ok(c.hosts[1].api().vm(&vm.id));
    assert_eq!(on_b.state, nova_hostd_api::VmState::Running);
}

/// The peer's gateway passes on to its host only the images the admitted VM boots
/// from: the admission is made here as alpha's admin would (a federated token for
/// beta), then the gateway's own credential uploads something else (refused, beta's
/// hosts untouched) and the VM's kernel (passed on).
#[test]
fn a_gateway_passes_on_only_the_images_its_vm_boots_from() {
    let d = TempDir::new();
    let Some(c) = clusters(&d, admins()) else {
        return;
    };
    let kernel = std::fs::read(testguest()).unwrap();
    let id = format!("sha256:{}", hex::encode(Sha256::digest(&kernel)));
    let beta_id = block_on(c.beta.api.federation())
        .unwrap()
        .cluster
        .cluster_id;
    let t = block_on(c.alpha.api.federated_token(&NewFederatedToken {
        audience: vec![beta_id],
        ttl_s: None,
    }))
    .unwrap();
    let as_alpha = client(&c.beta.url, Some(&t.token));
    let mut spec = counter("gated");
    spec.kernel = id.clone();
    let admitted = block_on(as_alpha.admit_migration(&IncomingVm {
        vm_id: "vm-gated0001".into(),
        spec,
        created_at_ms: 1,
        source_host: c.ids[0].clone(),
        operation: "op-gated".into(),
        host: None,
        timeout_s: 120,
    }))
    .unwrap();
    let gateway = format!(
        "/v1/federation/migrations/{}/hostd/v1/images",
        admitted.migration_id
    );
    let other = raw(
        &c.beta.url,
        Some(&admitted.token),
        "PUT",
        &gateway,
        b"not an image of this VM",
    );
    assert_eq!(other.status, 400, "{:?}", other.body);
    assert_eq!(other.body["field"], "body");
    assert!(block_on(c.beta.api.images()).unwrap().images.is_empty());
    // Without the gateway's credential nothing is taken at all.
    let anonymous = raw(&c.beta.url, None, "PUT", &gateway, &kernel);
    assert_eq!(anonymous.status, 401, "{:?}", anonymous.body);
    let passed = raw(&c.beta.url, Some(&admitted.token), "PUT", &gateway, &kernel);
    assert_eq!(passed.status, 201, "{:?}", passed.body);
    assert_eq!(passed.body["id"], id.as_str());
    let images = block_on(c.beta.api.images()).unwrap().images;
    assert_eq!(images.len(), 1, "{images:?}");
    assert_eq!(images[0].id, id);
    assert_eq!(images[0].hosts, [c.ids[1].clone()]);
    let audit = block_on(c.beta.api.audit()).unwrap();
    let puts: Vec<u16> = audit
        .iter()
        .filter(|a| a.method == "PUT" && a.path == gateway)
        .map(|a| a.status)
        .collect();
    assert_eq!(puts.len(), 2, "{audit:?}");
    assert!(puts.contains(&400) && puts.contains(&201), "{puts:?}");
}
