//! How nova-controller is configured: flags (and their environment variables), or a
//! TOML file (`--config`) with the same settings under the same names (`_` for `-`);
//! a flag given on the command line wins over the file. Unknown keys in the file are
//! refused, naming the key.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::context::{Retention, Settings};
use crate::scheduler::Weights;

/// The command line.
#[derive(Debug, clap::Parser)]
#[command(
    name = "nova-controller",
    version,
    about = "NovaCron cluster controller: the /v1 API, the scheduler and the reconcile loops"
)]
pub struct Args {
    /// A TOML file with any of the settings below (`listen = "..."`, `etcd_ca = "..."`);
    /// flags given here override it.
    #[arg(long, env = "NOVA_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub log: nova_logging::LogArgs,
    #[command(flatten)]
    pub options: Options,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Commands other than serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Makes a development CA in DIR (ca.pem, ca.key) and one server certificate it
    /// signs (server.pem, server.key) for localhost, 127.0.0.1 and every --san: what
    /// `--tls-cert/--tls-key` and the clients' `--ca` take. Not for production.
    DevCa {
        dir: PathBuf,
        /// Another DNS name or IP address of the certificate; repeat for more.
        #[arg(long)]
        san: Vec<String>,
    },
}

/// Every setting, as a flag or a key of the config file. None: not given there.
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Address of the API [default: 127.0.0.1:7070].
    #[arg(long, env = "NOVA_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// `sqlite:PATH` or `etcd:http(s)://HOST:PORT[,...]` [default: sqlite:/var/lib/nova/controller.db].
    #[arg(long, env = "NOVA_STORE")]
    pub store: Option<String>,
    /// Where the first admin token is written (0600) when the cluster is new
    /// [default: /var/lib/nova/admin.token].
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// The join token hosts register with: read from this file, created if missing
    /// [default: /var/lib/nova/join.token].
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// The join token file enrols hosts for this long after it was written (its
    /// mtime), s [default: no limit]; `POST /v1/join-tokens` issues expiring,
    /// single-use ones.
    #[arg(long)]
    pub join_token_max_age_s: Option<u64>,
    /// This controller's name in the leader election [default: controller-<pid>].
    #[arg(long)]
    pub node: Option<String>,
    /// Between reconcile passes, ms [default: 1000].
    #[arg(long)]
    pub reconcile_interval_ms: Option<u64>,
    /// A host silent this long is marked down, ms [default: 16000].
    #[arg(long)]
    pub down_after_ms: Option<u64>,
    /// How often hosts are told to heartbeat, ms [default: 5000].
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// `spread` or `binpack` [default: spread].
    #[arg(long)]
    pub strategy: Option<String>,
    /// Failed authentications per client address per minute before it is refused
    /// [default: 20].
    #[arg(long)]
    pub max_failed_auth: Option<u32>,
    /// PEM certificate (chain) the API is served with over TLS (with --tls-key).
    #[arg(long)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long)]
    pub tls_key: Option<PathBuf>,
    /// Serve plaintext HTTP (no --tls-cert): for tests and benchmarks only.
    #[arg(long, num_args = 0, default_missing_value = "true")]
    pub insecure_http: Option<bool>,
    /// PEM file of the CA that signs hosts' (https) hostd certificates.
    #[arg(long)]
    pub hostd_ca: Option<PathBuf>,
    /// PEM file of the CA that signs federation peers' (https) certificates: peers
    /// are then trusted through it and the web roots only, not through
    /// `--hostd-ca` [default: `--hostd-ca`].
    #[arg(long)]
    pub federation_peer_ca: Option<PathBuf>,
    /// PEM private key of --hostd-ca: with it the controller issues hosts' serving
    /// certificates at registration (a host given no TLS files asks for one).
    #[arg(long)]
    pub hostd_ca_key: Option<PathBuf>,
    /// How long a host certificate issued with --hostd-ca-key lives; hosts renew it
    /// at two thirds of that, s [default: 86400; at least 10].
    #[arg(long)]
    pub host_cert_ttl_s: Option<u64>,
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
    /// VMs one tenant may have at most (beside its quota) [default: 1000].
    #[arg(long)]
    pub max_vms_per_tenant: Option<u64>,
    /// Largest image upload (`POST /v1/images`), MiB [default: 16384].
    #[arg(long)]
    pub max_image_mib: Option<u64>,
    /// Directory of host image versions hosts upgrade to: `DIR/VERSION/vmlinuz` and
    /// `DIR/VERSION/initrd.img` (a `make host-image` output copied there).
    #[arg(long)]
    pub system_images: Option<PathBuf>,
    /// PEM file of the CA that signs etcd's certificate (for `etcd:https://`).
    #[arg(long)]
    pub etcd_ca: Option<PathBuf>,
    /// PEM file of this controller's client certificate, for an etcd that asks for one.
    #[arg(long)]
    pub etcd_cert: Option<PathBuf>,
    /// PEM file of the key of `--etcd-cert`.
    #[arg(long)]
    pub etcd_key: Option<PathBuf>,
    /// etcd user, for an etcd with authentication enabled.
    #[arg(long)]
    pub etcd_user: Option<String>,
    /// File holding the etcd user's password.
    #[arg(long)]
    pub etcd_password_file: Option<PathBuf>,
    /// Finished operations older than this are pruned, s [default: 604800, 7 days].
    #[arg(long)]
    pub operations_max_age_s: Option<u64>,
    /// Finished operations kept at most (the oldest go first) [default: 10000].
    #[arg(long)]
    pub operations_max_count: Option<usize>,
    /// Audit entries older than this are pruned, s [default: 7776000, 90 days].
    #[arg(long)]
    pub audit_max_age_s: Option<u64>,
    /// Audit entries kept at most [default: 100000].
    #[arg(long)]
    pub audit_max_count: Option<usize>,
    /// Events older than this are pruned (a stream cannot resume before them), s
    /// [default: 86400].
    #[arg(long)]
    pub events_max_age_s: Option<u64>,
    /// Events kept at most [default: 100000].
    #[arg(long)]
    pub events_max_count: Option<usize>,
    /// How long a retried create with the same Idempotency-Key answers the first
    /// answer, s [default: 86400].
    #[arg(long)]
    pub idempotency_ttl_s: Option<u64>,
    /// How often the leader prunes history, s [default: 60].
    #[arg(long)]
    pub prune_interval_s: Option<u64>,
    /// The metric history's SQLite file [default: metrics.db beside a sqlite: store,
    /// else /var/lib/nova/metrics.db].
    #[arg(long)]
    pub metrics_db: Option<PathBuf>,
    /// Between scrapes of every hostd's /metrics (and the finest resolution of the
    /// history), ms [default: 10000].
    #[arg(long)]
    pub scrape_interval_ms: Option<u64>,
    /// Between writes of the history's open chunks (what a crash may lose), s
    /// [default: 60].
    #[arg(long)]
    pub metrics_checkpoint_s: Option<u64>,
    /// Series the history keeps at most [default: 200000].
    #[arg(long)]
    pub metrics_max_series: Option<usize>,
    /// Between evaluations of the alert rules by the leader, ms [default: 10000].
    #[arg(long)]
    pub alert_interval_ms: Option<u64>,
    /// `[cloud]` (config file only): the provider burst hosts are launched through,
    /// what they are told, and the burst policy until the API sets one (docs/cloud.md).
    #[arg(skip)]
    #[serde(default)]
    pub cloud: Option<crate::cloud::CloudOptions>,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0}: {1}")]
    File(PathBuf, String),
    #[error("--{0}: {1}")]
    Value(&'static str, String),
    /// A value of the file's `[cloud]` table: names the key (`cloud.ec2.ami`).
    #[error("config file: {0}")]
    Cloud(String),
}

