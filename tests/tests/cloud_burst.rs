//! Cloud bursting against a local EC2-compatible server (moto): a VM that fits on no
//! host launches an EC2 instance (tagged, with user-data carrying the controller URL
//! and a single-use join token); the test plays the instance booting the host image by
//! starting a real hostd with that user-data's join settings; the VM runs there (real
//! KVM, the test guest); deleted, the idle host is terminated on EC2 and forgotten.
//! And the policy's refusals, each naming its field.

use std::collections::BTreeMap;
use std::time::Duration;

use nova_cloud::ec2::{Ec2, Ec2Config};
use nova_cloud::{Instance, InstanceState, Provider};
use nova_controller_api::{
    BurstPolicy, BurstState, HostUserData, Vm, VmSpec, LABEL_BURST, LABEL_INSTANCE_ID,
    LABEL_PROVIDER,
};
use nova_tests::controller::{block_on, refusal, wait_for, Controller, EventStream, Opts};
use nova_tests::hostd::{testguest, wait_hosts_ready, Hostd, Opts as HostdOpts};
use nova_tests::moto::Moto;
use nova_tests::{free_port, require_kvm, unique, TempDir};

/// The host's memory, MiB (hostd admits guest memory as a ratio of it).
fn host_mem_mib() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb / 1024
}

/// hostd flags admitting about `mem_mib` of guest memory, on a bridge of its own.
fn admitting(mem_mib: u64) -> Vec<String> {
    let ratio = mem_mib as f64 / host_mem_mib() as f64;
    vec![
        "--mem-overcommit".into(),
        format!("{ratio:.8}"),
        "--mem-reserve-mib".into(),
        "0".into(),
        "--bridge".into(),
        unique("nbr"),
    ]
}

/// The test guest, 64 MiB: more than the small host admits.
fn big_guest(name: &str) -> VmSpec {
    VmSpec {
        mem_mib: 64,
        cmdline: Some("nova.workload=counter".into()),
        ..VmSpec::new(name, testguest().display().to_string())
    }
}

struct Cluster {
    c: Controller,
    ec2: Ec2,
    /// The `nova:cluster` tag this controller's machines carry.
    cluster: String,
    _moto: Moto,
    _dir: TempDir,
}

/// A controller whose `[cloud]` points at a fresh moto, with `burst` as its policy.
fn cluster(burst: &str) -> Option<Cluster> {
    let moto = Moto::start()?;
    let dir = TempDir::new();
    let port = free_port();
    let cluster = unique("c");
    std::fs::write(dir.join("aws.secret"), "testing-secret\n").unwrap();
    let ec2 = format!(
        "region = \"us-east-1\"\nendpoint_url = \"{}\"\naccess_key_id = \"testing\"\n\
         secret_access_key_file = \"{}\"\nami = \"ami-0abc1234\"\ninstance_type = \"t3.micro\"\n\
         hourly_usd = 0.5\n",
        moto.url,
        dir.join("aws.secret").display()
    );
    let config = format!(
        "[cloud]\ncontroller_url = \"http://127.0.0.1:{port}\"\ncluster = \"{cluster}\"\n\
         [cloud.burst]\n{burst}\n[cloud.ec2]\n{ec2}[cloud.ec2.tags]\nteam = \"nova-test\"\n"
    );
    std::fs::write(dir.join("controller.toml"), config).unwrap();
    let c = Controller::start(
        dir.path(),
        Opts {
            port: Some(port),
            args: vec![
                "--config".into(),
                dir.join("controller.toml").display().to_string(),
            ],
            ..Opts::default()
        },
    );
    let ec2 = Ec2::new(Ec2Config {
        region: "us-east-1".into(),
        endpoint_url: Some(moto.url.clone()),
        access_key_id: Some("testing".into()),
        secret_access_key_file: Some(dir.join("aws.secret")),
        ami: "ami-0abc1234".into(),
        instance_type: "t3.micro".into(),
        ..Default::default()
    })
    .unwrap();
    Some(Cluster {
        c,
        ec2,
        cluster,
        _moto: moto,
        _dir: dir,
    })
}

impl Cluster {
    /// The machines moto holds with this cluster's tag.
    fn machines(&self) -> Vec<Instance> {
        let tags = BTreeMap::from([("nova:cluster".to_string(), self.cluster.clone())]);
        block_on(self.ec2.list(&tags)).unwrap()
    }

