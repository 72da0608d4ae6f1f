//! `novactl alert`, `novactl alert-rule`, `novactl alert-receiver` and `novactl
//! capacity`: the built-in alerting (alerts to list, acknowledge and silence; rules
//! and receivers from JSON or YAML files; dead letters) and capacity planning.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use nova_controller_api::{
    Alert, AlertRule, Capacity, CapacityQuery, ControllerClient, DeadLetter, NewSilence, Receiver,
    ReceiverKind, RuleKind, Silence,
};

use crate::dates::ago;
use crate::output::{self, Columns, Format};

#[derive(Subcommand)]
pub enum AlertCmd {
    /// Alerts: active and recently resolved (a tenant sees its VMs').
    List,
    /// Acknowledge an alert: somebody is on it, no more notifications until it resolves.
    Ack {
        /// The alert's id (`<rule>:<target>`).
        id: String,
    },
    /// Silence one alert (by id) or every alert matching `--match` labels.
    #[command(after_long_help = "Examples:
  novactl alert silence host-down:host-a --for-s 3600
  novactl alert silence --match rule=disk-filling --match 'target=host-*' --for-s 86400 --comment 'disks on order'")]
    Silence {
        /// The alert's id; omit it to silence by `--match`.
        id: Option<String>,
        /// `label=value` (labels: rule, target, metric, severity, tenant; a value
        /// ending in `*` matches what it begins).
        #[arg(long = "match", value_name = "LABEL=VALUE")]
        matchers: Vec<String>,
        /// For how long, s.
        #[arg(long)]
        for_s: u64,
        /// Why (shown in `alert silences`).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Silences and when they end.
    Silences,
    /// End a silence now.
    Unsilence {
        /// The silence's id.
        id: String,
    },
    /// Notifications given up on after their retries.
    DeadLetters,
}

#[derive(Subcommand)]
pub enum RuleCmd {
    /// Every rule (the shipped ones are `builtin`).
    List,
    /// One rule.
    Get {
        /// The rule's id.
        id: String,
    },
    /// Create a rule from a JSON or YAML file (the API's `AlertRule`).
    #[command(after_long_help = "Example file (YAML):
  id: vm-cpu-anomaly
  metric: vm.cpu
  condition: {kind: anomaly, z: 6, window_s: 3600}
  for_s: 60
  severity: warning
  summary: the VM's CPU left its usual level")]
    Create {
        /// The file (`-` for stdin).
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Replace a rule from a JSON or YAML file.
    Replace {
        /// The file (`-` for stdin).
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Delete a rule (its alerts resolve).
    Delete {
        /// The rule's id.
        id: String,
    },
}

#[derive(Subcommand)]
pub enum ReceiverCmd {
    /// Every receiver (webhook secrets are never shown).
    List,
    /// Create a receiver from a JSON or YAML file (the API's `Receiver`).
    #[command(after_long_help = "Example file (YAML):
  id: ops-hook
  channel: {kind: webhook, url: 'https://ops.example/hook', secret: 'at least 16 characters'}
  min_severity: warning")]
    Create {
        /// The file (`-` for stdin).
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Delete a receiver.
    Delete {
        /// The receiver's id.
        id: String,
    },
}

/// `novactl capacity`'s flags.
#[derive(clap::Args)]
pub struct CapacityArgs {
    /// vCPUs of the VM size to count [default: 1].
    #[arg(long)]
    vcpus: Option<u64>,
    /// Memory of the VM size to count, MiB [default: 512].
    #[arg(long)]
    mem_mib: Option<u64>,
    /// History the trends are fitted over, s [default: a week].
    #[arg(long)]
    window_s: Option<u64>,
}

fn read_file<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(path).with_context(|| path.display().to_string())?
    };
    // YAML is a superset of JSON: one parser reads both.
    serde_yaml_ng::from_str(&text).with_context(|| path.display().to_string())
}

impl Columns for Alert {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec!["id", "state", "severity", "value", "since", "summary"];
        if wide {
            h.extend(["tenant", "count", "acknowledged by"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let state = serde_json::to_value(self.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut c = vec![
            self.id.clone(),
            state,
            self.severity.clone(),
            format!("{:.3}", self.value),
            ago(self.since_ms),
            self.summary.clone(),
        ];
        if wide {
            c.extend([
                self.tenant.clone(),
                self.count.to_string(),
                output::or_dash(self.acknowledged_by.clone()),
            ]);
        }
        c
    }
}

fn condition(k: &RuleKind) -> String {
    match k {
        RuleKind::Threshold {
            cmp,
            value,
            ratio_of,
        } => format!(
            "{} {value}{}",
            if matches!(cmp, nova_controller_api::Cmp::Above) {
                ">"
            } else {
                "<"
            },
            ratio_of
                .as_ref()
                .map(|r| format!(" of {r}"))
                .unwrap_or_default()
        ),
        RuleKind::Change {
            cmp,
            value,
            window_s,
        } => format!(
            "change {} {value} in {window_s}s",
            if matches!(cmp, nova_controller_api::Cmp::Above) {
                ">"
            } else {
                "<"
            }
        ),
        RuleKind::Absent { window_s } => format!("absent {window_s}s"),
        RuleKind::Anomaly { z, window_s } => format!("|z| > {z} over {window_s}s"),
        RuleKind::Forecast {
            capacity_of,
            days,
            window_s,
        } => format!("reaches {capacity_of} in < {days} days (fit over {window_s}s)"),
    }
}

impl Columns for AlertRule {
    fn headers(_: bool) -> Vec<&'static str> {
        vec!["id", "metric", "condition", "for", "severity", "builtin"]
    }
    fn cells(&self, _: bool) -> Vec<String> {
        vec![
            self.id.clone(),
            self.metric.clone(),
            condition(&self.condition),
            format!("{}s", self.for_s),
            self.severity.clone(),
            if self.builtin { "yes" } else { "no" }.into(),
        ]
    }
}

impl Columns for Silence {
    fn headers(_: bool) -> Vec<&'static str> {
        vec!["id", "matchers", "ends", "by", "comment"]
    }
    fn cells(&self, _: bool) -> Vec<String> {
        vec![
            self.id.clone(),
            output::pairs(&self.matchers),
            ago(self.until_ms),
            self.created_by.clone(),
            self.comment.clone(),
        ]
    }
}

impl Columns for Receiver {
    fn headers(_: bool) -> Vec<&'static str> {
        vec!["id", "kind", "where", "min severity", "attempts"]
    }
    fn cells(&self, _: bool) -> Vec<String> {
        let (kind, dest) = match &self.channel {
            ReceiverKind::Webhook { url, .. } => ("webhook", url.clone()),
            ReceiverKind::Email { smtp, to, .. } => {
                ("email", format!("{} via {smtp}", to.join(",")))
            }
            ReceiverKind::Alertmanager { url } => ("alertmanager", url.clone()),
        };
        vec![
            self.id.clone(),
            kind.into(),
            dest,
            output::or_dash(self.min_severity.clone()),
            self.max_attempts.to_string(),
        ]
    }
}

impl Columns for DeadLetter {
    fn headers(_: bool) -> Vec<&'static str> {
        vec![
            "id", "receiver", "at", "attempts", "group", "status", "error",
        ]
    }
    fn cells(&self, _: bool) -> Vec<String> {
        vec![
            self.id.clone(),
            self.receiver.clone(),
            ago(self.at_ms),
            self.attempts.to_string(),
            self.notification.group.clone(),
            self.notification.status.clone(),
            self.error.clone(),
        ]
    }
}

fn matchers(m: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    m.iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow::anyhow!("--match {s}: not LABEL=VALUE"))
        })
        .collect()
}

