//! What hostd is started with: flags ([`Args`]), or a TOML file (`--config`,
//! [`FileConfig`]) whose keys are the flags' names without their dashes
//! (`data-dir = "/var/lib/nova"`); a flag given on the command line wins over the
//! file. [`Args::resolve`] merges both, applies the defaults and checks every value,
//! naming the flag (or key) that is wrong. It is over 500 lines because every flag,
//! its file key and their merge belong together: split, a new flag touches three files.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser};
use nova_logging::LogFormat;
use serde::Deserialize;

use crate::admission::Policy;
use crate::host::Config;
use crate::net::{tap, Cidr, VxlanConfig};

/// The defaults of what is optional.
pub const DEFAULT_BRIDGE: &str = "novabr0";
pub const DEFAULT_VXLAN_PORT: u16 = 4789;

/// A value that is wrong: the flag (or config key) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

fn bad(key: &str, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("--{key}: {problem}"))
}

/// nova-hostd's flags.
#[derive(Parser, Debug, Default)]
#[command(
    name = "nova-hostd",
    version,
    about = "NovaCron's per-host daemon: runs and supervises nova-vmm processes"
)]
pub struct Args {
    /// A TOML file with any of the flags below (`listen = "0.0.0.0:7070"`); flags win.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Address of the API, e.g. 0.0.0.0:7070.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Where VMs, images and the host id live.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// File holding the token callers must present (`Authorization: Bearer`).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Controller to register with (`http://host:port` or `https://host:port`).
    #[arg(long)]
    pub controller: Option<String>,
    /// File holding the controller's join token.
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// PEM file of the CA that signs an https controller's certificate.
    #[arg(long)]
    pub controller_ca: Option<PathBuf>,
    /// The nova-vmm binary (default: next to nova-hostd, else on PATH).
    #[arg(long)]
    pub vmm_bin: Option<PathBuf>,
    /// The VM bridge [default: novabr0].
    #[arg(long)]
    pub bridge: Option<String>,
    /// Address for the host on the bridge (e.g. 203.0.113.1/24).
    #[arg(long)]
    pub host_cidr: Option<String>,
    /// Address other hosts reach this one on (migration streams); default: the
    /// listen address, or 127.0.0.1 when that is unspecified.
    #[arg(long)]
    pub advertise_ip: Option<IpAddr>,
    /// VXLAN network id of the overlay; no overlay without it.
    #[arg(long)]
    pub vxlan_vni: Option<u32>,
    /// Local underlay address of the VXLAN tunnel (default: the advertise address).
    #[arg(long)]
    pub vxlan_local: Option<IpAddr>,
    /// Underlay device for VXLAN.
    #[arg(long)]
    pub vxlan_dev: Option<String>,
    /// UDP port of the overlay [default: 4789].
    #[arg(long)]
    pub vxlan_port: Option<u16>,
    /// A peer host's underlay address; repeat for more (or POST /v1/network/peers).
    #[arg(long)]
    pub vxlan_peer: Vec<IpAddr>,
    /// vCPUs admitted per physical core [default: 8].
    #[arg(long)]
    pub cpu_overcommit: Option<f64>,
    /// Guest memory admitted per MiB of host memory [default: 1].
    #[arg(long)]
    pub mem_overcommit: Option<f64>,
    /// Host memory never given to guests, MiB [default: 512].
    #[arg(long)]
    pub mem_reserve_mib: Option<u64>,
    /// Virtual disk size admitted per MiB of the data dir's filesystem [default: 1].
    #[arg(long)]
    pub disk_overcommit: Option<f64>,
    /// Never try FICLONE; always sparse-copy disks.
    #[arg(long)]
    pub no_reflink: bool,
    /// Run VMMs unjailed, as hostd's own user (development only).
    #[arg(long)]
    pub no_jail: bool,
    /// The uids (and gids) given to VMs, one each: FIRST-LAST [default: 300000-399999].
    #[arg(long)]
    pub jail_ids: Option<String>,
    /// Turn on cgroup2's `favordynmods` at start so that a jailed VMM enters its
    /// cgroups in ~0.3 ms instead of an RCU grace period (~13 ms); forks and exits get
    /// slightly slower host-wide. Remounts the host's cgroup2 keeping its other
    /// options, or mounts one at /run/nova/cgroup2 on a pure cgroup v1 host
    /// [default: true; nothing without the jail].
    #[arg(long, value_name = "true|false")]
    pub cgroup_favordynmods: Option<bool>,
    /// Log lines as text or JSON; the filter is the NOVA_LOG environment variable.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// PEM certificate (chain) the API is served with over TLS (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert. Without --tls-cert and --tls-key (and without
    /// --insecure-http), a hostd that joins a controller makes its own key and serves
    /// the certificate the controller issues for it (DATA/tls/host.pem, renewed).
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// What happens to the VMs when hostd is told to stop: keep them running (the
    /// default), stop them, or migrate them away (a drain) and stop what is left.
    /// The host image's nova-init passes stop or migrate.
    #[arg(long, value_enum, default_value_t)]
    pub vms_at_exit: crate::shutdown::VmsAtExit,
    /// Serve plaintext HTTP (no --tls-cert): for tests and benchmarks only.
    #[arg(long)]
    pub insecure_http: bool,
    /// Migrate VMs in plaintext, without per-migration credentials (every VMM runs
    /// `--insecure`): for benchmarks only.
    #[arg(long)]
    pub insecure_migration: bool,
    /// PEM file of the CA that signs other hosts' (https) certificates
    /// [default: --controller-ca].
    #[arg(long)]
    pub ca: Option<PathBuf>,
    /// A directory whose files an admin may name as a VM's kernel, initrd or disk
    /// image by host path (or import); repeat for more. Without one, host paths are
    /// refused and only `sha256:` images from the cache are used.
    #[arg(long)]
    pub image_root: Vec<PathBuf>,
    /// A directory under which backup stores may be named (`{"kind":"dir","path":..}`
    /// in a backup job); repeat for more. Without one, only S3 stores are used.
    #[arg(long)]
    pub backup_root: Vec<PathBuf>,
    /// Largest image upload, MiB [default: 16384].
    #[arg(long)]
    pub max_image_mib: Option<u64>,
    /// Open API connections at most (more wait) [default: 1024].
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// A request's head (or TLS handshake) must arrive within this, s [default: 10].
    #[arg(long)]
    pub header_timeout_s: Option<u64>,
    /// Each piece of a request body must arrive within this, s [default: 30].
    #[arg(long)]
    pub body_timeout_s: Option<u64>,
    /// A connection silent this long with no request in flight is closed, s [default: 120].
    #[arg(long)]
    pub idle_timeout_s: Option<u64>,
    /// An Ed25519 public key (64 hex digits) whose signature a host image upgrade
    /// must carry; repeat for more (key rotation). Without one, unsigned images are
    /// installed.
    #[arg(long, value_name = "HEX")]
    pub trusted_image_key: Vec<String>,
}

