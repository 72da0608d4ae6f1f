//! novactl: the command line of the controller's `/v1` API. Tables for people,
//! `-o json` for scripts, progress bars for migrations and drains. The token comes
//! from `--token` or `NOVA_TOKEN`, the URL from `--url` or `NOVA_URL`.

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand, ValueEnum};
use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "novactl", about = "NovaCron cluster CLI", version)]
struct Cli {
    /// Controller URL.
    #[arg(
        long,
        env = "NOVA_URL",
        default_value = "http://127.0.0.1:7070",
        global = true
    )]
    url: String,
    /// API token.
    #[arg(
        long,
        env = "NOVA_TOKEN",
        hide_env_values = true,
        global = true,
        default_value = ""
    )]
    token: String,
    /// Output format.
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Table, global = true)]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Table,
    Json,
}

// Parsed once per run: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Hosts: list, get, cordon, uncordon, drain.
    #[command(subcommand)]
    Host(HostCmd),
    /// VMs: create, list, get, start, stop, delete, migrate.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Long-running operations.
    #[command(subcommand, name = "op")]
    Op(OpCmd),
    /// Follow the event stream (every state change you may see).
    Events,
    #[command(subcommand)]
    Tenant(TenantCmd),
    #[command(subcommand)]
    User(UserCmd),
    #[command(subcommand)]
    Token(TokenCmd),
    /// The audit log.
    Audit {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// The cluster's migration policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Live migrations the rebalancer proposes now.
    Rebalance,
    /// Who this token is.
    Whoami,
}

#[derive(Subcommand)]
enum HostCmd {
    List,
    Get {
        id: String,
    },
    Cordon {
        id: String,
    },
    Uncordon {
        id: String,
    },
    /// Cordon and live-migrate every VM away (progress bar until done).
    Drain {
        id: String,
        #[arg(long)]
        no_wait: bool,
    },
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum VmCmd {
    List,
    Get {
        id: String,
    },
    Create {
        #[arg(long)]
        name: String,
        /// Kernel image: absolute path on the hosts or sha256:<hex>.
        #[arg(long)]
        image: String,
        #[arg(long, default_value_t = 1)]
        vcpus: u8,
        #[arg(long, default_value_t = 256)]
        mem_mib: u64,
        #[arg(long)]
        cmdline: Option<String>,
        #[arg(long)]
        initrd: Option<String>,
        /// Blank disk of this many MiB (repeat).
        #[arg(long)]
        disk_mib: Vec<u64>,
        /// Disk cloned from this image (repeat).
        #[arg(long)]
        disk_image: Vec<String>,
        /// NICs on the host bridge.
        #[arg(long, default_value_t = 0)]
        nics: usize,
        /// k=v (repeat).
        #[arg(long)]
        label: Vec<String>,
        /// k=v a host must carry (repeat).
        #[arg(long)]
        host_label: Vec<String>,
        /// Run next to a VM with this k=v label.
        #[arg(long)]
        with: Vec<String>,
        /// Never next to a VM with this k=v label.
        #[arg(long)]
        apart_from: Vec<String>,
        /// Restart elsewhere when its host goes down.
        #[arg(long)]
        restart_on_host_failure: bool,
        #[arg(long)]
        no_start: bool,
        /// Create in this tenant (system tenant only).
        #[arg(long)]
        tenant: Option<String>,
    },
    Start {
        id: String,
    },
    Stop {
        id: String,
    },
    Delete {
        id: String,
    },
    /// Live-migrate (progress bar until done).
    Migrate {
        id: String,
        /// Destination host; the scheduler picks when absent.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        no_wait: bool,
    },
}

#[derive(Subcommand)]
enum OpCmd {
    List,
    Get {
        id: String,
    },
    Cancel {
        id: String,
    },
    /// Progress bar until the operation ends.
    Wait {
        id: String,
    },
}

#[derive(Subcommand)]
enum TenantCmd {
    List,
    Create {
        id: String,
        #[arg(long)]
        quota_vcpus: Option<u64>,
        #[arg(long)]
        quota_mem_mib: Option<u64>,
        #[arg(long)]
        quota_vms: Option<u64>,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    List,
    Create {
        id: String,
        /// viewer, operator or admin.
        #[arg(long)]
        role: String,
        #[arg(long)]
        tenant: Option<String>,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    List,
    /// A new token for a user; the secret is printed once.
    Create {
        user: String,
        #[arg(long)]
        role: Option<String>,
    },
    Revoke {
        id: String,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    Get,
    Set {
        /// precopy, postcopy or hybrid.
        #[arg(long, default_value = "precopy")]
        mode: String,
        #[arg(long, default_value_t = 300)]
        downtime_ms: u64,
        #[arg(long)]
        bandwidth_mbit: Option<u64>,
        #[arg(long, default_value_t = 600)]
        completion_timeout_s: u64,
        #[arg(long)]
        postcopy_allowed: bool,
        #[arg(long, default_value_t = 4)]
        max_parallel_cluster: u32,
        #[arg(long, default_value_t = 2)]
        max_parallel_per_host: u32,
    },
}

struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut rq = self
            .http
            .request(method, format!("{}{path}", self.url.trim_end_matches('/')));
        if !self.token.is_empty() {
            rq = rq.bearer_auth(&self.token);
        }
        if let Some(b) = body {
            rq = rq.json(&b);
        }
        let r = rq
            .send()
            .await
            .with_context(|| format!("calling {}", self.url))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let msg = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no details");
            bail!("{}: {msg}", status);
        }
        Ok(v)
    }
    /// A GET; a list's pages (`{"items", "continue"}`) come back as one array.
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let mut v = self.call(reqwest::Method::GET, path, None).await?;
        let Some(items) = v.get_mut("items").map(Value::take) else {
            return Ok(v);
        };
        let mut all = match items {
            Value::Array(a) => a,
            other => vec![other],
        };
        let mut next = v.get("continue").and_then(Value::as_str).map(String::from);
        while let Some(c) = next {
            let sep = if path.contains('?') { '&' } else { '?' };
            let mut page = self
                .call(
                    reqwest::Method::GET,
                    &format!("{path}{sep}continue={c}"),
                    None,
                )
                .await?;
            if let Some(Value::Array(a)) = page.get_mut("items").map(Value::take) {
                all.extend(a);
            }
            next = page
                .get("continue")
                .and_then(Value::as_str)
                .map(String::from);
        }
        Ok(Value::Array(all))
    }
    async fn post(&self, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        self.call(reqwest::Method::POST, path, body).await
    }
}

