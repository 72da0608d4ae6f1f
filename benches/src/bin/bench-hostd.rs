//! bench-hostd: VMs through nova-hostd on one host. Create-to-`NOVA-BOOTED` through the
//! API (hostd's overhead over a bare VMM start), N small VMs (test guest, 64 MiB,
//! 1 vCPU, idle) started in sequence and concurrently (time, VMM memory per VM), and
//! a hostd restart under all N (time to reattach every VM, none stopped), and
//! host-to-host migration downtime through two hostd against VMM to VMM (and hostd's
//! own time on the switch). Writes docs/benchmarks/hostd.{json,md}. It is over 500 lines:
//! each measurement and its row in the report sit together.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nova_benches::{kill_vmms_under, rss_kib, write_report, Summary};
use nova_hostd_api::{HostdClient, MigrateRequest, MigrationState, MigrationTarget, VmSpec};
use nova_http::blocking::block_on;
use nova_vmm_api::{MigrationRequest, MigrationState as VmmState, VmmClient};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/nova-hostd"
    )]
    hostd: PathBuf,
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/nova-vmm"
    )]
    vmm: PathBuf,
    #[arg(long, default_value = "guest-images/out/testguest.elf")]
    guest: PathBuf,
    /// VMs started together.
    #[arg(long, default_value_t = 100)]
    vms: usize,
    /// Single create-to-boot runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

struct Hostd {
    child: Child,
    addr: SocketAddr,
    token: String,
    dir: PathBuf,
    api: HostdClient,
}

