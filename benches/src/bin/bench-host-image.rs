//! bench-host-image: the host image's sizes (kernel + initramfs, the raw disk's
//! apparent and allocated size, the ISO) and its boot under QEMU TCG: from the
//! kernel's first console line to nova-init, to hostd started, and to the host Ready
//! in a controller the bench runs in a network namespace (the image booted by
//! kernel + initramfs, static address). KVM here is PVM and cannot run a stock
//! kernel, so there is no KVM row: the TCG figures are an upper bound, not the
//! hardware figure the 3 s target is about. Several images side by side
//! (`--image release=host-image/out --image dev=host-image/out-dev`: the release
//! build `make host-image` makes, and the debug build `make test` boots), their boots
//! interleaved so that a change in the machine's load falls on all of them.
//! Writes docs/benchmarks/host-image.{json,md}.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use nova_benches::{write_report, Summary};
use nova_controller_api::HostState;
use nova_tests::controller::{block_on, client};
use nova_tests::hostd::in_namespace;
use nova_tests::net::NetNs;
use nova_tests::{free_port, unique, Console};
use serde::Serialize;

#[derive(Parser)]
struct Args {
    /// An image to measure, `NAME=DIR` (a build.sh output directory); repeat for more.
    #[arg(long, default_value = "release=host-image/out", value_parser = parse_image)]
    image: Vec<(String, PathBuf)>,
    /// The nova-controller binary the booted host joins.
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-gnu/release/nova-controller"
    )]
    controller: PathBuf,
    /// Boots to time.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, default_value = "docs/benchmarks")]
    out: PathBuf,
}

#[derive(Serialize)]
struct Sizes {
    vmlinuz_bytes: u64,
    initrd_bytes: u64,
    kernel_plus_initrd_mib: f64,
    raw_apparent_bytes: u64,
    raw_allocated_bytes: u64,
    iso_bytes: u64,
}

#[derive(Serialize, Clone)]
struct Boot {
    kernel_to_init_s: f64,
    kernel_to_hostd_s: f64,
    kernel_to_ready_s: f64,
}

/// One image's figures.
#[derive(Serialize)]
struct Measured {
    /// What the image was built from (`release`, `dev`).
    profile: String,
    version: String,
    sizes: Sizes,
    boots: Vec<Boot>,
    kernel_to_init_s: Summary,
    kernel_to_hostd_s: Summary,
    kernel_to_ready_s: Summary,
}

#[derive(Serialize)]
struct Report {
    command: String,
    accel: &'static str,
    images: Vec<Measured>,
    kvm: &'static str,
}

/// `NAME=DIR`.
fn parse_image(v: &str) -> Result<(String, PathBuf), String> {
    match v.split_once('=') {
        Some((n, d)) if !n.is_empty() && !d.is_empty() => Ok((n.to_string(), PathBuf::from(d))),
        _ => Err(format!("'{v}' is not NAME=DIR (release=host-image/out)")),
    }
}

const KVM_NOTE: &str = "not measured: KVM on this machine is PVM, which runs only PVM guest kernels, not Debian's stock kernel";

fn mib(b: u64) -> f64 {
    (b as f64 / 1048576.0 * 10.0).round() / 10.0
}