    /// Waits until VM `id`'s observed error mentions `text`.
    fn vm_says(&self, id: &str, text: &str) -> Vm {
        wait_for(20, &format!("{id} to say {text:?}"), || {
            let v = block_on(self.c.api.vm(id)).ok()?;
            let e = v.observed.as_ref()?.error.as_deref()?;
            e.contains(text).then_some(v.clone())
        })
    }
}

#[test]
fn a_vm_that_fits_nowhere_bursts_to_ec2_runs_there_and_the_idle_host_is_terminated() {
    if !require_kvm() {
        return;
    }
    let burst = "enabled = true\nmax_hosts = 1\ncooldown_s = 0\nidle_s = 2\njoin_timeout_s = 300";
    let Some(k) = cluster(burst) else { return };
    let c = &k.c;
    // The only host admits 32 MiB: the 64 MiB VM fits nowhere.
    let _small = Hostd::start(HostdOpts {
        args: [
            vec![
                "--controller".into(),
                c.url.clone(),
                "--join-token-file".into(),
                c.dir.join("join.token").display().to_string(),
            ],
            admitting(32),
        ]
        .concat(),
        ..HostdOpts::default()
    });
    wait_hosts_ready(c, 1);
    let mut events = EventStream::open(&c.url, &c.admin);
    let id = block_on(c.api.create_vm(&big_guest("burst-me"), None))
        .unwrap()
        .id;

    // EC2 is asked for one machine, tagged as this cluster's and the config's.
    let m = wait_for(30, "an instance on moto", || {
        let ms = k.machines();
        (!ms.is_empty()).then(|| ms[0].clone())
    });
    assert_eq!(k.machines().len(), 1, "one machine for one VM");
    assert_eq!(m.instance_type, "t3.micro");
    assert_eq!(m.tags.get("team").map(String::as_str), Some("nova-test"));
    let burst_id = m.tags["nova:burst"].clone();
    assert_eq!(m.tags["Name"], format!("nova-{burst_id}"));
    let launched = events.until("cloud.launched", &burst_id, 10);
    assert_eq!(launched.data["instance_id"], m.id.as_str());
    assert_eq!(launched.data["vm"], id.as_str());
    let v = k.vm_says(
        &id,
        &format!("waiting for burst host {burst_id} (ec2 {})", m.id),
    );
    assert_eq!(v.host, None, "pending until the burst host joins");

    // The instance boots the host image: its hostd joins with the user-data's settings.
    let text = block_on(k.ec2.user_data(&m.id))
        .unwrap()
        .expect("user-data");
    let ud = HostUserData::parse(&text).unwrap();
    assert_eq!(ud.controller, c.url);
    assert_ne!(
        ud.join_token, c.join,
        "a token of its own, not the bootstrap one"
    );
    let d = TempDir::new();
    std::fs::write(d.join("join.token"), &ud.join_token).unwrap();
    let big = Hostd::start(HostdOpts {
        args: [
            vec![
                "--controller".into(),
                ud.controller.clone(),
                "--join-token-file".into(),
                d.join("join.token").display().to_string(),
            ],
            admitting(256),
        ]
        .concat(),
        ..HostdOpts::default()
    });
    let joined = events.until("cloud.joined", &burst_id, 30);
    let host_id = joined.data["host"].as_str().unwrap().to_string();
    let host = block_on(c.api.host(&host_id)).unwrap();
    assert_eq!(host.labels[LABEL_PROVIDER], "ec2");
    assert_eq!(host.labels[LABEL_INSTANCE_ID], m.id);
    assert_eq!(host.labels[LABEL_BURST], burst_id);

    // The VM is placed there and runs (a real guest under KVM).
    let v = wait_for(60, "the VM to run on the burst host", || {
        let v = block_on(c.api.vm(&id)).ok()?;
        (v.observed.as_ref()?.state == "running").then_some(v)
    });
    assert_eq!(v.host.as_deref(), Some(host_id.as_str()));
    big.wait_console(&id, "NOVA-BOOTED", Duration::from_secs(40));
    let hosts = block_on(c.api.burst_hosts()).unwrap();
    assert_eq!(hosts.provider.as_deref(), Some("ec2"));
    let b = hosts.items.iter().find(|b| b.id == burst_id).unwrap();
    assert_eq!(b.state, BurstState::Joined);
    assert_eq!(b.host_id.as_deref(), Some(host_id.as_str()));
    assert!(b.hours > 0.0 && b.cost_usd == Some(b.hours * 0.5), "{b:?}");

    // Deleted: the host idles past idle_s, EC2 terminates it, the host record goes.
    block_on(c.api.delete_vm(&id)).unwrap();
    let gone = events.until("cloud.terminated", &burst_id, 60);
    assert!(
        gone.data["reason"].as_str().unwrap().contains("idle_s"),
        "{gone:?}"
    );
    wait_for(30, "moto to show the instance terminated", || {
        let ms = k.machines();
        (ms.len() == 1 && ms[0].state == InstanceState::Terminated).then_some(())
    });
    wait_for(10, "the host record to go", || {
        block_on(c.api.hosts())
            .ok()?
            .iter()
            .all(|h| h.id != host_id)
            .then_some(())
    });
    let b = block_on(c.api.burst_hosts()).unwrap().items.remove(0);
    assert_eq!(b.state, BurstState::Terminated);
    assert!(b.reason.unwrap().contains("idle_s"));
    let audit = block_on(c.api.audit()).unwrap();
    for call in ["RunInstances", "TerminateInstances"] {
        assert!(
            audit.iter().any(|e| e.actor == "controller:burst"
                && e.method == call
                && e.path == format!("ec2/{}", m.id)
                && e.status == 200),
            "{call} audited"
        );
    }
    drop(big);
}