impl Hostd {
    fn start(args: &Args, dir: &Path) -> anyhow::Result<Hostd> {
        let token = format!("bench-token-{}", std::process::id());
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("token"), &token)?;
        let addr: SocketAddr = ([127, 0, 0, 1], nova_tests::free_port()).into();
        let log = std::fs::File::create(dir.join("hostd.log"))?;
        let child = Command::new(&args.hostd)
            .args([
                "--listen",
                &addr.to_string(),
                "--cpu-overcommit",
                "100",
                "--token-file",
            ])
            .arg(dir.join("token"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--vmm-bin")
            .arg(&args.vmm)
            .env("NOVA_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", args.hostd.display()))?;
        let opts = nova_http::ClientOptions {
            timeout: Duration::from_secs(120),
            ..Default::default()
        };
        let api = HostdClient::new(&format!("http://{addr}"), &token, &opts)?;
        let h = Hostd {
            child,
            addr,
            token,
            dir: dir.to_path_buf(),
            api,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while block_on(h.api.health()).is_err() {
            if Instant::now() > deadline {
                bail!("hostd did not answer");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(h)
    }

    fn console(&self, id: &str) -> PathBuf {
        self.dir.join("data/vms").join(id).join("console.log")
    }
}

impl Drop for Hostd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_sock(vmm: &VmmClient, sock: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while block_on(vmm.info()).is_err() {
        if Instant::now() > deadline {
            bail!("{} does not answer", sock.display());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// VMM to VMM on loopback, no hostd: (downtime ms, total ms).
fn bare_migration(args: &Args, dir: &Path, i: usize) -> anyhow::Result<(f64, f64)> {
    let port = nova_tests::free_port();
    let (ssock, dsock) = (
        dir.join(format!("mig-s{i}.sock")),
        dir.join(format!("mig-d{i}.sock")),
    );
    let mut src = Command::new(&args.vmm)
        .args([
            "run",
            "--mem-mib",
            "64",
            "--cmdline",
            "nova.workload=counter",
            "--kernel",
        ])
        .arg(&args.guest)
        .arg("--api-sock")
        .arg(&ssock)
        .arg("--console")
        .arg(dir.join(format!("mig-s{i}.log")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let (cred, peer) = nova_tests::migration::credential(dir);
    let mut dst = Command::new(&args.vmm)
        .args(["run", "--incoming", &format!("tcp:127.0.0.1:{port}")])
        .arg("--incoming-credential")
        .arg(&cred)
        .args(["--mem-mib", "64", "--vcpus", "1"])
        .arg("--api-sock")
        .arg(&dsock)
        .arg("--console")
        .arg(dir.join(format!("mig-d{i}.log")))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| {
        let vmm = VmmClient::new(&ssock, Duration::from_secs(10))?;
        wait_sock(&vmm, &ssock)?;
        std::thread::sleep(Duration::from_millis(300));
        let req = MigrationRequest {
            to: format!("tcp:127.0.0.1:{port}"),
            params: Default::default(),
            peer: Some(peer.clone()),
        };
        block_on(vmm.migrate(&req))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = block_on(vmm.migration())?;
            match s.state {
                VmmState::Completed => return Ok((s.downtime_ms, s.total_ms)),
                VmmState::Running => {}
                _ => bail!("bare migration: {s:?}"),
            }
            if Instant::now() > deadline {
                bail!("bare migration did not finish");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    })();
    for c in [&mut src, &mut dst] {
        let _ = c.kill();
        let _ = c.wait();
    }
    result
}

/// Through two hostd on loopback: (downtime ms, hostd switch ms, request-to-completed ms).
fn hostd_migration(
    args: &Args,
    src: &Hostd,
    dst: &Hostd,
    i: usize,
) -> anyhow::Result<(f64, f64, f64)> {
    let id = format!("mig-{i}");
    let mut s = spec(args, &id);
    s.cmdline = Some("nova.workload=counter".into());
    block_on(src.api.create(&s)).with_context(|| format!("create {id}"))?;
    wait_booted(&src.console(&id), Instant::now() + Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let req = MigrateRequest {
        to: MigrationTarget {
            url: format!("http://{}", dst.addr),
            token: dst.token.clone(),
        },
        params: Default::default(),
        kind: Default::default(),
    };
    block_on(src.api.migrate(&id, &req)).context("migrate")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let m = loop {
        let m = block_on(src.api.migration(&id))?;
        match m.state {
            MigrationState::Completed => break m,
            MigrationState::Failed | MigrationState::Cancelled => {
                bail!("migration through hostd: {m:?}")
            }
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("migration through hostd did not finish");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    block_on(dst.api.delete(&id))?;
    Ok((
        m.downtime_ms.unwrap_or(f64::NAN),
        m.hostd_switch_ms.unwrap_or(f64::NAN),
        wall,
    ))
}

fn spec(args: &Args, id: &str) -> VmSpec {
    VmSpec {
        id: Some(id.to_string()),
        name: id.to_string(),
        vcpus: 1,
        mem_mib: 64,
        kernel: args.guest.to_string_lossy().into_owned(),
        initrd: None,
        cmdline: Some("nova.workload=idle".into()),
        disks: Vec::new(),
        nics: Vec::new(),
        restart: Default::default(),
        start: true,
        cloud_init: None,
    }
}

fn wait_booted(path: &Path, deadline: Instant) -> anyhow::Result<Instant> {
    loop {
        if std::fs::read(path).is_ok_and(|b| b.starts_with(b"NOVA-BOOTED")) {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("{} shows no NOVA-BOOTED", path.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn create(h: &Hostd, args: &Args, id: &str) -> anyhow::Result<u32> {
    let vm = block_on(h.api.create(&spec(args, id))).with_context(|| format!("create {id}"))?;
    Ok(vm.pid.unwrap_or(0))
}

fn delete_all(h: &Hostd) -> anyhow::Result<()> {
    for vm in block_on(h.api.vms())?.vms {
        block_on(h.api.delete(&vm.id))?;
    }
    Ok(())
}

#[derive(Serialize)]
struct Report {
    vms: usize,
    create_to_booted_ms: Summary,
    bare_vmm_to_booted_ms: Summary,
    sequential_total_s: f64,
    concurrent_total_s: f64,
    vmm_rss_mib_per_vm: f64,
    guest_touched_mib_per_vm: f64,
    hostd_rss_mib: f64,
    reattach_s: f64,
    reattached: usize,
    still_running_after_restart: usize,
    migration_bare_downtime_ms: Summary,
    migration_bare_total_ms: Summary,
    migration_hostd_downtime_ms: Summary,
    migration_hostd_switch_ms: Summary,
    migration_hostd_request_to_completed_ms: Summary,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    for p in [&mut args.hostd, &mut args.vmm, &mut args.guest] {
        *p = p
            .canonicalize()
            .with_context(|| format!("{}", p.display()))?;
    }
    let tmp = std::env::temp_dir().join(format!("bench-hostd-{}", std::process::id()));
    let result = run(&args, &tmp);
    kill_vmms_under(&tmp);
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

fn run(args: &Args, tmp: &Path) -> anyhow::Result<()> {
    let mut h = Hostd::start(args, tmp)?;

    // 1. One VM, create-to-NOVA-BOOTED, against the same VMM started bare.
    let mut through = Vec::new();
    let mut bare = Vec::new();
    for i in 0..args.runs {
        let id = format!("one-{i}");
        let t0 = Instant::now();
        create(&h, args, &id)?;
        let t = wait_booted(&h.console(&id), t0 + Duration::from_secs(30))?;
        through.push((t - t0).as_secs_f64() * 1e3);
        block_on(h.api.delete(&id))?;

        let console = tmp.join(format!("bare-{i}.log"));
        let t0 = Instant::now();
        let mut c = Command::new(&args.vmm)
            .args([
                "run",
                "--mem-mib",
                "64",
                "--cmdline",
                "nova.workload=idle",
                "--kernel",
            ])
            .arg(&args.guest)
            .arg("--console")
            .arg(&console)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let t = wait_booted(&console, t0 + Duration::from_secs(30))?;
        bare.push((t - t0).as_secs_f64() * 1e3);
        let _ = c.kill();
        let _ = c.wait();
    }

    // 2. N in sequence.
    let t0 = Instant::now();
    for i in 0..args.vms {
        let id = format!("seq-{i}");
        create(&h, args, &id)?;
        wait_booted(&h.console(&id), t0 + Duration::from_secs(600))?;
    }
    let sequential = t0.elapsed().as_secs_f64();
    delete_all(&h)?;

    // 3. N concurrently.
    let t0 = Instant::now();
    let pids: Vec<u32> = std::thread::scope(|s| {
        let hs = &h;
        let handles: Vec<_> = (0..args.vms)
            .map(|i| {
                s.spawn(move || -> anyhow::Result<u32> {
                    let id = format!("par-{i}");
                    let pid = create(hs, args, &id)?;
                    wait_booted(&hs.console(&id), t0 + Duration::from_secs(600))?;
                    Ok(pid)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|j| j.join().expect("thread"))
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let concurrent = t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let (mut own, mut shmem) = (0u64, 0u64);
    for &p in &pids {
        let (o, s) = rss_kib(p)?;
        own += o;
        shmem += s;
    }
    let hostd_rss = rss_kib(h.child.id())?.0 as f64 / 1024.0;

    // 4. hostd killed and restarted under N running VMs.
    let _ = h.child.kill();
    let _ = h.child.wait();
    let t0 = Instant::now();
    let dir = h.dir.clone();
    std::mem::forget(h);
    let h = Hostd::start(args, &dir)?;
    let vms = block_on(h.api.vms())?.vms;
    let reattach = t0.elapsed().as_secs_f64();
    let reattached = vms
        .iter()
        .filter(|v| {
            v.state == nova_hostd_api::VmState::Running && v.pid.is_some_and(|p| pids.contains(&p))
        })
        .count();
    let still = pids
        .iter()
        .filter(|&&p| Path::new(&format!("/proc/{p}")).exists())
        .count();
    delete_all(&h)?;

    // 5. Host-to-host migration: VMM to VMM bare, and through two hostd.
    let dst = Hostd::start(args, &tmp.join("dst"))?;
    let (mut bd, mut bt, mut hd, mut hs, mut hw) = (vec![], vec![], vec![], vec![], vec![]);
    for i in 0..args.runs {
        let (d, t) = bare_migration(args, tmp, i)?;
        bd.push(d);
        bt.push(t);
        let (d, sw, w) = hostd_migration(args, &h, &dst, i)?;
        hd.push(d);
        hs.push(sw);
        hw.push(w);
    }

    let n = args.vms as f64;
    let report = Report {
        vms: args.vms,
        create_to_booted_ms: Summary::of(&through),
        bare_vmm_to_booted_ms: Summary::of(&bare),
        sequential_total_s: sequential,
        concurrent_total_s: concurrent,
        vmm_rss_mib_per_vm: own as f64 / 1024.0 / n,
        guest_touched_mib_per_vm: shmem as f64 / 1024.0 / n,
        hostd_rss_mib: hostd_rss,
        reattach_s: reattach,
        reattached,
        still_running_after_restart: still,
        migration_bare_downtime_ms: Summary::of(&bd),
        migration_bare_total_ms: Summary::of(&bt),
        migration_hostd_downtime_ms: Summary::of(&hd),
        migration_hostd_switch_ms: Summary::of(&hs),
        migration_hostd_request_to_completed_ms: Summary::of(&hw),
    };
    let md = format!(
        "# nova-hostd\n\nTest guest (64 MiB, 1 vCPU, idle), debug or release as built; one host, 2 cores.\n\n\
| measure | value |\n|---|---|\n\
| create-to-NOVA-BOOTED through hostd (median of {runs}) | {c:.1} ms |\n\
| bare nova-vmm start-to-NOVA-BOOTED (median of {runs}) | {b:.1} ms |\n\
| hostd overhead (median difference) | {d:.1} ms |\n\
| {n} VMs in sequence | {seq:.2} s |\n\
| {n} VMs concurrently | {par:.2} s |\n\
| VMM memory per VM (RssAnon+RssFile) | {own:.1} MiB |\n\
| guest memory touched per VM (RssShmem) | {sh:.1} MiB |\n\
| hostd RSS with {n} VMs | {hr:.1} MiB |\n\
| hostd restart under {n} VMs: reattached / still running | {ra} / {st} in {rt:.2} s |\n\
| migration downtime, VMM to VMM (median of {runs}) | {bd:.2} ms |\n\
| migration downtime, through two hostd (median of {runs}) | {hd:.2} ms |\n\
| hostd's own time on the switch (median) | {hs:.2} ms |\n\
| migration total: VMM to VMM / hostd request to completed | {bt:.1} ms / {hw:.1} ms |\n\n\
Migration: 64 MiB test guest with the `counter` workload, the contract's default parameters (hybrid, 5 ms downtime target), loopback.\n",
        runs = args.runs,
        c = report.create_to_booted_ms.median,
        b = report.bare_vmm_to_booted_ms.median,
        d = report.create_to_booted_ms.median - report.bare_vmm_to_booted_ms.median,
        n = args.vms,
        seq = sequential,
        par = concurrent,
        own = report.vmm_rss_mib_per_vm,
        sh = report.guest_touched_mib_per_vm,
        hr = hostd_rss,
        ra = reattached,
        st = still,
        rt = reattach,
        bd = report.migration_bare_downtime_ms.median,
        hd = report.migration_hostd_downtime_ms.median,
        hs = report.migration_hostd_switch_ms.median,
        bt = report.migration_bare_total_ms.median,
        hw = report.migration_hostd_request_to_completed_ms.median,
    );
    print!("{md}");
    write_report(&args.out, "hostd", &report, &md)
}