fn one_boot(a: &Args, image: &Path, run: usize) -> anyhow::Result<Boot> {
    let dir = std::env::temp_dir().join(format!("bench-hi-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let ns = NetNs::new();
    let tap = unique("nvb");
    ns.add_tap(&tap, "192.0.2.1/24");
    let port = free_port();
    let mut c = ns.command(&a.controller);
    c.args(["--insecure-http", "--listen", &format!("192.0.2.1:{port}")])
        .args(["--heartbeat-ms", "200"])
        .arg("--store")
        .arg(format!("sqlite:{}", dir.join("c.db").display()))
        .arg("--admin-token-file")
        .arg(dir.join("admin"))
        .arg("--join-token-file")
        .arg(dir.join("join"));
    let _ctl = Console::spawn(c);
    let url = format!("http://192.0.2.1:{port}");
    let t = Instant::now();
    while in_namespace(Some(&ns.name), || block_on(client(&url, None).health())).is_err() {
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the controller did not answer");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).map(|s| s.trim().to_string());
    let (admin, join) = (read("admin")?, read("join")?);
    let disk = dir.join("disk.raw");
    let st = Command::new("cp")
        .arg("--sparse=always")
        .arg(image.join("nova-host.raw"))
        .arg(&disk)
        .status()?;
    anyhow::ensure!(st.success(), "copying the raw disk");
    let mut q = ns.command(Path::new("qemu-system-x86_64"));
    q.args([
        "-M", "pc", "-accel", "tcg", "-cpu", "max", "-smp", "1", "-m", "1024",
    ])
    .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
    .arg("-kernel")
    .arg(image.join("vmlinuz"))
    .arg("-initrd")
    .arg(image.join("initrd.img"))
    .arg("-append")
    .arg(format!(
        "console=ttyS0 panic=-1 nova.ip=192.0.2.2/24 nova.controller={url} \
             nova.join_token={join} nova.insecure_http=1 nova.hostname=bench-host"
    ))
    .arg("-netdev")
    .arg(format!("tap,id=n0,ifname={tap},script=no,downscript=no"))
    .args(["-device", "virtio-net-pci,netdev=n0"])
    .arg("-drive")
    .arg(format!("file={},format=raw,if=virtio", disk.display()));
    let mut vm = Console::spawn_realtime(q);
    let api = client(&url, Some(&admin));
    let t = Instant::now();
    let ready_at = loop {
        let ready = in_namespace(Some(&ns.name), || block_on(api.hosts()))
            .ok()
            .is_some_and(|hs| {
                hs.iter()
                    .any(|h| h.hostname == "bench-host" && h.state == HostState::Ready)
            });
        if ready {
            break Instant::now();
        }
        if t.elapsed() > Duration::from_secs(300) {
            vm.kill();
            bail!("the host was not Ready in 300 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = vm.lines();
    let at = |needle: &str| {
        lines
            .iter()
            .find(|l| l.text.contains(needle))
            .map(|l| l.at)
            .with_context(|| format!("no console line with '{needle}'"))
    };
    let kernel = at("Linux version")?;
    let secs = |t: Instant| (t - kernel).as_secs_f64();
    let b = Boot {
        kernel_to_init_s: secs(at("nova-init starting")?),
        kernel_to_hostd_s: secs(at("nova-hostd started")?),
        kernel_to_ready_s: secs(ready_at),
    };
    vm.kill();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(b)
}

/// An image's sizes and version.
fn sizes_of(image: &Path) -> anyhow::Result<(Sizes, String)> {
    let size = |f: &str| -> anyhow::Result<std::fs::Metadata> {
        std::fs::metadata(image.join(f))
            .with_context(|| format!("{}: run `make host-image`", image.join(f).display()))
    };
    let (k, i, raw, iso) = (
        size("vmlinuz")?,
        size("initrd.img")?,
        size("nova-host.raw")?,
        size("nova-host.iso")?,
    );
    let sizes = Sizes {
        vmlinuz_bytes: k.len(),
        initrd_bytes: i.len(),
        kernel_plus_initrd_mib: mib(k.len() + i.len()),
        raw_apparent_bytes: raw.len(),
        raw_allocated_bytes: raw.blocks() * 512,
        iso_bytes: iso.len(),
    };
    let version = std::fs::read_to_string(image.join("VERSION"))
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok((sizes, version))
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mut found = vec![];
    for (name, dir) in &a.image {
        let (sizes, version) = sizes_of(dir)?;
        found.push((name.clone(), sizes, version, vec![]));
    }
    // Interleaved: run r of every image, then run r + 1.
    for r in 0..a.runs {
        for (i, (name, dir)) in a.image.iter().enumerate() {
            let b = one_boot(&a, dir, r)?;
            eprintln!(
                "{name} boot {}: init {:.1} s, hostd {:.1} s, Ready {:.1} s after the kernel's first line",
                r + 1,
                b.kernel_to_init_s,
                b.kernel_to_hostd_s,
                b.kernel_to_ready_s
            );
            found[i].3.push(b);
        }
    }
    let images: Vec<Measured> = found
        .into_iter()
        .map(|(profile, sizes, version, boots)| {
            let s = |f: fn(&Boot) -> f64| Summary::of(&boots.iter().map(f).collect::<Vec<_>>());
            Measured {
                profile,
                version,
                sizes,
                kernel_to_init_s: s(|b| b.kernel_to_init_s),
                kernel_to_hostd_s: s(|b| b.kernel_to_hostd_s),
                kernel_to_ready_s: s(|b| b.kernel_to_ready_s),
                boots,
            }
        })
        .collect();
    // What was run, as run (`make bench-host-image` boots the release and dev images).
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let report = Report {
        command: command.clone(),
        accel: "tcg",
        images,
        kvm: KVM_NOTE,
    };
    let mut md = format!(
        "# Host image: sizes and boot to Ready\n\n\
         Command: `{command}` on {}.\n\n\
         Images: {}.\n\n\
         | artefact |{}\n| --- |{}\n",
        chrono_free_date(),
        report
            .images
            .iter()
            .map(|m| format!("{} = version {}", m.profile, m.version))
            .collect::<Vec<_>>()
            .join(", "),
        report
            .images
            .iter()
            .map(|m| format!(" {} |", m.profile))
            .collect::<String>(),
        " --- |".repeat(report.images.len()),
    );
    let cells = |f: &dyn Fn(&Sizes) -> String| {
        report
            .images
            .iter()
            .map(|m| format!(" {} |", f(&m.sizes)))
            .collect::<String>()
    };
    md += &format!(
        "| vmlinuz + initrd.img (target <= 40 MiB) |{}\n",
        cells(&|z| format!(
            "{:.1} MiB ({:.1} + {:.1})",
            z.kernel_plus_initrd_mib,
            mib(z.vmlinuz_bytes),
            mib(z.initrd_bytes)
        ))
    );
    md += &format!(
        "| nova-host.raw |{}\n",
        cells(&|z| format!(
            "{:.1} MiB apparent, {:.1} MiB allocated (sparse)",
            mib(z.raw_apparent_bytes),
            mib(z.raw_allocated_bytes)
        ))
    );
    md += &format!(
        "| nova-host.iso |{}\n\n",
        cells(&|z| format!("{:.1} MiB", mib(z.iso_bytes)))
    );
    md += &format!(
        "Boot under QEMU TCG (`-accel tcg -cpu max -smp 1 -m 1024`, kernel + initramfs \
         booted directly, static address, a controller in the same network namespace \
         with 200 ms heartbeats), seconds from the kernel's first console line \
         (`Linux version`), {} runs of each image, interleaved:\n\n\
         | to | image | median | min | max |\n| --- | --- | --- | --- | --- |\n",
        a.runs
    );
    type Pick = fn(&Measured) -> &Summary;
    let rows: [(&str, Pick); 3] = [
        ("nova-init starting", |m| &m.kernel_to_init_s),
        ("nova-hostd started", |m| &m.kernel_to_hostd_s),
        ("Ready in the controller", |m| &m.kernel_to_ready_s),
    ];
    for (name, pick) in rows {
        for m in &report.images {
            let x = pick(m);
            md += &format!(
                "| {name} | {} | {:.1} | {:.1} | {:.1} |\n",
                m.profile, x.median, x.min, x.max
            );
        }
    }
    md += &format!(
        "\nKVM: {KVM_NOTE}. TCG emulates every instruction (module loading alone takes \
         seconds here), so these are an upper bound for the issue's target of Ready \
         <= 3 s after the kernel starts on KVM. There is no QEMU-side comparison: the \
         image is what QEMU boots.\n"
    );
    write_report(&a.out, "host-image", &report, &md)?;
    print!("{md}");
    Ok(())
}

/// Today's date (UTC) from the system clock, YYYY-MM-DD.
fn chrono_free_date() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%d"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}