pub async fn alert(api: &ControllerClient, cmd: AlertCmd, f: Format) -> anyhow::Result<()> {
    match cmd {
        AlertCmd::List => print!("{}", output::list(f, &api.alerts().await?)?),
        AlertCmd::Ack { id } => print!("{}", output::one(f, &api.ack_alert(&id).await?)?),
        AlertCmd::Silence {
            id: Some(id),
            matchers: m,
            for_s,
            ..
        } => {
            anyhow::ensure!(m.is_empty(), "give an alert id or --match, not both");
            print!("{}", output::one(f, &api.silence_alert(&id, for_s).await?)?)
        }
        AlertCmd::Silence {
            id: None,
            matchers: m,
            for_s,
            comment,
        } => {
            anyhow::ensure!(!m.is_empty(), "give an alert id or at least one --match");
            let s = api
                .create_silence(&NewSilence {
                    matchers: matchers(&m)?,
                    for_s,
                    comment,
                })
                .await?;
            print!("{}", output::one(f, &s)?)
        }
        AlertCmd::Silences => print!("{}", output::list(f, &api.silences().await?)?),
        AlertCmd::Unsilence { id } => {
            print!("{}", output::one(f, &api.delete_silence(&id).await?)?)
        }
        AlertCmd::DeadLetters => print!("{}", output::list(f, &api.dead_letters().await?)?),
    }
    Ok(())
}