/// The `--config` file: the flags' names as keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
    pub controller: Option<String>,
    pub join_token_file: Option<PathBuf>,
    pub controller_ca: Option<PathBuf>,
    pub vmm_bin: Option<PathBuf>,
    pub bridge: Option<String>,
    pub host_cidr: Option<String>,
    pub advertise_ip: Option<IpAddr>,
    pub vxlan_vni: Option<u32>,
    pub vxlan_local: Option<IpAddr>,
    pub vxlan_dev: Option<String>,
    pub vxlan_port: Option<u16>,
    #[serde(default)]
    pub vxlan_peer: Vec<IpAddr>,
    pub cpu_overcommit: Option<f64>,
    pub mem_overcommit: Option<f64>,
    pub mem_reserve_mib: Option<u64>,
    pub disk_overcommit: Option<f64>,
    #[serde(default)]
    pub no_reflink: bool,
    #[serde(default)]
    pub no_jail: bool,
    pub jail_ids: Option<String>,
    pub cgroup_favordynmods: Option<bool>,
    pub log_format: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    #[serde(default)]
    pub insecure_http: bool,
    #[serde(default)]
    pub insecure_migration: bool,
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub image_root: Vec<PathBuf>,
    #[serde(default)]
    pub backup_root: Vec<PathBuf>,
    pub max_image_mib: Option<u64>,
    pub max_connections: Option<usize>,
    pub header_timeout_s: Option<u64>,
    pub body_timeout_s: Option<u64>,
    pub idle_timeout_s: Option<u64>,
    #[serde(default)]
    pub trusted_image_key: Vec<String>,
}

