//! The `nova-vmm` binary: `run` boots one VM in this process (the `nova_vmm` library
//! is the VM); `ctl` hands over to `nova-vmm-ctl` beside it, which talks to a running
//! one over its API socket (the HTTP client lives there, not in every VM's process).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use nova_logging::{LogArgs, LogFormat};
use nova_vmm::migration::outgoing::Slot;
use nova_vmm::migration::tls::Listen;
use nova_vmm::snapshot::{self, RestoreMode};
use nova_vmm::vcpu::VmExit;
use nova_vmm::vm::Vm;
use nova_vmm_api::{DiskConfig, IncomingCredential, KvmKind, NetConfig, VmConfig};

#[derive(Parser)]
#[command(name = "nova-vmm", version, about = "One process, one VM, on /dev/kvm")]
struct Cli {
    #[command(flatten)]
    log: LogArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot a VM and run it until it powers off, resets or is shut down.
    Run(Box<RunArgs>),
    /// Control a running VM through its API socket: runs `nova-vmm-ctl ARGS`
    /// (`nova-vmm ctl --help` for its commands).
    #[command(disable_help_flag = true)]
    Ctl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// JSON file with the VM's configuration (the fields of `GET /v1/vm`'s `config`);
    /// flags given beside it override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// bzImage, ELF vmlinux or PVH ELF kernel.
    #[arg(long)]
    kernel: Option<PathBuf>,
    #[arg(long)]
    initrd: Option<PathBuf>,
    #[arg(long)]
    cmdline: Option<String>,
    #[arg(long)]
    vcpus: Option<u8>,
    #[arg(long)]
    mem_mib: Option<u64>,
    /// PATH[,ro][,shared]; repeat for more disks (`shared`: a live migration does not copy it).
    #[arg(long, value_parser = |s: &str| DiskConfig::parse(s).map_err(|e| e.to_string()))]
    disk: Vec<DiskConfig>,
    /// tap=NAME[,mac=MAC]; repeat for more NICs.
    #[arg(long, value_parser = |s: &str| NetConfig::parse(s).map_err(|e| e.to_string()))]
    net: Vec<NetConfig>,
    /// Unix socket for the VM's HTTP API.
    #[arg(long)]
    api_sock: Option<PathBuf>,
    /// Write the serial console to this file instead of stdout.
    #[arg(long)]
    console: Option<PathBuf>,
    /// Unix socket (0600) where clients attach to the serial console.
    #[arg(long)]
    console_sock: Option<PathBuf>,
    /// Cap of the --console file in bytes (at least 4096; default 8 MiB): past it, its
    /// content moves to `<file>.1` and it starts again.
    #[arg(long)]
    console_max_bytes: Option<u64>,
    /// No ACPI tables: the guest gets the MP table and `virtio_mmio.device=` words
    /// on its command line, and no power button.
    #[arg(long)]
    no_acpi: bool,
    /// Restore the VM from this snapshot directory instead of booting a kernel.
    #[arg(long, conflicts_with_all = ["kernel", "config", "incoming"])]
    restore: Option<PathBuf>,
    /// With --restore: fill memory on first touch (userfaultfd) instead of up front.
    #[arg(long, requires = "restore", conflicts_with = "clone")]
    lazy: bool,
    /// With --restore: map the snapshot's memory copy-on-write, shared with other clones.
    #[arg(long, requires = "restore")]
    clone: bool,
    /// Receive the VM by live migration on tcp:ADDR:PORT instead of booting a kernel.
    /// The VM's memory, vCPUs, disks and NICs come from this command's flags (or
    /// `--config`), never from the stream; a stream describing another VM is refused.
    #[arg(long, conflicts_with = "kernel")]
    incoming: Option<String>,
    /// With --incoming: the JSON file of this migration's credential (certificate,
    /// key and secret; hostd writes one per incoming migration). Only connections
    /// that complete TLS with it and present its secret are read.
    #[arg(long, requires = "incoming", conflicts_with = "insecure")]
    incoming_credential: Option<PathBuf>,
    /// Migrate in plaintext, without authentication (benchmarks only): --incoming
    /// listens without TLS, and `PUT /v1/migration` accepts a request without `peer`.
    #[arg(long)]
    insecure: bool,
    /// Boot, but leave the vCPUs parked until `PUT /v1/vm/resume` (or a migration
    /// moves the never-run VM: hostd's cold migration starts the guest afresh there).
    #[arg(long, conflicts_with_all = ["incoming", "restore"])]
    paused: bool,
    /// Run without the per-thread seccomp filters (development only: every thread may
    /// then make any syscall).
    #[arg(long)]
    no_seccomp: bool,
}