/// Takes `a`'s value of each field, `b`'s where `a` has none.
macro_rules! merge {
    ($a:expr, $b:expr; $($f:ident),* $(,)?) => {
        Options { $($f: $a.$f.or($b.$f)),* }
    };
}

impl Options {
    /// These options, with `file`'s where these have none.
    pub fn over(self, file: Options) -> Options {
        merge!(self, file;
            listen, store, admin_token_file, join_token_file, node, reconcile_interval_ms,
            down_after_ms, heartbeat_ms, strategy, max_failed_auth, etcd_ca, etcd_cert,
            etcd_key, etcd_user, etcd_password_file, operations_max_age_s,
            operations_max_count, audit_max_age_s, audit_max_count, events_max_age_s,
            events_max_count, idempotency_ttl_s, prune_interval_s, tls_cert, tls_key,
            insecure_http, hostd_ca, federation_peer_ca, hostd_ca_key, host_cert_ttl_s, max_connections,
            header_timeout_s, body_timeout_s,
            idle_timeout_s, max_vms_per_tenant, max_image_mib, system_images, join_token_max_age_s,
            metrics_db, scrape_interval_ms, metrics_checkpoint_s, metrics_max_series,
            alert_interval_ms, cloud)
    }

    /// Reads a config file.
    pub fn from_file(path: &Path) -> Result<Options, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::File(path.into(), e.to_string()))?;
        toml::from_str(&text).map_err(|e| ConfigError::File(path.into(), e.to_string()))
    }
}

