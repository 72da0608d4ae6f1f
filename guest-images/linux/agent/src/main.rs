//! nova-agent: the Linux guest's `/init`. As pid 1 it mounts /dev, /proc and /sys,
//! prints `NOVA-BOOTED` on the serial console, loads the initramfs's virtio modules
//! and runs the workloads `nova.workload=` names, printing only `NOVA-<KEY>` lines
//! (formats from `nova-guest-abi`). Not pid 1 it is a host-side stand-in for tests:
//! the same workloads on stdout, with no mounting, no modules, no interface changes.
//!
//! As pid 1 it also applies a NoCloud seed's hostname and SSH keys (`seed`).
//!
//! Usage (host mode): nova-agent --cmdline "<kernel cmdline>" [--disk PATH]
//!                    [--udp-port N] [--no-net-config] [--seed IMG --root DIR]

mod cmdline;
mod console;
mod init;
mod seed;
mod workloads;

use nova_guest_abi::line;
use std::path::PathBuf;
use workloads::Env;

/// Flags, from the host-mode command line or (as pid 1) from init's argv: the words
/// after `--` on the kernel command line.
#[derive(Debug, Default)]
struct Args {
    cmdline: Option<String>,
    disk: Option<PathBuf>,
    /// Host mode: a NoCloud seed image to apply, under `root`.
    seed: Option<PathBuf>,
    root: Option<PathBuf>,
    udp_port: Option<u16>,
    no_net_config: bool,
}

fn parse_args(mut argv: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut args = Args::default();
    while let Some(a) = argv.next() {
        let mut value = |flag: &str| argv.next().ok_or(format!("{flag} needs a value"));
        match a.as_str() {
            "--cmdline" => args.cmdline = Some(value("--cmdline")?),
            "--disk" => args.disk = Some(value("--disk")?.into()),
            "--seed" => args.seed = Some(value("--seed")?.into()),
            "--root" => args.root = Some(value("--root")?.into()),
            "--udp-port" => {
                let v = value("--udp-port")?;
                args.udp_port = Some(v.parse().map_err(|_| format!("bad --udp-port '{v}'"))?);
            }
            "--no-net-config" => args.no_net_config = true,
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(args)
}

fn main() {
    if std::process::id() == 1 {
        run_as_init()
    } else {
        run_on_host()
    }
}

fn run_as_init() -> ! {
    // As pid 1 a panic must not end the process (the kernel would panic): report it
    // and park the thread.
    std::panic::set_hook(Box::new(|info| {
        let at = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        console::error("panic", &format!(" at={at}"));
        init::sleep_forever()
    }));
    let dev = init::mount_dev();
    console::open_guest_console();
    console::line(line::BOOTED);
    if let Err(e) = dev.and_then(|()| init::mount_proc_sys()) {
        console::error("mount", &format!(" error=\"{e}\""));
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_else(|e| {
        console::error("read_cmdline", &format!(" error=\"{e}\""));
        String::new()
    });
    init::quiet_kernel_console(&cmdline);
    init::load_modules(&cmdline);
    if let Some(meta) = seed::find() {
        apply_seed(&meta, std::path::Path::new("/"), true);
    }
    // Whatever the kernel passes that is not ours is ignored: init must not stop.
    let args =
        parse_args(std::env::args().skip(1).filter(|a| a == "--no-net-config")).unwrap_or_default();
    run_plan(
        &cmdline,
        &Env {
            pid1: true,
            disk: None,
            udp_port: 7,
            net_config: !args.no_net_config,
        },
    )
}

fn run_on_host() -> ! {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("nova-agent: {e}");
            eprintln!("usage: nova-agent --cmdline \"<kernel cmdline>\" [--disk PATH] [--udp-port N] [--no-net-config] [--seed IMG --root DIR]");
            std::process::exit(2)
        }
    };
    console::use_stdout();
    console::line(line::BOOTED);
    if let Some(img) = &args.seed {
        match seed::read_meta(img) {
            Some(meta) => {
                let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
                apply_seed(&meta, &root, false);
            }
            None => console::error("seed", " error=\"not a cidata FAT image\""),
        }
    }
    run_plan(
        &args.cmdline.unwrap_or_default(),
        &Env {
            pid1: false,
            disk: args.disk,
            udp_port: args.udp_port.unwrap_or(7),
            net_config: !args.no_net_config,
        },
    )
}

/// Applies a seed's meta-data and says so (`NOVA-CLOUDINIT hostname=.. keys=N`).
fn apply_seed(meta: &str, root: &std::path::Path, pid1: bool) {
    match seed::apply(&seed::parse(meta), root, pid1) {
        Ok(done) => console::line(&format!("NOVA-CLOUDINIT {done}")),
        Err(e) => console::error("seed", &format!(" error=\"{e}\"")),
    }
}

fn run_plan(cmdline: &str, env: &Env) -> ! {
    let plan = cmdline::plan(cmdline);
    for body in &plan.errors {
        console::line(&format!("{} {body}", line::ERROR));
    }
    workloads::run(&plan, env)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Result<Args, String> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn flags_parse_and_bad_ones_are_refused() {
        let a = args(&[
            "--cmdline",
            "x",
            "--disk",
            "/d",
            "--udp-port",
            "9",
            "--no-net-config",
        ])
        .unwrap();
        assert_eq!(a.cmdline.as_deref(), Some("x"));
        assert_eq!(a.disk, Some(PathBuf::from("/d")));
        assert_eq!(a.udp_port, Some(9));
        assert!(a.no_net_config);
        assert!(args(&["--udp-port", "70000"]).is_err());
        assert!(args(&["--disk"]).is_err());
        assert!(args(&["--bogus"]).is_err());
    }
}