impl RunArgs {
    /// Applies the flags that may change a restored or incoming VM: its backends.
    fn adjust(&self, c: &mut VmConfig) {
        if !self.disk.is_empty() {
            c.disks = self.disk.clone();
        }
        if !self.net.is_empty() {
            c.nets = self.net.clone();
        }
        c.api_sock = self.api_sock.clone();
        c.console = self.console.clone();
        c.console_sock = self.console_sock.clone();
        c.console_max_bytes = self.console_max_bytes.or(c.console_max_bytes);
    }

    /// The VM an incoming migration must bring: `--config` and the flags; memory and
    /// vCPUs are required (they were admitted by whoever started this process), the
    /// kernel is not (an incoming VM loads none).
    fn incoming_config(&self) -> anyhow::Result<VmConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("config {}", path.display()))?;
                VmConfig::from_json(&text).with_context(|| format!("config {}", path.display()))?
            }
            None => {
                let mut c = VmConfig::new(PathBuf::new());
                c.mem_mib = self
                    .mem_mib
                    .context("mem_mib: --incoming needs --mem-mib (or --config)")?;
                c.vcpus = self
                    .vcpus
                    .context("vcpus: --incoming needs --vcpus (or --config)")?;
                c
            }
        };
        c.mem_mib = self.mem_mib.unwrap_or(c.mem_mib);
        c.vcpus = self.vcpus.unwrap_or(c.vcpus);
        self.adjust(&mut c);
        // Checked as a boot would be; the kernel is the only field allowed empty here.
        let mut check = c.clone();
        if check.kernel.as_os_str().is_empty() {
            check.kernel = PathBuf::from("incoming");
        }
        check.validate().context("--incoming")?;
        Ok(c)
    }

    fn into_config(self) -> anyhow::Result<VmConfig> {
        let mut c = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("config {}", path.display()))?;
                VmConfig::from_json(&text).with_context(|| format!("config {}", path.display()))?
            }
            None => VmConfig::new(
                self.kernel
                    .clone()
                    .context("kernel: --kernel is required")?,
            ),
        };
        if let Some(k) = self.kernel {
            c.kernel = k;
        }
        c.initrd = self.initrd.or(c.initrd);
        c.cmdline = self.cmdline.or(c.cmdline);
        c.vcpus = self.vcpus.unwrap_or(c.vcpus);
        c.mem_mib = self.mem_mib.unwrap_or(c.mem_mib);
        if !self.disk.is_empty() {
            c.disks = self.disk;
        }
        if !self.net.is_empty() {
            c.nets = self.net;
        }
        c.api_sock = self.api_sock.or(c.api_sock);
        c.console = self.console.or(c.console);
        c.console_sock = self.console_sock.or(c.console_sock);
        c.console_max_bytes = self.console_max_bytes.or(c.console_max_bytes);
        if self.no_acpi {
            c.acpi = false;
        }
        Ok(c)
    }
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let insecure = args.insecure;
    // Migration and restore threads make userfaultfds from it, and open no file.
    nova_vmm::uffd::open_device();
    if args.no_seccomp {
        tracing::warn!("seccomp filters are off (--no-seccomp)");
    } else {
        // Before any other thread: every thread is started under this filter and
        // narrows it to its own kind's.
        nova_vmm::seccomp::install()?;
        nova_vmm::seccomp::apply(nova_vmm::seccomp::ThreadKind::Main)?;
    }
    let paused = args.paused;
    let vm = if let Some(to) = args.incoming.clone() {
        let addr = to
            .strip_prefix("tcp:")
            .context("--incoming: expected tcp:ADDR:PORT")?
            .to_string();
        // The VM this destination was given is checked before anything else.
        let local = args.incoming_config()?;
        let listen = match (&args.incoming_credential, args.insecure) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--incoming-credential {}", path.display()))?;
                let cred: IncomingCredential = serde_json::from_str(&text)
                    .with_context(|| format!("--incoming-credential {}", path.display()))?;
                Listen::from_credential(&cred)
                    .with_context(|| format!("--incoming-credential {}", path.display()))?
            }
            (None, true) => {
                tracing::warn!("--insecure: the migration stream is plaintext and unauthenticated");
                Listen::Insecure
            }
            (None, false) => anyhow::bail!(
                "--incoming needs --incoming-credential FILE (or --insecure for a plaintext, unauthenticated stream)"
            ),
        };
        // The VM is already running when receive returns (`start` below is a no-op),
        // so its API opens only once it runs here.
        nova_vmm::migration::receiver::receive(&addr, local, listen)?
    } else if let Some(dir) = args.restore.clone() {
        let mode = if args.lazy {
            RestoreMode::Lazy
        } else if args.clone {
            RestoreMode::Clone
        } else {
            RestoreMode::Eager
        };
        Arc::new(snapshot::restore(&dir, mode, |c| args.adjust(c))?)
    } else {
        Arc::new(Vm::create(args.into_config()?)?)
    };
    report_kind(&vm);
    let migrations = Arc::new(Slot::new(insecure));
    let _api = match &vm.config.api_sock {
        Some(path) => Some(nova_vmm::api::serve(path, vm.clone(), migrations.clone())?),
        None => None,
    };
    if paused {
        tracing::info!("booted paused: the vCPUs run on resume");
        vm.spawn_vcpus()?;
    } else {
        vm.start()?;
    }
    let exit = vm.wait();
    if exit != VmExit::Migrated {
        // The next start's backup stays incremental; a migrated VM's bitmaps left
        // with it.
        vm.save_backup_bitmaps();
    }
    if exit == VmExit::Migrated {
        // Let whoever started the migration read its result before the API goes away.
        if let Some(m) = migrations.latest() {
            let t = Instant::now();
            while !m.result_read() && t.elapsed() < Duration::from_secs(3) {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
    Ok(finish(exit))
}

fn report_kind(vm: &Vm) {
    match vm.kind {
        KvmKind::Hardware => tracing::info!("KVM: {}", vm.kind),
        KvmKind::Pvm => tracing::warn!(
            "KVM: {}: guests not built for PVM run in KVM's instruction emulator, about 100x slower",
            vm.kind
        ),
    }
}

/// The process's exit code for how the VM stopped.
fn finish(exit: VmExit) -> ExitCode {
    match exit {
        VmExit::Poweroff
        | VmExit::Reset
        | VmExit::Shutdown
        | VmExit::StopTimeout
        | VmExit::Migrated => {
            tracing::info!("VM stopped: {exit:?}");
            ExitCode::SUCCESS
        }
        VmExit::Error(msg) => {
            tracing::error!("VM failed: {msg}");
            ExitCode::from(1)
        }
    }
}

/// Replaces this process with `nova-vmm-ctl ARGS` from this binary's directory.
fn exec_ctl(args: Vec<OsString>) -> anyhow::Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding nova-vmm's own path")?;
    let ctl = exe.with_file_name("nova-vmm-ctl");
    let err = std::process::Command::new(&ctl).args(args).exec();
    Err(err).with_context(|| format!("running {}", ctl.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => {
            nova_logging::init(cli.log.log_format, "info");
            run(*args)
        }
        Command::Ctl { args } => exec_ctl(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line either way: a JSON log stays all JSON lines.
            match cli.log.log_format {
                LogFormat::Json => tracing::error!("nova-vmm: {e:#}"),
                LogFormat::Text => eprintln!("nova-vmm: {e:#}"),
            }
            ExitCode::from(2)
        }
    }
}
