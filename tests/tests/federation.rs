//! Federation end to end (over 500 lines: five stories, each on its own clusters),
//! three real controllers (each its own SQLite store), each with its hosts in its own
//! network namespace on one bridge, so the clusters talk to each other over veths:
//! peering through the handshake (each side's admin token, signed proofs),
//! `novactl federation join|list|leave`; a federated list with one peer cut off the
//! network and one killed (a partial answer naming it); a federated token of cluster
//! A honoured by B per B's trust policy and refused by C where C's says no (refused
//! after revocation, at once or, for a peer down then, once it is back; still
//! honoured after A rotates its key); and a VM placed "anywhere" landing on the
//! cluster whose real hostd has room, where it boots the test guest. Peering over
//! TLS (and `--federation-peer-ca`) runs on loopback: the dev CA's certificates
//! name 127.0.0.1.

use std::process::Command;

use nova_controller_api::{
    ClusterAnswer, Constraints, ControllerClient, FederatedList, GlobalVmSpec, Host, IdentityPatch,
    JoinRequest, NewFederatedToken, Peer, PeerPolicy, Role, Target, TrustPolicy, TrustRule, Vm,
    VmSpec,
};
use nova_tests::controller::{
    block_on, refusal, register_host, status, stopped_spec, wait_for, Controller, Opts,
};
use nova_tests::hostd::{testguest, Bridged, Hostd};
use nova_tests::net::require_netns;
use nova_tests::{binary, require_kvm, unique, TempDir};

/// A controller on its own SQLite store, named `name` in the federation, on
/// loopback.
fn cluster(dir: &TempDir, name: &str, region: Option<&str>) -> Controller {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    named(Controller::sqlite(&d), name, region)
}

fn named(c: Controller, name: &str, region: Option<&str>) -> Controller {
    block_on(c.api.set_identity(&IdentityPatch {
        name: Some(name.into()),
        region: region.map(Into::into),
    }))
    .unwrap();
    c
}

/// The clusters' names, one a network namespace.
const NAMES: [&str; 3] = ["alpha", "beta", "gamma"];

/// Three network namespaces on one bridge, one a cluster: its controller (and its
/// hosts, when a test starts some) in it, listening on its address there; peers
/// reach each other over the bridge, the test from the root namespace. None where
/// namespaces cannot be made (a failure under NOVA_REQUIRE_KVM=1).
fn namespaces() -> Option<Bridged> {
    require_netns().then(|| Bridged::with_namespaces(3))
}

/// The controller of cluster `i` (NAMES[i]) in namespace `i` of `net`, on `port`
/// (a free one when None) with the store in `d`'s NAMES[i].
fn controller_in(d: &TempDir, net: &Bridged, i: usize, port: Option<u16>) -> Controller {
    let dir = d.join(NAMES[i]);
    std::fs::create_dir_all(&dir).unwrap();
    Controller::start(
        &dir,
        Opts {
            ip: Some(net.host_ip(i)),
            netns: Some(net.ns[i].name.clone()),
            port,
            ..Opts::default()
        },
    )
}

/// Clusters alpha, beta and gamma in `net`'s namespaces (gamma's region `regions[2]`).
fn clusters_in(d: &TempDir, net: &Bridged, regions: [Option<&str>; 3]) -> [Controller; 3] {
    [0, 1, 2].map(|i| named(controller_in(d, net, i, None), NAMES[i], regions[i]))
}

fn id_of(c: &Controller) -> String {
    block_on(c.api.federation()).unwrap().cluster.cluster_id
}

fn rule(remote: &str, roles: &[Role]) -> TrustRule {
    TrustRule {
        remote_tenant: remote.into(),
        local_tenant: None,
        roles: roles.to_vec(),
    }
}

/// `a` joins `b`, honouring what `trust` says of b's tokens.
fn join(a: &Controller, b: &Controller, trust: Vec<TrustRule>) -> Peer {
    block_on(a.api.join_federation(&JoinRequest {
        peer_url: b.url.clone(),
        peer_token: b.admin.clone(),
        self_url: a.url.clone(),
        trust: TrustPolicy { rules: trust },
        placement: true,
    }))
    .unwrap_or_else(|e| panic!("{} joins {}: {e}", a.url, b.url))
}