/// The configuration in force: every setting with its default filled in.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub store: String,
    pub admin_token_file: PathBuf,
    pub join_token_file: PathBuf,
    /// How long the join token file enrols hosts after it was written.
    pub join_token_max_age: Option<Duration>,
    pub node: String,
    pub max_failed_auth: u32,
    pub etcd: EtcdFiles,
    /// How the API is served (TLS, connection cap, timeouts).
    pub serve: nova_http::server::ServerOptions,
    pub settings: Settings,
    /// `[cloud]`, checked.
    pub cloud: Option<crate::cloud::CloudOptions>,
}

/// Where the etcd credentials are.
#[derive(Debug, Clone, Default)]
pub struct EtcdFiles {
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
}

/// The hostd CA of `--hostd-ca` and `--hostd-ca-key`, when both are given.
fn host_ca(o: &Options) -> Result<Option<std::sync::Arc<crate::hostca::HostCa>>, ConfigError> {
    let ttl = match o.host_cert_ttl_s {
        Some(t) if t < 10 => {
            return Err(ConfigError::Value(
                "host-cert-ttl-s",
                format!("{t} is under 10 s"),
            ))
        }
        t => Duration::from_secs(t.unwrap_or(86_400)),
    };
    match (&o.hostd_ca, &o.hostd_ca_key) {
        (Some(cert), Some(key)) => crate::hostca::HostCa::load(cert, key, ttl)
            .map(|ca| Some(std::sync::Arc::new(ca)))
            .map_err(|e| ConfigError::Value("hostd-ca-key", e.to_string())),
        (None, Some(_)) => Err(ConfigError::Value(
            "hostd-ca-key",
            "needs --hostd-ca (the certificate of that key)".into(),
        )),
        _ if o.host_cert_ttl_s.is_some() => Err(ConfigError::Value(
            "host-cert-ttl-s",
            "needs --hostd-ca-key (only issued certificates have it)".into(),
        )),
        _ => Ok(None),
    }
}