impl FileConfig {
    /// Parses a config file's text; an error names the key.
    pub fn parse(text: &str) -> Result<FileConfig, ConfigError> {
        let de = toml::Deserializer::new(text);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let inner = e.into_inner();
            let msg = inner.message().trim().to_string();
            if key == "." || key.is_empty() {
                ConfigError(msg)
            } else {
                ConfigError(format!("{key}: {msg}"))
            }
        })
    }

    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("--config {}: {e}", path.display())))?;
        FileConfig::parse(&text)
            .map_err(|e| ConfigError(format!("config file {}: {e}", path.display())))
    }
}

/// The controller to join.
#[derive(Debug, Clone)]
pub struct Join {
    pub url: String,
    pub token_file: PathBuf,
    pub ca_file: Option<PathBuf>,
}

/// Everything resolved: what the daemon runs with.
#[derive(Debug)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub token_file: PathBuf,
    pub host: Config,
    pub join: Option<Join>,
    pub log_format: LogFormat,
    /// How the API is served (TLS, connection cap, timeouts).
    pub serve: nova_http::server::ServerOptions,
    /// The CA outgoing https calls (peers, the controller) trust.
    pub ca: Option<PathBuf>,
    /// Where the key and certificate the controller issues are kept (one PEM file,
    /// 0600), when hostd was given no TLS files: it serves them.
    pub issued_tls: Option<PathBuf>,
}

/// Where an issued key and certificate live in the data dir.
pub fn issued_tls_file(data_dir: &Path) -> PathBuf {
    data_dir.join("tls").join("host.pem")
}

fn default_vmm() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.join("nova-vmm")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("nova-vmm"))
}

/// Reads a secret file (a token), at least 16 characters.
pub fn read_secret(path: &Path, what: &str) -> Result<String, ConfigError> {
    let t = std::fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("reading the {what} {}: {e}", path.display())))?;
    let t = t.trim().to_string();
    if t.len() < 16 {
        return Err(ConfigError(format!(
            "the {what} in {} is shorter than 16 characters",
            path.display()
        )));
    }
    Ok(t)
}

impl Args {
    /// Parses the process's command line; `log_format` is kept only when given there.
    pub fn from_command_line() -> Args {
        Self::from_matches(Self::command().get_matches())
    }

    fn from_matches(m: ArgMatches) -> Args {
        let given = m.value_source("log_format") == Some(ValueSource::CommandLine);
        let mut a = Args::from_arg_matches(&m).unwrap_or_else(|e| e.exit());
        if !given {
            a.log_format = None;
        }
        a
    }