/// `of` honours what `rules` say of `peer`'s tokens.
fn trust(of: &Controller, peer: &str, rules: Vec<TrustRule>) {
    block_on(of.api.set_peer_policy(
        peer,
        &PeerPolicy {
            trust: TrustPolicy { rules },
            placement: true,
        },
    ))
    .unwrap();
}

fn peer_names(c: &Controller) -> Vec<String> {
    let mut v: Vec<String> = block_on(c.api.federation())
        .unwrap()
        .peers
        .into_iter()
        .map(|p| p.peer.name)
        .collect();
    v.sort();
    v
}

fn novactl(c: &Controller, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("novactl"))
        .args(["--url", &c.url, "--token", &c.admin])
        .args(args)
        .env("HOME", c.dir.join("home"))
        .env_remove("NOVA_CONTEXT")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn clusters_peer_by_handshake_list_their_peers_and_leave() {
    let Some(net) = namespaces() else { return };
    let d = TempDir::new();
    let [a, b, c] = clusters_in(&d, &net, [None; 3]);
    // The keys are public, and the same on both sides of a peering.
    let jwks = block_on(a.anonymous().jwks()).unwrap();
    assert_eq!(jwks.keys.len(), 1);
    assert_eq!(jwks.keys[0].crv, "Ed25519");
    assert!(jwks.keys[0].kid.starts_with(&format!("{}:", id_of(&a))));

    // A wrong admin token of the peer: refused, nothing kept on either side.
    let bad = block_on(a.api.join_federation(&JoinRequest {
        peer_url: b.url.clone(),
        peer_token: a.admin.clone(),
        self_url: a.url.clone(),
        trust: TrustPolicy::default(),
        placement: true,
    }));
    assert_eq!(refusal(bad), (409, Some("peer_token".into())));
    assert!(peer_names(&a).is_empty() && peer_names(&b).is_empty());
    // Only a system admin peers.
    let viewer = a.token_for("system", "watcher", Role::Viewer);
    let r = block_on(a.as_(&viewer).join_federation(&JoinRequest {
        peer_url: b.url.clone(),
        peer_token: b.admin.clone(),
        self_url: a.url.clone(),
        trust: TrustPolicy::default(),
        placement: true,
    }));
    assert_eq!(status(r), 403);
    // A bad trust rule names its field.
    let r = block_on(a.api.join_federation(&JoinRequest {
        peer_url: b.url.clone(),
        peer_token: b.admin.clone(),
        self_url: a.url.clone(),
        trust: TrustPolicy {
            rules: vec![rule("acme", &[Role::Host])],
        },
        placement: true,
    }));
    assert_eq!(refusal(r).1.as_deref(), Some("trust.rules[0].roles"));

    // novactl federation join: alpha with beta.
    let peer_token = b.dir.join("admin.token");
    let (code, out, err) = novactl(
        &a,
        &[
            "federation",
            "join",
            "--peer-url",
            &b.url,
            "--peer-token-file",
            peer_token.to_str().unwrap(),
            "--trust",
            "acme:viewer",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("beta"), "{out}");
    join(&a, &c, vec![]);
    join(&b, &c, vec![]);
    assert_eq!(peer_names(&a), ["beta", "gamma"]);
    assert_eq!(peer_names(&b), ["alpha", "gamma"]);
    assert_eq!(peer_names(&c), ["alpha", "beta"]);
    // Each side keeps the other's public keys, as its JWKS endpoint shows them.
    let fa = block_on(a.api.federation()).unwrap();
    let beta = fa.peers.iter().find(|p| p.peer.name == "beta").unwrap();
    assert_eq!(beta.peer.jwks, block_on(b.anonymous().jwks()).unwrap());
    assert_eq!(beta.peer.trust.rules, vec![rule("acme", &[Role::Viewer])]);
    // ... and (beta's side) honours nothing of alpha's users until it says so.
    let fb = block_on(b.api.federation()).unwrap();
    let alpha = fb.peers.iter().find(|p| p.peer.name == "alpha").unwrap();
    assert!(alpha.peer.trust.rules.is_empty());
    // The join fetched a first summary of the peer, cached for the dashboard.
    assert!(
        beta.summary.is_some() && beta.last_seen_ms.is_some(),
        "{beta:?}"
    );
    let (code, out, err) = novactl(&a, &["federation", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("beta") && out.contains("gamma") && out.contains(&b.url),
        "{out}"
    );

    // Leaving: both sides forget.
    let (code, out, err) = novactl(&a, &["federation", "leave", "gamma", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let left: nova_controller_api::LeftPeer = serde_json::from_str(&out).unwrap();
    assert!(left.peer_acknowledged, "{out}");
    assert_eq!(peer_names(&a), ["beta"]);
    assert_eq!(peer_names(&c), ["beta"]);
    // Peer-only routes refuse local tokens, and an API token is no cluster token.
    assert_eq!(
        status(block_on(
            a.api.http().post::<_, ()>("/v1/federation/leave", &())
        )),
        403
    );
}

#[test]
fn a_federated_list_with_a_peer_down_answers_the_others_and_names_it() {
    let Some(net) = namespaces() else { return };
    let d = TempDir::new();
    let [a, b, mut c] = clusters_in(&d, &net, [None; 3]);
    join(&a, &b, vec![]);
    join(&a, &c, vec![]);
    let aid = id_of(&a);
    // Beta and gamma honour alpha's system admins as their own.
    for peer in [&b, &c] {
        trust(peer, &aid, vec![rule("system", &[Role::Admin])]);
    }
    for (ctl, n) in [(&a, 2), (&b, 3), (&c, 1)] {
        for i in 0..n {
            block_on(ctl.api.create_vm(&stopped_spec(&format!("vm{i}")), None)).unwrap();
        }
        register_host(ctl, &unique("h"), "http://127.0.0.1:9", 4, 4096);
    }
    let list = |ms: u64| -> FederatedList<Vm> {
        block_on(a.api.federated::<Vm>("/v1/vms", Some(ms))).unwrap()
    };
    let all = list(2000);
    assert!(!all.partial, "{:?}", all.clusters);
    assert_eq!(all.items.len(), 6);
    let answered = |l: &[ClusterAnswer], name: &str| {
        l.iter()
            .find(|c| c.name == name)
            .map(|c| (c.answered, c.items))
            .unwrap()
    };
    assert_eq!(answered(&all.clusters, "alpha"), (true, 2));
    assert_eq!(answered(&all.clusters, "beta"), (true, 3));
    assert_eq!(answered(&all.clusters, "gamma"), (true, 1));
    let hosts = block_on(a.api.federated::<Host>("/v1/hosts", None)).unwrap();
    assert_eq!(hosts.items.len(), 3);
    assert!(hosts.items.iter().all(|h| h.item.hostd_token.is_empty()));

    // Gamma cut off the network (its link down, the process up): alpha answers
    // within the deadline with alpha's and beta's, naming gamma; back on the
    // network, gamma answers again.
    let link = |state: &str| {
        let out = net.ns[2].run(&["ip", "link", "set", &net.dev[2], state]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    link("down");
    let cut = list(500);
    assert!(cut.partial, "{:?}", cut.clusters);
    assert_eq!(cut.items.len(), 5, "alpha's and beta's");
    let gamma = cut.clusters.iter().find(|c| c.name == "gamma").unwrap();
    assert!(!gamma.answered && gamma.error.is_some(), "{gamma:?}");
    assert!(cut.items.iter().all(|l| l.cluster != gamma.cluster_id));
    link("up");
    wait_for(30, "gamma to answer again", || {
        let l = list(2000);
        (!l.partial && l.items.len() == 6).then_some(())
    });

    c.kill();
    let some = list(500);
    assert!(some.partial);
    assert_eq!(some.items.len(), 5, "alpha's and beta's");
    let gamma = some.clusters.iter().find(|c| c.name == "gamma").unwrap();
    assert!(!gamma.answered && gamma.error.is_some(), "{gamma:?}");
    let (code, out, err) = novactl(&a, &["federation", "vms", "--timeout-ms", "500"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 6, "a header and five VMs:\n{out}");
    assert!(
        err.contains("gamma") && err.contains("did not answer"),
        "{err}"
    );
    // Beta, whose peer is down, still serves its own API.
    assert_eq!(block_on(b.api.vms()).unwrap().len(), 3);
    // A bad scope or deadline names the parameter.
    let r = block_on(
        a.api
            .http()
            .get::<serde_json::Value>("/v1/vms?scope=galaxy"),
    );
    assert_eq!(refusal(r).1.as_deref(), Some("scope"));
    let r = block_on(a.api.federated::<Vm>("/v1/vms", Some(1)));
    assert_eq!(refusal(r).1.as_deref(), Some("timeout_ms"));
}

/// Whoami through `c` with `token`: the status, or the caller it maps to.
fn whoami(c: &Controller, token: &str) -> Result<nova_controller_api::Whoami, u16> {
    block_on(c.as_(token).whoami()).map_err(|e| e.status().unwrap_or(0))
}

#[test]
fn a_federated_token_is_honoured_per_each_peers_policy_and_refused_where_it_says_no() {
    let Some(net) = namespaces() else { return };
    let d = TempDir::new();
    let [a, b, mut c] = clusters_in(&d, &net, [None; 3]);
    join(&a, &b, vec![]);
    join(&a, &c, vec![]);
    let aid = id_of(&a);
    // Beta honours acme's viewers and operators; gamma only acme's viewers.
    trust(
        &b,
        &aid,
        vec![rule("acme", &[Role::Viewer, Role::Operator])],
    );
    trust(&c, &aid, vec![rule("acme", &[Role::Viewer])]);
    for ctl in [&b, &c] {
        ctl.token_for("acme", "someone", Role::Viewer);
        ctl.token_for("other", "else", Role::Operator);
    }
    let alice = a.token_for("acme", "alice", Role::Operator);
    let bob = a.token_for("other", "bob", Role::Operator);
    let fed = |api_token: &str, aud: Vec<String>| {
        block_on(a.as_(api_token).federated_token(&NewFederatedToken {
            audience: aud,
            ttl_s: Some(600),
        }))
        .unwrap()
    };
    let t = fed(&alice, vec![]);
    assert_eq!(
        t.audience.len(),
        3,
        "alpha and both peers: {:?}",
        t.audience
    );

    // Beta: alice acts in acme with her role, sees acme's VMs only, may create one.
    let w = whoami(&b, &t.token).unwrap();
    assert_eq!(
        (w.user.as_str(), w.tenant.as_str(), w.role),
        ("alice@alpha", "acme", Role::Operator)
    );
    block_on(
        b.as_(&b.token_for("other", "eve", Role::Operator))
            .create_vm(&stopped_spec("theirs"), None),
    )
    .unwrap();
    let vm = block_on(b.as_(&t.token).create_vm(&stopped_spec("hers"), None)).unwrap();
    assert_eq!(vm.tenant, "acme");
    let seen: Vec<String> = block_on(b.as_(&t.token).vms())
        .unwrap()
        .into_iter()
        .map(|v| v.spec.name)
        .collect();
    assert_eq!(seen, ["hers"]);
    // Beta's audit log names who did it, and from where.
    let audit = block_on(b.api.audit()).unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.actor == "alice@alpha" && e.method == "POST" && e.path == "/v1/vms"),
        "{audit:?}"
    );
    // Gamma's policy honours acme's viewers only: an operator is refused, naming why.
    let r = block_on(c.as_(&t.token).whoami());
    let e = r.unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(e.to_string().contains("alpha"), "{e}");
    // Bob's tenant is honoured nowhere.
    let tb = fed(&bob, vec![]);
    assert_eq!(whoami(&b, &tb.token), Err(403));
    // A token for beta only is no token for gamma.
    let only_b = fed(&alice, vec!["beta".into()]);
    assert_eq!(whoami(&c, &only_b.token), Err(401));
    assert!(whoami(&b, &only_b.token).is_ok());
    // A token altered on the way is refused.
    let mut forged = t.token.clone();
    forged.insert_str(forged.find('.').unwrap() + 1, "eyJ4Ijox");
    assert_eq!(whoami(&b, &forged), Err(401));
    // A cluster that is no peer of alpha's does not know its keys.
    let lone = cluster(&d, "lone", None);
    assert_eq!(whoami(&lone, &t.token), Err(401));
    // Alpha honours its own tokens as the user they were issued to.
    assert_eq!(whoami(&a, &t.token).unwrap().user, "alice");

    // Revoked at alpha: beta is told at once and refuses it.
    let r = block_on(a.as_(&alice).revoke_federated_token(&t.jti)).unwrap();
    assert!(r.peers_told.contains(&id_of(&b)), "{r:?}");
    assert_eq!(whoami(&b, &t.token), Err(401));
    assert_eq!(whoami(&a, &t.token), Err(401));
    // Somebody else's token is not bob's to revoke.
    assert_eq!(
        status(block_on(a.as_(&bob).revoke_federated_token(&only_b.jti))),
        404
    );

    // Alpha rotates its key: beta fetches the new one when it first sees it used.
    let before = block_on(a.api.jwks()).unwrap();
    let after = block_on(a.api.rotate_keys()).unwrap().jwks;
    assert_eq!(after.keys.len(), 2);
    assert_eq!(after.keys[1], before.keys[0], "the old key still verifies");
    let t2 = fed(&alice, vec!["beta".into()]);
    assert!(whoami(&b, &t2.token).is_ok(), "signed with the new key");
    assert!(whoami(&b, &only_b.token).is_ok(), "signed with the old key");

    // Revoked while gamma is down: gamma pulls the revocation when it is back.
    let carol = a.token_for("acme", "carol", Role::Viewer);
    let t3 = fed(&carol, vec![]);
    assert_eq!(whoami(&c, &t3.token).unwrap().user, "carol@alpha");
    let port: u16 = c.url.rsplit(':').next().unwrap().parse().unwrap();
    c.kill();
    let r = block_on(a.as_(&carol).revoke_federated_token(&t3.jti)).unwrap();
    let gid = r.peers_missed.first().cloned().expect("gamma was not told");
    assert!(r.peers_told.contains(&id_of(&b)), "{r:?}");
    let c = controller_in(&d, &net, 2, Some(port));
    assert_eq!(id_of(&c), gid, "the same cluster, from its store");
    wait_for(30, "gamma to pull alpha's revocation", || {
        (whoami(&c, &t3.token) == Err(401)).then_some(())
    });
}

/// The MiB of memory of this machine (what hostd's capacity starts from).
fn host_mem_mib() -> u64 {
    let m = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = m
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// A real hostd in cluster `i`'s namespace of `net`, registered with `c` (that
/// cluster's controller), admitting about `mem_mib` of guest memory.
fn hostd_with(net: &Bridged, i: usize, c: &Controller, mem_mib: Option<u64>) -> Hostd {
    let mut args = vec![
        "--controller".into(),
        c.url.clone(),
        "--join-token-file".into(),
        c.dir.join("join.token").display().to_string(),
    ];
    if let Some(m) = mem_mib {
        let ratio = m as f64 / host_mem_mib() as f64;
        args.extend(["--mem-overcommit".into(), format!("{ratio:.8}")]);
        args.extend(["--mem-reserve-mib".into(), "0".into()]);
    }
    net.hostd(i, &args)
}

fn wait_ready(c: &Controller) {
    wait_for(30, "the host to register", || {
        block_on(c.api.hosts()).ok().filter(|h| {
            h.iter()
                .any(|h| h.state == nova_controller_api::HostState::Ready)
        })
    });
}

fn guest(name: &str) -> VmSpec {
    VmSpec {
        mem_mib: 64,
        cmdline: Some("nova.workload=counter".into()),
        ..VmSpec::new(name, testguest().display().to_string())
    }
}

fn place(
    a: &ControllerClient,
    name: &str,
    t: Target,
) -> Result<nova_controller_api::GlobalPlacement, nova_http::Error> {
    block_on(a.create_global_vm(&GlobalVmSpec {
        placement: t,
        spec: guest(name),
    }))
}

#[test]
fn a_vm_placed_anywhere_lands_on_the_cluster_with_room_and_boots_there() {
    if !require_kvm() {
        return;
    }
    let Some(net) = namespaces() else { return };
    let d = TempDir::new();
    let [a, b, mut c] = clusters_in(&d, &net, [Some("eu"), Some("eu"), Some("us")]);
    // Alpha's host admits 32 MiB of guests, beta's 160 MiB, gamma's the machine.
    let mut hosts = vec![
        hostd_with(&net, 0, &a, Some(32)),
        hostd_with(&net, 1, &b, Some(160)),
        hostd_with(&net, 2, &c, None),
    ];
    for ctl in [&a, &b, &c] {
        wait_ready(ctl);
    }
    join(&a, &b, vec![]);
    join(&a, &c, vec![]);
    let aid = id_of(&a);
    for peer in [&b, &c] {
        trust(peer, &aid, vec![rule("system", &[Role::Admin])]);
    }

    // Anywhere: gamma has the most room.
    let g = place(&a.api, "roomy", Target::Anywhere(Constraints::default())).unwrap();
    assert_eq!(g.name, "gamma", "{:?}", g.candidates);
    let alpha = g.candidates.iter().find(|c| c.name == "alpha").unwrap();
    assert!(
        alpha
            .rejected
            .as_deref()
            .unwrap_or("")
            .contains("no host has room"),
        "{alpha:?}"
    );
    wait_for(60, "the VM to run on gamma", || {
        let v = block_on(c.api.vm(&g.vm.id)).ok()?;
        (v.observed.as_ref()?.state == "running").then_some(())
    });
    assert!(block_on(a.api.vm(&g.vm.id)).is_err(), "not alpha's VM");
    // Anywhere in Europe: alpha has no room, so beta.
    let g = place(
        &a.api,
        "european",
        Target::Anywhere(Constraints {
            regions: vec!["eu".into()],
            avoid: vec![],
        }),
    )
    .unwrap();
    assert_eq!(g.name, "beta", "{:?}", g.candidates);
    assert_eq!(block_on(b.api.vm(&g.vm.id)).unwrap().spec.name, "european");
    // A named cluster without room: refused, saying why; nothing created there.
    let r = place(&a.api, "cramped", Target::Cluster("alpha".into()));
    assert_eq!(refusal(r).0, 409);
    assert!(block_on(a.api.vms()).unwrap().is_empty());
    // A region: gamma.
    let g = place(&a.api, "american", Target::Region("us".into())).unwrap();
    assert_eq!(g.name, "gamma");
    // An unknown cluster names the field.
    let r = place(&a.api, "lost", Target::Cluster("delta".into()));
    assert_eq!(refusal(r).1.as_deref(), Some("placement.cluster"));
    // Gamma down: anywhere else with room (beta still has about 96 MiB).
    drop(hosts.pop());
    c.kill();
    let g = place(&a.api, "fallback", Target::Anywhere(Constraints::default())).unwrap();
    assert_eq!(g.name, "beta", "{:?}", g.candidates);
    let gamma = g.candidates.iter().find(|c| c.name == "gamma").unwrap();
    assert!(
        gamma
            .rejected
            .as_deref()
            .unwrap_or("")
            .contains("no summary"),
        "{gamma:?}"
    );
}

/// A controller serving https with the certificate of the dev CA in `ca` (and, with
/// `trust`, calling its peers trusting that CA: `--hostd-ca`).
fn tls_cluster(dir: &TempDir, name: &str, ca: &std::path::Path, trust: bool) -> Controller {
    let flags = if trust {
        vec![
            "--hostd-ca".to_string(),
            ca.join("ca.pem").display().to_string(),
        ]
    } else {
        vec![]
    };
    tls_cluster_with(dir, name, ca, flags)
}

/// A controller serving https with the certificate of the dev CA in `ca`, with
/// `flags`.
fn tls_cluster_with(
    dir: &TempDir,
    name: &str,
    ca: &std::path::Path,
    flags: Vec<String>,
) -> Controller {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    let mut args = vec![
        "--tls-cert".to_string(),
        ca.join("server.pem").display().to_string(),
        "--tls-key".into(),
        ca.join("server.key").display().to_string(),
    ];
    args.extend(flags);
    let c = Controller::start(
        &d,
        Opts {
            args,
            ca: Some(ca.join("ca.pem")),
            ..Opts::default()
        },
    );
    named(c, name, None)
}

/// A fresh dev CA (its own key) in `dir`'s `name`.
fn dev_ca(dir: &TempDir, name: &str) -> std::path::PathBuf {
    let ca = dir.join(name);
    let out = Command::new(binary("nova-controller"))
        .arg("dev-ca")
        .arg(&ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ca
}

#[test]
fn clusters_peer_over_tls_and_refuse_a_peer_whose_certificate_they_cannot_verify() {
    let d = TempDir::new();
    let ca = dev_ca(&d, "ca");
    let a = tls_cluster(&d, "alpha", &ca, true);
    let b = tls_cluster(&d, "beta", &ca, true);
    let stranger = tls_cluster(&d, "stranger", &ca, false);
    assert!(a.url.starts_with("https://") && b.url.starts_with("https://"));
    join(&a, &b, vec![]);
    trust(
        &b,
        &id_of(&a),
        vec![rule("system", &[Role::Viewer, Role::Admin])],
    );
    block_on(b.api.create_vm(&stopped_spec("over-tls"), None)).unwrap();
    let l = block_on(a.api.federated::<Vm>("/v1/vms", None)).unwrap();
    assert!(!l.partial, "{:?}", l.clusters);
    assert_eq!(l.items.len(), 1);
    assert_eq!(l.items[0].item.spec.name, "over-tls");
    // A controller that does not trust the CA gets no answer from the peer at all.
    let r = block_on(stranger.api.join_federation(&JoinRequest {
        peer_url: b.url.clone(),
        peer_token: b.admin.clone(),
        self_url: stranger.url.clone(),
        trust: TrustPolicy::default(),
        placement: true,
    }));
    assert_eq!(refusal(r), (409, Some("peer_url".into())));
    assert_eq!(peer_names(&b), ["alpha"]);
}

#[test]
fn with_a_federation_peer_ca_peers_are_trusted_through_it_and_not_through_the_hosts_ca() {
    let d = TempDir::new();
    // The cluster's own CA (its hosts', and gamma's certificate) and the
    // federation's (beta's certificate).
    let own = dev_ca(&d, "own-ca");
    let federation = dev_ca(&d, "federation-ca");
    let pem = |ca: &std::path::Path| ca.join("ca.pem").display().to_string();
    let a = tls_cluster_with(
        &d,
        "alpha",
        &own,
        vec![
            "--hostd-ca".into(),
            pem(&own),
            "--federation-peer-ca".into(),
            pem(&federation),
        ],
    );
    let b = tls_cluster_with(&d, "beta", &federation, vec![]);
    let c = tls_cluster_with(&d, "gamma", &own, vec![]);
    // Beta's certificate chains to the federation CA: alpha peers with it.
    join(&a, &b, vec![]);
    assert_eq!(peer_names(&a), ["beta"]);
    // Gamma's chains only to alpha's own (hosts') CA: refused, naming the URL.
    let r = block_on(a.api.join_federation(&JoinRequest {
        peer_url: c.url.clone(),
        peer_token: c.admin.clone(),
        self_url: a.url.clone(),
        trust: TrustPolicy::default(),
        placement: true,
    }));
    assert_eq!(refusal(r), (409, Some("peer_url".into())));
    assert_eq!(peer_names(&a), ["beta"]);
    assert!(peer_names(&c).is_empty());
    // Without the flag the hosts' CA is the peers' CA too: the same cluster
    // configuration, less the flag, peers with gamma.
    let a2 = tls_cluster_with(&d, "alpha2", &own, vec!["--hostd-ca".into(), pem(&own)]);
    join(&a2, &c, vec![]);
    assert_eq!(peer_names(&a2), ["gamma"]);
    // The config file's key does what the flag does.
    let file = d.join("federation.toml");
    std::fs::write(
        &file,
        format!(
            "hostd_ca = {:?}\nfederation_peer_ca = {:?}\n",
            pem(&own),
            pem(&federation)
        ),
    )
    .unwrap();
    let a3 = tls_cluster_with(
        &d,
        "alpha3",
        &own,
        vec!["--config".into(), file.display().to_string()],
    );
    join(&a3, &b, vec![]);
    let r = block_on(a3.api.join_federation(&JoinRequest {
        peer_url: c.url.clone(),
        peer_token: c.admin.clone(),
        self_url: a3.url.clone(),
        trust: TrustPolicy::default(),
        placement: true,
    }));
    assert_eq!(refusal(r), (409, Some("peer_url".into())));
}