#[test]
fn a_burst_is_refused_or_deferred_naming_the_policy_field_that_says_no() {
    let burst =
        "enabled = false\nmax_hosts = 1\ncooldown_s = 3600\nidle_s = 60\njoin_timeout_s = 10";
    let Some(k) = cluster(burst) else { return };
    let c = &k.c;
    // No host at all: nothing fits anywhere.
    let id = block_on(c.api.create_vm(&big_guest("nowhere"), None))
        .unwrap()
        .id;
    k.vm_says(&id, "the burst policy's `enabled` is false");
    assert!(k.machines().is_empty(), "policy off: nothing launched");

    let mut p = block_on(c.api.burst_policy()).unwrap();
    assert_eq!(
        (p.max_hosts, p.join_timeout_s),
        (1, 10),
        "from the config file"
    );
    p.enabled = true;
    p.max_hosts = 0;
    block_on(c.api.set_burst_policy(&p)).unwrap();
    k.vm_says(&id, "the burst policy's `max_hosts` (0)");
    assert!(k.machines().is_empty(), "max_hosts 0: nothing launched");

    // Allowed: one launch. It never joins, so join_timeout_s terminates it; the VM
    // then waits out cooldown_s rather than launching another.
    p.max_hosts = 1;
    block_on(c.api.set_burst_policy(&p)).unwrap();
    k.vm_says(&id, "waiting for burst host");
    let m = k.machines().remove(0);
    wait_for(40, "the unjoined machine to be terminated", || {
        let ms = k.machines();
        (ms[0].state == InstanceState::Terminated).then_some(())
    });
    let b = block_on(c.api.burst_hosts()).unwrap().items.remove(0);
    assert_eq!(
        (b.state, b.instance_id.as_str()),
        (BurstState::Terminated, m.id.as_str())
    );
    assert!(b.reason.unwrap().contains("`join_timeout_s` (10)"));
    k.vm_says(&id, "the burst policy's `cooldown_s` (3600)");
    assert_eq!(
        k.machines().len(),
        1,
        "no second launch within the cooldown"
    );

    // Bad values are refused naming the field.
    let bad = BurstPolicy {
        idle_s: 0,
        ..p.clone()
    };
    let (code, field) = refusal(block_on(c.api.set_burst_policy(&bad)));
    assert_eq!((code, field.as_deref()), (400, Some("idle_s")));

    // A controller without a provider cannot turn bursting on; a bad [cloud] key stops
    // a controller from starting, named.
    let d = TempDir::new();
    let plain = Controller::sqlite(d.path());
    let (code, field) = refusal(block_on(plain.api.set_burst_policy(&p)));
    assert_eq!((code, field.as_deref()), (400, Some("enabled")));
    let d2 = TempDir::new();
    std::fs::write(
        d2.join("c.toml"),
        "[cloud]\ncontroller_url = \"http://127.0.0.1:1\"\n[cloud.ec2]\nregion = \"us-east-1\"\n\
         ami = \"ubuntu\"\ninstance_type = \"t3.micro\"\n",
    )
    .unwrap();
    let why = Controller::try_start(
        d2.path(),
        Opts {
            args: vec!["--config".into(), d2.join("c.toml").display().to_string()],
            ..Opts::default()
        },
    )
    .err()
    .expect("refused");
    assert!(why.contains("cloud.ec2.ami"), "{why}");
}