pub async fn rule(api: &ControllerClient, cmd: RuleCmd, f: Format) -> anyhow::Result<()> {
    match cmd {
        RuleCmd::List => print!("{}", output::list(f, &api.alert_rules().await?)?),
        RuleCmd::Get { id } => print!("{}", output::one(f, &api.alert_rule(&id).await?)?),
        RuleCmd::Create { file } => {
            let r: AlertRule = read_file(&file)?;
            print!("{}", output::one(f, &api.create_alert_rule(&r).await?)?)
        }
        RuleCmd::Replace { file } => {
            let r: AlertRule = read_file(&file)?;
            print!("{}", output::one(f, &api.put_alert_rule(&r).await?)?)
        }
        RuleCmd::Delete { id } => {
            print!("{}", output::one(f, &api.delete_alert_rule(&id).await?)?)
        }
    }
    Ok(())
}

pub async fn receiver(api: &ControllerClient, cmd: ReceiverCmd, f: Format) -> anyhow::Result<()> {
    match cmd {
        ReceiverCmd::List => print!("{}", output::list(f, &api.alert_receivers().await?)?),
        ReceiverCmd::Create { file } => {
            let r: Receiver = read_file(&file)?;
            print!("{}", output::one(f, &api.create_alert_receiver(&r).await?)?)
        }
        ReceiverCmd::Delete { id } => {
            print!(
                "{}",
                output::one(f, &api.delete_alert_receiver(&id).await?)?
            )
        }
    }
    Ok(())
}

fn amount(resource: &str, v: f64) -> String {
    if resource == "vcpus" {
        format!("{v:.1}")
    } else {
        format!("{:.1}GiB", v / 1073741824.0)
    }
}

fn days(d: Option<f64>) -> String {
    match d {
        Some(d) if d < 10.0 => format!("{d:.2}"),
        Some(d) => format!("{d:.0}"),
        None => "-".into(),
    }
}

pub async fn capacity(api: &ControllerClient, a: CapacityArgs, f: Format) -> anyhow::Result<()> {
    let c: Capacity = api
        .capacity(&CapacityQuery {
            vcpus: a.vcpus,
            mem_mib: a.mem_mib,
            window_s: a.window_s,
        })
        .await?;
    if !f.is_table() {
        print!("{}", output::data(f, &c)?);
        return Ok(());
    }
    let mut rows = vec![];
    for h in c.hosts.iter().chain(std::iter::once(&c.cluster)) {
        for r in &h.resources {
            rows.push(vec![
                h.host.clone(),
                r.resource.clone(),
                amount(&r.resource, r.allocated),
                amount(&r.resource, r.capacity),
                r.used.map_or("-".into(), |u| amount(&r.resource, u)),
                format!("{}/day", amount(&r.resource, r.trend_per_day)),
                days(r.days_until_full),
                days(r.days_until_used_full),
            ]);
        }
    }
    print!(
        "{}",
        output::table(
            &[
                "host",
                "resource",
                "allocated",
                "capacity",
                "used",
                "trend",
                "days to full",
                "days to used full"
            ],
            &rows
        )
    );
    let fits: Vec<Vec<String>> = c
        .hosts
        .iter()
        .chain(std::iter::once(&c.cluster))
        .map(|h| {
            vec![
                h.host.clone(),
                h.fits_now.to_string(),
                h.fits_in_30_days.to_string(),
            ]
        })
        .collect();
    println!(
        "\nVMs of {} vCPU and {} MiB that fit:",
        c.vm_vcpus, c.vm_mem_mib
    );
    print!("{}", output::table(&["host", "now", "in 30 days"], &fits));
    Ok(())
}