fn kv(field: &str, items: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    for i in items {
        let (k, v) = i
            .split_once('=')
            .with_context(|| format!("--{field} {i}: expected key=value"))?;
        m.insert(k.into(), Value::String(v.into()));
    }
    Ok(m)
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// Prints rows as a table of `cols` (JSON pointers), or the JSON itself.
fn show(out: Output, v: &Value, cols: &[(&str, &str)]) {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        return;
    }
    let rows: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        other => vec![other],
    };
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            cols.iter()
                .map(|(_, p)| s(r.pointer(p).unwrap_or(&Value::Null)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |c: Vec<String>| {
        c.iter()
            .zip(&widths)
            .map(|(x, w)| format!("{x:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!(
        "{}",
        line(cols.iter().map(|(h, _)| h.to_uppercase()).collect())
    );
    for c in cells {
        println!("{}", line(c));
    }
}

const VM_COLS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("name", "/spec/name"),
    ("tenant", "/tenant"),
    ("desired", "/desired"),
    ("observed", "/observed/state"),
    ("host", "/host"),
    ("vcpus", "/spec/vcpus"),
    ("mem_mib", "/spec/mem_mib"),
];
const HOST_COLS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("hostname", "/hostname"),
    ("state", "/state"),
    ("cordoned", "/cordoned"),
    ("vcpus", "/capacity/vcpus"),
    ("mem_mib", "/capacity/mem_mib"),
    ("url", "/url"),
];
const OP_COLS: &[(&str, &str)] = &[
    ("id", "/id"),
    ("kind", "/kind"),
    ("target", "/target"),
    ("state", "/state"),
    ("progress", "/progress"),
    ("message", "/message"),
];

/// Follows an operation with a progress bar (or silently with `-o json`) until it ends.
async fn wait_op(api: &Api, out: Output, id: &str) -> anyhow::Result<Value> {
    let bar = if out == Output::Table {
        ProgressBar::new(100)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {prefix} [{bar:40}] {pos:>3}% {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    loop {
        let op = api.get(&format!("/v1/operations/{id}")).await?;
        bar.set_prefix(format!("{} {}", s(&op["kind"]), s(&op["target"])));
        bar.set_position(op["progress"].as_u64().unwrap_or(0));
        bar.set_message(s(&op["message"]));
        let state = s(&op["state"]);
        if matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            bar.finish_with_message(format!("{state}: {}", s(&op["message"])));
            return Ok(op);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn print_result(out: Output, op: &Value) {
    if out == Output::Json {
        println!("{}", serde_json::to_string_pretty(op).unwrap_or_default());
        return;
    }
    let r = &op["result"];
    if op["kind"] == "migrate" {
        println!(
            "{} -> {}: downtime {} ms, total {} ms, {} bytes",
            s(&r["from"]),
            s(&r["to"]),
            s(&r["downtime_ms"]),
            s(&r["total_ms"]),
            s(&r["bytes"])
        );
    } else if let Some(m) = r.as_object() {
        for (vm, res) in m {
            println!(
                "{vm}: {}",
                if res.get("error").is_some() {
                    s(&res["error"])
                } else {
                    format!(
                        "-> {}, downtime {} ms",
                        s(&res["to"]),
                        s(&res["downtime_ms"])
                    )
                }
            );
        }
    }
}

async fn follow_or_show(api: &Api, out: Output, op: Value, no_wait: bool) -> anyhow::Result<()> {
    if no_wait {
        show(out, &op, OP_COLS);
        return Ok(());
    }
    let done = wait_op(api, out, &s(&op["id"])).await?;
    print_result(out, &done);
    if done["state"] != "succeeded" {
        bail!(
            "{} {}: {}",
            s(&done["kind"]),
            s(&done["state"]),
            s(&done["message"])
        );
    }
    Ok(())
}

async fn events(api: &Api) -> anyhow::Result<()> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let ws_url = api
        .url
        .replacen("http://", "ws://", 1)
        .replacen("https://", "wss://", 1)
        + "/v1/events";
    let mut req = ws_url.into_client_request()?;
    req.headers_mut()
        .insert("Authorization", format!("Bearer {}", api.token).parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .context("opening the event stream")?;
    while let Some(msg) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg? {
            println!("{t}");
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("HTTP client")?;
    let api = Api {
        http,
        url: cli.url.clone(),
        token: cli.token.clone(),
    };
    let out = cli.output;
    match cli.cmd {
        Cmd::Host(c) => match c {
            HostCmd::List => show(out, &api.get("/v1/hosts").await?, HOST_COLS),
            HostCmd::Get { id } => {
                show(out, &api.get(&format!("/v1/hosts/{id}")).await?, HOST_COLS)
            }
            HostCmd::Cordon { id } => show(
                out,
                &api.post(&format!("/v1/hosts/{id}/cordon"), None).await?,
                HOST_COLS,
            ),
            HostCmd::Uncordon { id } => show(
                out,
                &api.post(&format!("/v1/hosts/{id}/uncordon"), None).await?,
                HOST_COLS,
            ),
            HostCmd::Drain { id, no_wait } => {
                let op = api.post(&format!("/v1/hosts/{id}/drain"), None).await?;
                follow_or_show(&api, out, op, no_wait).await?;
            }
        },
        Cmd::Vm(c) => match c {
            VmCmd::List => show(out, &api.get("/v1/vms").await?, VM_COLS),
            VmCmd::Get { id } => show(out, &api.get(&format!("/v1/vms/{id}")).await?, VM_COLS),
            VmCmd::Create {
                name,
                image,
                vcpus,
                mem_mib,
                cmdline,
                initrd,
                disk_mib,
                disk_image,
                nics,
                label,
                host_label,
                with,
                apart_from,
                restart_on_host_failure,
                no_start,
                tenant,
            } => {
                let mut disks: Vec<Value> =
                    disk_mib.iter().map(|m| json!({"size_mib": m})).collect();
                disks.extend(disk_image.iter().map(|i| json!({"image": i})));
                let mut spec = json!({
                    "name": name, "image": image, "vcpus": vcpus, "mem_mib": mem_mib, "disks": disks,
                    "nics": vec![json!({}); nics], "labels": kv("label", &label)?,
                    "affinity": {"host_labels": kv("host-label", &host_label)?, "with": with, "apart_from": apart_from},
                    "on_host_failure": if restart_on_host_failure { "restart" } else { "wait" }, "start": !no_start,
                });
                if let Some(c) = cmdline {
                    spec["cmdline"] = json!(c);
                }
                if let Some(i) = initrd {
                    spec["initrd"] = json!(i);
                }
                let path = match tenant {
                    Some(t) => format!("/v1/vms?tenant={t}"),
                    None => "/v1/vms".into(),
                };
                show(out, &api.post(&path, Some(spec)).await?, VM_COLS);
            }
            VmCmd::Start { id } => show(
                out,
                &api.post(&format!("/v1/vms/{id}/start"), None).await?,
                VM_COLS,
            ),
            VmCmd::Stop { id } => show(
                out,
                &api.post(&format!("/v1/vms/{id}/stop"), None).await?,
                VM_COLS,
            ),
            VmCmd::Delete { id } => show(
                out,
                &api.call(reqwest::Method::DELETE, &format!("/v1/vms/{id}"), None)
                    .await?,
                VM_COLS,
            ),
            VmCmd::Migrate { id, to, no_wait } => {
                let op = api
                    .post(&format!("/v1/vms/{id}/migrate"), Some(json!({"to": to})))
                    .await?;
                follow_or_show(&api, out, op, no_wait).await?;
            }
        },
        Cmd::Op(c) => match c {
            OpCmd::List => show(out, &api.get("/v1/operations").await?, OP_COLS),
            OpCmd::Get { id } => show(
                out,
                &api.get(&format!("/v1/operations/{id}")).await?,
                OP_COLS,
            ),
            OpCmd::Cancel { id } => show(
                out,
                &api.post(&format!("/v1/operations/{id}/cancel"), None)
                    .await?,
                OP_COLS,
            ),
            OpCmd::Wait { id } => {
                let op = wait_op(&api, out, &id).await?;
                print_result(out, &op);
            }
        },
        Cmd::Events => events(&api).await?,
        Cmd::Tenant(c) => match c {
            TenantCmd::List => show(
                out,
                &api.get("/v1/tenants").await?,
                &[("id", "/id"), ("quota", "/quota")],
            ),
            TenantCmd::Create {
                id,
                quota_vcpus,
                quota_mem_mib,
                quota_vms,
            } => {
                let quota = match (quota_vcpus, quota_mem_mib, quota_vms) {
                    (None, None, None) => Value::Null,
                    (v, m, n) => {
                        json!({"vcpus": v.unwrap_or(u64::MAX >> 1), "mem_mib": m.unwrap_or(u64::MAX >> 1), "vms": n.unwrap_or(u64::MAX >> 1)})
                    }
                };
                show(
                    out,
                    &api.post("/v1/tenants", Some(json!({"id": id, "quota": quota})))
                        .await?,
                    &[("id", "/id"), ("quota", "/quota")],
                );
            }
        },
        Cmd::User(c) => {
            let cols = &[("id", "/id"), ("tenant", "/tenant"), ("role", "/role")];
            match c {
                UserCmd::List => show(out, &api.get("/v1/users").await?, cols),
                UserCmd::Create { id, role, tenant } => show(
                    out,
                    &api.post(
                        "/v1/users",
                        Some(json!({"id": id, "role": role, "tenant": tenant})),
                    )
                    .await?,
                    cols,
                ),
            }
        }
        Cmd::Token(c) => {
            let cols = &[
                ("id", "/id"),
                ("user", "/user"),
                ("tenant", "/tenant"),
                ("role", "/role"),
                ("host", "/host"),
            ];
            match c {
                TokenCmd::List => show(out, &api.get("/v1/tokens").await?, cols),
                TokenCmd::Create { user, role } => {
                    let t = api
                        .post("/v1/tokens", Some(json!({"user": user, "role": role})))
                        .await?;
                    if out == Output::Json {
                        println!("{}", serde_json::to_string_pretty(&t)?);
                    } else {
                        println!("{}", s(&t["token"]));
                    }
                }
                TokenCmd::Revoke { id } => show(
                    out,
                    &api.call(reqwest::Method::DELETE, &format!("/v1/tokens/{id}"), None)
                        .await?,
                    &[("revoked", "/revoked")],
                ),
            }
        }
        Cmd::Audit { limit } => show(
            out,
            &api.get(&format!("/v1/audit?limit={limit}")).await?,
            &[
                ("at_ms", "/at_ms"),
                ("actor", "/actor"),
                ("tenant", "/tenant"),
                ("method", "/method"),
                ("path", "/path"),
                ("status", "/status"),
            ],
        ),
        Cmd::Policy(c) => {
            let cols = &[
                ("mode", "/mode"),
                ("downtime_ms", "/downtime_ms"),
                ("bandwidth_mbit", "/bandwidth_mbit"),
                ("timeout_s", "/completion_timeout_s"),
                ("postcopy", "/postcopy_allowed"),
                ("cluster", "/max_parallel_cluster"),
                ("per_host", "/max_parallel_per_host"),
            ];
            match c {
                PolicyCmd::Get => show(out, &api.get("/v1/migration-policy").await?, cols),
                PolicyCmd::Set {
                    mode,
                    downtime_ms,
                    bandwidth_mbit,
                    completion_timeout_s,
                    postcopy_allowed,
                    max_parallel_cluster,
                    max_parallel_per_host,
                } => {
                    let p = json!({"mode": mode, "downtime_ms": downtime_ms, "bandwidth_mbit": bandwidth_mbit, "completion_timeout_s": completion_timeout_s,
                        "postcopy_allowed": postcopy_allowed, "max_parallel_cluster": max_parallel_cluster, "max_parallel_per_host": max_parallel_per_host});
                    show(
                        out,
                        &api.call(reqwest::Method::PUT, "/v1/migration-policy", Some(p))
                            .await?,
                        cols,
                    );
                }
            }
        }
        Cmd::Rebalance => show(
            out,
            &api.get("/v1/rebalance").await?,
            &[("vm", "/vm"), ("from", "/from"), ("to", "/to")],
        ),
        Cmd::Whoami => show(
            out,
            &api.get("/v1/whoami").await?,
            &[("user", "/user"), ("tenant", "/tenant"), ("role", "/role")],
        ),
    }
    Ok(())
}