impl Args {
    /// The flags over the config file (when there is one), defaults for the rest.
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let o = match &self.config {
            Some(f) => self.options.over(Options::from_file(f)?),
            None => self.options,
        };
        let weights = match o.strategy.as_deref().unwrap_or("spread") {
            "spread" => Weights {
                binpack: 0.0,
                spread: 1.0,
            },
            "binpack" => Weights {
                binpack: 1.0,
                spread: 0.0,
            },
            other => {
                return Err(ConfigError::Value(
                    "strategy",
                    format!("{other:?}: expected spread or binpack"),
                ))
            }
        };
        if o.etcd_cert.is_some() != o.etcd_key.is_some() {
            return Err(ConfigError::Value(
                "etcd-cert",
                "needs --etcd-key (and the other way round)".into(),
            ));
        }
        if o.etcd_user.is_some() != o.etcd_password_file.is_some() {
            return Err(ConfigError::Value(
                "etcd-user",
                "needs --etcd-password-file (and the other way round)".into(),
            ));
        }
        let tls =
            match (
                o.tls_cert.clone(),
                o.tls_key.clone(),
                o.insecure_http.unwrap_or(false),
            ) {
                (Some(cert), Some(key), false) => Some(nova_http::server::TlsFiles { cert, key }),
                (None, None, true) => None,
                (Some(_), Some(_), true) => {
                    return Err(ConfigError::Value(
                        "insecure-http",
                        "contradicts --tls-cert: choose one".into(),
                    ))
                }
                (Some(_), None, _) | (None, Some(_), _) => {
                    return Err(ConfigError::Value(
                        "tls-cert",
                        "needs --tls-key (and the other way round)".into(),
                    ))
                }
                (None, None, false) => return Err(ConfigError::Value(
                    "tls-cert",
                    "required: serve TLS (--tls-cert and --tls-key; `nova-controller dev-ca DIR` \
                     makes a development pair), or plaintext with --insecure-http"
                        .into(),
                )),
            };
        let positive = |flag: &'static str, v: Option<u64>, d: u64| match v {
            Some(0) => Err(ConfigError::Value(flag, "must be at least 1".into())),
            v => Ok(v.unwrap_or(d)),
        };
        let serve = nova_http::server::ServerOptions {
            tls,
            max_connections: positive(
                "max-connections",
                o.max_connections.map(|v| v as u64),
                nova_http::server::DEFAULT_MAX_CONNECTIONS as u64,
            )? as usize,
            header_timeout: Duration::from_secs(positive(
                "header-timeout-s",
                o.header_timeout_s,
                10,
            )?),
            body_timeout: Duration::from_secs(positive("body-timeout-s", o.body_timeout_s, 30)?),
            idle_timeout: Duration::from_secs(positive("idle-timeout-s", o.idle_timeout_s, 120)?),
        };
        let max_vms_per_tenant = positive("max-vms-per-tenant", o.max_vms_per_tenant, 1000)?;
        let max_image_mib = positive("max-image-mib", o.max_image_mib, 16384)?;
        let ms = |v: Option<u64>, d: u64| Duration::from_millis(v.unwrap_or(d));
        let s = |v: Option<u64>, d: Duration| v.map(Duration::from_secs).unwrap_or(d);
        let r = Retention::default();
        let retention = Retention {
            operations_max_age: s(o.operations_max_age_s, r.operations_max_age),
            operations_max_count: o.operations_max_count.unwrap_or(r.operations_max_count),
            audit_max_age: s(o.audit_max_age_s, r.audit_max_age),
            audit_max_count: o.audit_max_count.unwrap_or(r.audit_max_count),
            events_max_age: s(o.events_max_age_s, r.events_max_age),
            events_max_count: o.events_max_count.unwrap_or(r.events_max_count),
            idempotency_ttl: s(o.idempotency_ttl_s, r.idempotency_ttl),
            every: s(o.prune_interval_s, r.every),
        };
        let host_ca = host_ca(&o)?;
        let store = o
            .store
            .unwrap_or_else(|| "sqlite:/var/lib/nova/controller.db".into());
        let metrics_db = o.metrics_db.clone().unwrap_or_else(|| {
            store
                .strip_prefix("sqlite:")
                .and_then(|p| Path::new(p).parent())
                .map(|d| d.join("metrics.db"))
                .unwrap_or_else(|| "/var/lib/nova/metrics.db".into())
        });
        let scrape = ms(o.scrape_interval_ms, 10_000);
        if scrape < Duration::from_millis(1000) {
            return Err(ConfigError::Value(
                "scrape-interval-ms",
                "must be at least 1000 (the history's finest resolution is a second)".into(),
            ));
        }
        let monitoring = crate::monitoring::MonitoringSettings {
            db: Some(metrics_db),
            scrape_interval: scrape,
            checkpoint: s(o.metrics_checkpoint_s, Duration::from_secs(60)),
            max_series: o.metrics_max_series.unwrap_or(200_000),
            tiers: crate::monitoring::tsdb::DEFAULT_TIERS.to_vec(),
            alert_interval: match o.alert_interval_ms {
                Some(v) if v < 100 => {
                    return Err(ConfigError::Value(
                        "alert-interval-ms",
                        "must be at least 100".into(),
                    ))
                }
                v => ms(v, 10_000),
            },
        };
        if let Some(c) = &o.cloud {
            c.validate().map_err(ConfigError::Cloud)?;
        }
        Ok(Config {
            cloud: o.cloud.clone(),
            listen: o
                .listen
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7070))),
            store,
            admin_token_file: o
                .admin_token_file
                .unwrap_or_else(|| "/var/lib/nova/admin.token".into()),
            join_token_file: o
                .join_token_file
                .unwrap_or_else(|| "/var/lib/nova/join.token".into()),
            join_token_max_age: o.join_token_max_age_s.map(Duration::from_secs),
            node: o
                .node
                .unwrap_or_else(|| format!("controller-{}", std::process::id())),
            max_failed_auth: o.max_failed_auth.unwrap_or(20),
            etcd: EtcdFiles {
                ca: o.etcd_ca,
                cert: o.etcd_cert,
                key: o.etcd_key,
                user: o.etcd_user,
                password_file: o.etcd_password_file,
            },
            serve,
            settings: Settings {
                federation_peer_ca: o.federation_peer_ca.or_else(|| o.hostd_ca.clone()),
                hostd_ca: o.hostd_ca,
                host_ca,
                system_images: o.system_images,
                max_vms_per_tenant,
                max_image_mib,
                heartbeat: ms(o.heartbeat_ms, 5000),
                reconcile_interval: ms(o.reconcile_interval_ms, 1000),
                down_after: ms(o.down_after_ms, 16000),
                weights,
                retention,
                monitoring,
                burst_policy: o
                    .cloud
                    .as_ref()
                    .and_then(|c| c.burst.clone())
                    .unwrap_or_default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn file(text: &str) -> (nova_tests::TempDir, PathBuf) {
        let d = nova_tests::TempDir::new();
        let p = d.join("controller.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn a_flag_wins_over_the_file_and_the_file_over_the_default() {
        let (_d, p) =
            file("listen = \"127.0.0.1:9000\"\nheartbeat_ms = 700\nstrategy = \"binpack\"\n");
        let a = Args::parse_from([
            "nova-controller",
            "--config",
            p.to_str().unwrap(),
            "--listen",
            "127.0.0.1:9001",
            "--insecure-http",
        ]);
        let c = a.resolve().unwrap();
        assert_eq!(c.listen.port(), 9001, "the flag wins");
        assert_eq!(
            c.settings.heartbeat,
            Duration::from_millis(700),
            "from the file"
        );
        assert_eq!(c.settings.weights.binpack, 1.0, "from the file");
        assert_eq!(
            c.settings.down_after,
            Duration::from_millis(16000),
            "default"
        );
    }

    #[test]
    fn an_unknown_or_mistyped_key_in_the_file_is_named() {
        let (_d, p) = file("lisen = \"127.0.0.1:9000\"\n");
        let a = Args::parse_from(["nova-controller", "--config", p.to_str().unwrap()]);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");
        let (_d, p) = file("heartbeat_ms = \"often\"\n");
        let a = Args::parse_from(["nova-controller", "--config", p.to_str().unwrap()]);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("heartbeat_ms"), "{e}");
    }

    #[test]
    fn the_metric_history_sits_beside_the_store_and_its_interval_is_checked() {
        let a = Args::parse_from([
            "nova-controller",
            "--insecure-http",
            "--store",
            "sqlite:/srv/nova/c.db",
        ]);
        let m = a.resolve().unwrap().settings.monitoring;
        assert_eq!(m.db.as_deref(), Some(Path::new("/srv/nova/metrics.db")));
        assert_eq!(m.scrape_interval, Duration::from_secs(10));
        let a = Args::parse_from([
            "nova-controller",
            "--insecure-http",
            "--metrics-db",
            "/x/m.db",
            "--scrape-interval-ms",
            "2000",
            "--metrics-checkpoint-s",
            "5",
            "--metrics-max-series",
            "7",
        ]);
        let m = a.resolve().unwrap().settings.monitoring;
        assert_eq!(m.db.as_deref(), Some(Path::new("/x/m.db")));
        assert_eq!(m.scrape_interval, Duration::from_secs(2));
        assert_eq!(m.checkpoint, Duration::from_secs(5));
        assert_eq!(m.max_series, 7);
        let a = Args::parse_from([
            "nova-controller",
            "--insecure-http",
            "--scrape-interval-ms",
            "10",
        ]);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("scrape-interval-ms"), "{e}");
    }

    #[test]
    fn the_alert_interval_defaults_to_ten_seconds_and_is_checked() {
        let a = Args::parse_from(["nova-controller", "--insecure-http"]);
        let m = a.resolve().unwrap().settings.monitoring;
        assert_eq!(m.alert_interval, Duration::from_secs(10));
        let a = Args::parse_from([
            "nova-controller",
            "--insecure-http",
            "--alert-interval-ms",
            "500",
        ]);
        let m = a.resolve().unwrap().settings.monitoring;
        assert_eq!(m.alert_interval, Duration::from_millis(500));
        let a = Args::parse_from([
            "nova-controller",
            "--insecure-http",
            "--alert-interval-ms",
            "5",
        ]);
        let e = a.resolve().unwrap_err().to_string();
        assert!(e.contains("alert-interval-ms"), "{e}");
    }
}