    /// Merges the flags with the config file (flags win), applies the defaults and
    /// checks every value. Does not read the token files.
    pub fn resolve(self, file: FileConfig) -> Result<Resolved, ConfigError> {
        let listen = self
            .listen
            .or(file.listen)
            .ok_or_else(|| bad("listen", "is required (flag or config file)"))?;
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .ok_or_else(|| bad("data-dir", "is required (flag or config file)"))?;
        let token_file = self
            .token_file
            .or(file.token_file)
            .ok_or_else(|| bad("token-file", "is required (flag or config file)"))?;
        let d = Policy::default();
        let policy = Policy {
            cpu_overcommit: self
                .cpu_overcommit
                .or(file.cpu_overcommit)
                .unwrap_or(d.cpu_overcommit),
            mem_overcommit: self
                .mem_overcommit
                .or(file.mem_overcommit)
                .unwrap_or(d.mem_overcommit),
            mem_reserve_mib: self
                .mem_reserve_mib
                .or(file.mem_reserve_mib)
                .unwrap_or(d.mem_reserve_mib),
            disk_overcommit: self
                .disk_overcommit
                .or(file.disk_overcommit)
                .unwrap_or(d.disk_overcommit),
        };
        for (name, v) in [
            ("cpu-overcommit", policy.cpu_overcommit),
            ("mem-overcommit", policy.mem_overcommit),
            ("disk-overcommit", policy.disk_overcommit),
        ] {
            if !(v > 0.0 && v <= 1000.0) {
                return Err(bad(name, format!("{v} is out of range (0, 1000]")));
            }
        }
        let bridge = self
            .bridge
            .or(file.bridge)
            .unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
        if bridge.is_empty()
            || bridge.len() >= libc::IFNAMSIZ
            || bridge.contains(['/', ' ', '\0'])
            || tap::is_tap_name(&bridge)
        {
            return Err(bad(
                "bridge",
                format!("{bridge:?} is not an interface name hostd may use (1 to 15 characters, not nt<12 hex digits>)"),
            ));
        }
        let host_cidr = self
            .host_cidr
            .or(file.host_cidr)
            .map(|c| c.parse::<Cidr>().map_err(|e| bad("host-cidr", e)))
            .transpose()?;
        let advertise_ip = self.advertise_ip.or(file.advertise_ip).unwrap_or_else(|| {
            if listen.ip().is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            }
        });
        let vxlan_dev = self.vxlan_dev.or(file.vxlan_dev);
        if let Some(d) = &vxlan_dev {
            if d.is_empty() || d.len() >= libc::IFNAMSIZ {
                return Err(bad("vxlan-dev", format!("{d:?} is not an interface name")));
            }
        }
        let vxlan = self.vxlan_vni.or(file.vxlan_vni).map(|vni| VxlanConfig {
            vni,
            local: self
                .vxlan_local
                .or(file.vxlan_local)
                .unwrap_or(advertise_ip),
            dev: vxlan_dev.clone(),
            port: self
                .vxlan_port
                .or(file.vxlan_port)
                .unwrap_or(DEFAULT_VXLAN_PORT),
        });
        if let Some(v) = &vxlan {
            if v.vni >= 1 << 24 {
                return Err(bad("vxlan-vni", format!("{} is not a 24-bit VNI", v.vni)));
            }
        }
        let vxlan_peers = if self.vxlan_peer.is_empty() {
            file.vxlan_peer
        } else {
            self.vxlan_peer
        };
        let controller = self.controller.or(file.controller);
        let join_token_file = self.join_token_file.or(file.join_token_file);
        let controller_ca = self.controller_ca.or(file.controller_ca);
        let join = match (controller, join_token_file) {
            (Some(url), Some(token_file)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(bad(
                        "controller",
                        format!("{url} is not http(s)://HOST:PORT"),
                    ));
                }
                Some(Join {
                    url,
                    token_file,
                    ca_file: controller_ca,
                })
            }
            (Some(_), None) => return Err(bad("join-token-file", "is required with --controller")),
            (None, Some(_)) => return Err(bad("controller", "is required with --join-token-file")),
            (None, None) if controller_ca.is_some() => {
                return Err(bad("controller-ca", "needs --controller"))
            }
            (None, None) => None,
        };
        let log_format = match (self.log_format, file.log_format) {
            (Some(f), _) => f,
            (None, Some(s)) => <LogFormat as clap::ValueEnum>::from_str(&s, true)
                .map_err(|_| bad("log-format", format!("'{s}' is not text or json")))?,
            (None, None) => LogFormat::Text,
        };
        let insecure = self.insecure_http || file.insecure_http;
        let mut issued_tls = None;
        let tls = match (
            self.tls_cert.or(file.tls_cert),
            self.tls_key.or(file.tls_key),
            insecure,
        ) {
            (Some(cert), Some(key), false) => Some(nova_http::server::TlsFiles { cert, key }),
            (None, None, false) if join.is_some() => {
                // The controller issues the certificate; key and chain in one file, so
                // a renewal replaces both at once.
                let f = issued_tls_file(&data_dir);
                issued_tls = Some(f.clone());
                Some(nova_http::server::TlsFiles {
                    cert: f.clone(),
                    key: f,
                })
            }
            (None, None, true) => None,
            (Some(_), Some(_), true) => {
                return Err(bad("insecure-http", "contradicts --tls-cert: choose one"))
            }
            (Some(_), None, _) | (None, Some(_), _) => {
                return Err(bad("tls-cert", "needs --tls-key (and the other way round)"))
            }
            (None, None, false) => return Err(bad(
                "tls-cert",
                "required: serve TLS (--tls-cert and --tls-key, or --controller to have it issue \
                 this host's certificate), or plaintext with --insecure-http",
            )),
        };
        let positive = |flag: &str, v: Option<u64>, d: u64| match v {
            Some(0) => Err(bad(flag, "must be at least 1")),
            v => Ok(v.unwrap_or(d)),
        };
        let serve = nova_http::server::ServerOptions {
            max_connections: positive(
                "max-connections",
                self.max_connections
                    .or(file.max_connections)
                    .map(|v| v as u64),
                nova_http::server::DEFAULT_MAX_CONNECTIONS as u64,
            )? as usize,
            header_timeout: std::time::Duration::from_secs(positive(
                "header-timeout-s",
                self.header_timeout_s.or(file.header_timeout_s),
                10,
            )?),
            body_timeout: std::time::Duration::from_secs(positive(
                "body-timeout-s",
                self.body_timeout_s.or(file.body_timeout_s),
                30,
            )?),
            idle_timeout: std::time::Duration::from_secs(positive(
                "idle-timeout-s",
                self.idle_timeout_s.or(file.idle_timeout_s),
                120,
            )?),
            tls,
        };
        let image_roots = if self.image_root.is_empty() {
            file.image_root
        } else {
            self.image_root
        };
        for r in &image_roots {
            if !r.is_absolute() {
                return Err(bad(
                    "image-root",
                    format!("{} is not an absolute path", r.display()),
                ));
            }
        }
        let backup_roots = if self.backup_root.is_empty() {
            file.backup_root
        } else {
            self.backup_root
        };
        for r in &backup_roots {
            if !r.is_absolute() {
                return Err(bad(
                    "backup-root",
                    format!("{} is not an absolute path", r.display()),
                ));
            }
        }
        let max_image_mib = positive(
            "max-image-mib",
            self.max_image_mib.or(file.max_image_mib),
            16384,
        )?;
        let ca = self
            .ca
            .or(file.ca)
            .or_else(|| join.as_ref().and_then(|j| j.ca_file.clone()));
        let trusted_image_keys = if self.trusted_image_key.is_empty() {
            file.trusted_image_key
        } else {
            self.trusted_image_key
        };
        for k in &trusted_image_keys {
            nova_hostd_api::validate_key("trusted-image-key", k)
                .map_err(|e| bad("trusted-image-key", e.problem))?;
        }
        let scheme = if serve.tls.is_some() { "https" } else { "http" };
        let host = Config {
            trusted_image_keys,
            image_roots,
            backup_roots,
            max_image_bytes: max_image_mib << 20,
            data_dir,
            token: String::new(),
            vmm_bin: self.vmm_bin.or(file.vmm_bin).unwrap_or_else(default_vmm),
            bridge,
            host_cidr,
            vxlan,
            vxlan_peers,
            policy,
            advertise_ip,
            url: format!(
                "{scheme}://{}",
                SocketAddr::new(advertise_ip, listen.port())
            ),
            reflink: !(self.no_reflink || file.no_reflink),
            insecure_migration: self.insecure_migration || file.insecure_migration,
            jail: crate::jail::JailSettings {
                enabled: !(self.no_jail || file.no_jail),
                ids: match self.jail_ids.or(file.jail_ids) {
                    Some(s) => s.parse().map_err(|e| bad("jail-ids", e))?,
                    None => crate::jail::IdRange::DEFAULT,
                },
                favordynmods: self
                    .cgroup_favordynmods
                    .or(file.cgroup_favordynmods)
                    .unwrap_or(true),
            },
        };
        Ok(Resolved {
            listen,
            token_file,
            host,
            join,
            log_format,
            serve,
            ca,
            issued_tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Args {
        let mut v = vec!["nova-hostd"];
        v.extend(a);
        Args::from_matches(Args::command().get_matches_from(v))
    }

    const FILE: &str = r#"
listen = "127.0.0.1:7070"
data-dir = "/var/lib/nova"
token-file = "/etc/nova/host.token"
cpu-overcommit = 3.0
vxlan-vni = 42
vxlan-peer = ["198.51.100.2"]
log-format = "json"
"#;

    #[test]
    fn the_file_supplies_what_the_flags_do_not_and_flags_win() {
        let file = FileConfig::parse(FILE).unwrap();
        let r = args(&["--cpu-overcommit", "2", "--insecure-http"])
            .resolve(file)
            .unwrap();
        assert_eq!(r.listen.port(), 7070);
        assert_eq!(r.host.data_dir, Path::new("/var/lib/nova"));
        assert_eq!(r.host.policy.cpu_overcommit, 2.0, "the flag wins");
        assert_eq!(r.host.policy.mem_reserve_mib, 512, "the default");
        let v = r.host.vxlan.unwrap();
        assert_eq!((v.vni, v.port), (42, DEFAULT_VXLAN_PORT));
        assert_eq!(
            r.host.vxlan_peers,
            ["198.51.100.2".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(r.log_format, LogFormat::Json);
        assert_eq!(r.host.bridge, DEFAULT_BRIDGE);
        let r = args(&["--log-format", "text", "--insecure-http"])
            .resolve(FileConfig::parse(FILE).unwrap())
            .unwrap();
        assert_eq!(r.log_format, LogFormat::Text, "an explicit flag wins");
    }

    #[test]
    fn cgroup_favordynmods_is_on_unless_a_flag_or_the_file_says_false() {
        let base = [
            "--insecure-http",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "/d",
            "--token-file",
            "/t",
        ];
        let resolve = |extra: &[&str], file: &str| {
            let mut a = base.to_vec();
            a.extend(extra);
            args(&a)
                .resolve(FileConfig::parse(file).unwrap())
                .unwrap()
                .host
                .jail
                .favordynmods
        };
        assert!(resolve(&[], ""));
        assert!(!resolve(&["--cgroup-favordynmods=false"], ""));
        assert!(!resolve(&[], "cgroup-favordynmods = false"));
        assert!(
            resolve(
                &["--cgroup-favordynmods", "true"],
                "cgroup-favordynmods = false"
            ),
            "the flag wins"
        );
    }

    #[test]
    fn a_bad_file_names_the_key() {
        let e = FileConfig::parse("listen = \"127.0.0.1:1\"\nvxlan-vni = \"x\"\n").unwrap_err();
        assert!(e.0.starts_with("vxlan-vni:"), "{e}");
        let e = FileConfig::parse("lisen = \"127.0.0.1:1\"\n").unwrap_err();
        assert!(e.0.contains("lisen"), "{e}");
        let e = FileConfig::parse("cpu-overcommit = [1]\n").unwrap_err();
        assert!(e.0.starts_with("cpu-overcommit:"), "{e}");
    }

    #[test]
    fn bad_values_name_their_flag() {
        let base = [
            "--insecure-http",
            "--listen",
            "127.0.0.1:1",
            "--data-dir",
            "/d",
            "--token-file",
            "/t",
        ];
        let with = |extra: &[&str]| {
            let mut a = base.to_vec();
            a.extend(extra);
            args(&a).resolve(FileConfig::default()).unwrap_err().0
        };
        assert!(with(&["--cpu-overcommit", "0"]).starts_with("--cpu-overcommit"));
        assert!(with(&["--bridge", "nt02aabbccddee"]).starts_with("--bridge"));
        assert!(with(&["--host-cidr", "203.0.113.1"]).starts_with("--host-cidr"));
        assert!(with(&["--controller", "http://c:1"]).starts_with("--join-token-file"));
        assert!(with(&["--controller-ca", "/ca.pem"]).starts_with("--controller-ca"));
        assert!(with(&["--vxlan-vni", "16777216"]).starts_with("--vxlan-vni"));
        assert!(with(&["--trusted-image-key", "abc"]).starts_with("--trusted-image-key"));
        let e = Args::command()
            .try_get_matches_from(["nova-hostd", "--cgroup-favordynmods", "maybe"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cgroup-favordynmods"), "{e}");
        let e = args(&[]).resolve(FileConfig::default()).unwrap_err().0;
        assert!(e.starts_with("--listen"), "{e}");
    }
}
