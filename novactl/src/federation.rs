//! `novactl federation ...`: this cluster's federation identity, peering (join,
//! list, leave, trust), federated tokens (issue, revoke), federated lists and
//! global placement.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{ArgGroup, Args, Subcommand};
use nova_controller_api::{
    Constraints, ControllerClient, GlobalVmSpec, IdentityPatch, JoinRequest, NewFederatedToken,
    Peer, PeerPolicy, PeerStatus, Role, Target, TrustPolicy, TrustRule, Vm, VmSpec,
};

use crate::output::{self, or_dash, Columns, Format};

#[derive(Subcommand)]
pub enum FederationCmd {
    /// Peer with another cluster (both sides' admin tokens: yours, and --peer-token).
    #[command(after_long_help = "Examples:
  novactl federation join --peer-url https://east:7070 --peer-token-file east.token
  novactl federation join --peer-url https://east:7070 --peer-token-file east.token \\
      --trust acme:viewer,operator --trust 'system:viewer'")]
    Join(JoinArgs),
    /// This cluster's peers, with what each last said of itself.
    List,
    /// Stop peering with a cluster (it is told to forget this one too).
    Leave {
        /// The peer's id or name.
        peer: String,
    },
    /// Set what this cluster honours of a peer's tokens (replaces the policy).
    Trust(TrustArgs),
    /// Show this cluster's federation identity, or set its name or region.
    Identity(IdentityArgs),
    /// A new signing key for this cluster (the old ones still verify).
    RotateKeys,
    /// A federated token (JWT) for you, for peers to honour per their policy.
    Token(TokenArgs),
    /// Revoke a federated token here and at every peer that can be told.
    Revoke {
        /// The token's id (`jti`).
        jti: String,
    },
    /// VMs of every cluster of the federation (and which clusters answered).
    Vms(ListArgs),
    /// Hosts of every cluster of the federation (system tenant).
    Hosts(ListArgs),
    /// Create a VM where the federation scheduler finds room.
    Create(CreateArgs),
}

/// `federation join`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("peer_secret").required(true)))]
pub struct JoinArgs {
    /// The peer controller's URL.
    #[arg(long, value_name = "URL")]
    pub peer_url: String,
    /// The peer's admin token (prefer --peer-token-file).
    #[arg(long, group = "peer_secret", value_name = "TOKEN")]
    pub peer_token: Option<String>,
    /// A file holding the peer's admin token.
    #[arg(long, group = "peer_secret", value_name = "FILE")]
    pub peer_token_file: Option<PathBuf>,
    /// The URL the peer reaches this cluster at [default: this command's --url].
    #[arg(long, value_name = "URL")]
    pub self_url: Option<String>,
    /// A rule of what this cluster honours of the peer's tokens:
    /// `REMOTE_TENANT[=LOCAL_TENANT]:ROLE[,ROLE]` (`*` for any tenant); repeat for more.
    #[arg(long, value_name = "RULE", value_parser = parse_rule)]
    pub trust: Vec<TrustRule>,
    /// Never place VMs on the peer.
    #[arg(long)]
    pub no_placement: bool,
}

/// `federation trust`.
#[derive(Args, Debug)]
pub struct TrustArgs {
    /// The peer's id or name.
    pub peer: String,
    /// `REMOTE_TENANT[=LOCAL_TENANT]:ROLE[,ROLE]`; none: honour nothing.
    #[arg(long, value_name = "RULE", value_parser = parse_rule)]
    pub rule: Vec<TrustRule>,
    /// Never place VMs on the peer.
    #[arg(long)]
    pub no_placement: bool,
}

/// `federation identity`.
#[derive(Args, Debug)]
pub struct IdentityArgs {
    /// A new name for this cluster.
    #[arg(long)]
    pub name: Option<String>,
    /// This cluster's region label.
    #[arg(long)]
    pub region: Option<String>,
}

/// `federation token`.
#[derive(Args, Debug)]
pub struct TokenArgs {
    /// A peer (id or name) it is for; repeat for more [default: every peer and here].
    #[arg(long, value_name = "CLUSTER")]
    pub audience: Vec<String>,
    /// Lifetime, s (60 to 86400) [default: 3600].
    #[arg(long, value_name = "S")]
    pub ttl_s: Option<u64>,
}

/// `federation vms|hosts`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// How long to wait for each peer, ms [default: 2000].
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
}

/// `federation create`.
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("target").required(true)))]
pub struct CreateArgs {
    /// The VM spec (JSON, as `POST /v1/vms` takes it).
    #[arg(long, short = 'f', value_name = "FILE")]
    pub file: PathBuf,
    /// This cluster (id or name) only.
    #[arg(long, group = "target")]
    pub cluster: Option<String>,
    /// Any cluster of this region.
    #[arg(long, group = "target")]
    pub region: Option<String>,
    /// Any cluster (with --avoid and --in-region).
    #[arg(long, group = "target")]
    pub anywhere: bool,
    /// With --anywhere: never this cluster; repeat for more.
    #[arg(long, requires = "anywhere", value_name = "CLUSTER")]
    pub avoid: Vec<String>,
    /// With --anywhere: only clusters of these regions; repeat for more.
    #[arg(long, requires = "anywhere", value_name = "REGION")]
    pub in_region: Vec<String>,
}

/// `REMOTE[=LOCAL]:ROLE[,ROLE]`.
fn parse_rule(s: &str) -> Result<TrustRule, String> {
    let (tenants, roles) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: expected TENANT[=LOCAL]:ROLE[,ROLE]"))?;
    let (remote, local) = match tenants.split_once('=') {
        Some((r, l)) => (r, Some(l.to_string())),
        None => (tenants, None),
    };
    if remote.is_empty() {
        return Err(format!("{s:?}: no tenant"));
    }
    let roles = roles
        .split(',')
        .map(|r| {
            serde_json::from_value::<Role>(serde_json::Value::String(r.trim().into()))
                .map_err(|_| format!("{r:?} is not a role (viewer, operator, admin)"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(TrustRule {
        remote_tenant: remote.to_string(),
        local_tenant: local,
        roles,
    })
}

pub async fn run(api: &ControllerClient, cmd: FederationCmd, f: Format) -> anyhow::Result<()> {
    match cmd {
        FederationCmd::Join(a) => {
            let token = match (a.peer_token, a.peer_token_file) {
                (Some(t), _) => t,
                (None, Some(p)) => std::fs::read_to_string(&p)
                    .with_context(|| format!("--peer-token-file {}", p.display()))?
                    .trim()
                    .to_string(),
                (None, None) => anyhow::bail!("--peer-token or --peer-token-file"),
            };
            let p = api
                .join_federation(&JoinRequest {
                    peer_url: a.peer_url,
                    peer_token: token,
                    self_url: a.self_url.unwrap_or_else(|| api.url().to_string()),
                    trust: TrustPolicy { rules: a.trust },
                    placement: !a.no_placement,
                })
                .await?;
            print!("{}", output::one(f, &p)?);
        }
        FederationCmd::List => {
            let v = api.federation().await?;
            print!("{}", output::list(f, &v.peers)?);
        }
        FederationCmd::Leave { peer } => {
            let l = api.leave_federation(&peer).await?;
            print!("{}", output::record(f, &l)?);
        }
        FederationCmd::Trust(a) => {
            let p = api
                .set_peer_policy(
                    &a.peer,
                    &PeerPolicy {
                        trust: TrustPolicy { rules: a.rule },
                        placement: !a.no_placement,
                    },
                )
                .await?;
            print!("{}", output::one(f, &p)?);
        }
        FederationCmd::Identity(a) => {
            let id = if a.name.is_none() && a.region.is_none() {
                api.federation().await?.cluster
            } else {
                api.set_identity(&IdentityPatch {
                    name: a.name,
                    region: a.region,
                })
                .await?
            };
            print!("{}", output::record(f, &id)?);
        }
        FederationCmd::RotateKeys => {
            print!("{}", output::record(f, &api.rotate_keys().await?)?);
        }
        FederationCmd::Token(a) => {
            let t = api
                .federated_token(&NewFederatedToken {
                    audience: a.audience,
                    ttl_s: a.ttl_s,
                })
                .await?;
            if f.is_table() {
                println!("{}", t.token);
                eprintln!("token {} for {}", t.jti, t.audience.join(", "));
            } else {
                print!("{}", output::record(f, &t)?);
            }
        }
        FederationCmd::Revoke { jti } => {
            print!(
                "{}",
                output::record(f, &api.revoke_federated_token(&jti).await?)?
            );
        }
        FederationCmd::Vms(a) => {
            let l = api.federated::<Vm>("/v1/vms", a.timeout_ms).await?;
            if f.is_table() {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|v| {
                        vec![
                            v.cluster.clone(),
                            v.item.id.clone(),
                            v.item.spec.name.clone(),
                            v.item.tenant.clone(),
                            or_dash(v.item.host.clone()),
                            or_dash(v.item.observed.as_ref().map(|o| o.state.clone())),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(&["cluster", "id", "name", "tenant", "host", "state"], &rows)
                );
                answered(&l.clusters);
            } else {
                print!("{}", output::record(f, &l)?);
            }
        }
        FederationCmd::Hosts(a) => {
            let l = api
                .federated::<nova_controller_api::Host>("/v1/hosts", a.timeout_ms)
                .await?;
            if f.is_table() {
                let rows: Vec<Vec<String>> = l
                    .items
                    .iter()
                    .map(|h| {
                        vec![
                            h.cluster.clone(),
                            h.item.id.clone(),
                            format!("{:?}", h.item.state).to_lowercase(),
                            h.item.capacity.vcpus.to_string(),
                            h.item.capacity.mem_mib.to_string(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    output::table(&["cluster", "id", "state", "vcpus", "mem_mib"], &rows)
                );
                answered(&l.clusters);
            } else {
                print!("{}", output::record(f, &l)?);
            }
        }
        FederationCmd::Create(a) => {
            let text = std::fs::read_to_string(&a.file)
                .with_context(|| format!("--file {}", a.file.display()))?;
            let spec: VmSpec = serde_json::from_str(&text)
                .with_context(|| format!("--file {}: not a VM spec", a.file.display()))?;
            let placement = match (a.cluster, a.region) {
                (Some(c), _) => Target::Cluster(c),
                (None, Some(r)) => Target::Region(r),
                (None, None) => Target::Anywhere(Constraints {
                    regions: a.in_region,
                    avoid: a.avoid,
                }),
            };
            let g = api
                .create_global_vm(&GlobalVmSpec { placement, spec })
                .await?;
            if f.is_table() {
                println!("{} placed in {} ({})", g.vm.id, g.name, g.cluster_id);
            } else {
                print!("{}", output::record(f, &g)?);
            }
        }
    }
    Ok(())
}

/// Says on stderr which clusters did not answer.
fn answered(clusters: &[nova_controller_api::ClusterAnswer]) {
    for c in clusters.iter().filter(|c| !c.answered) {
        eprintln!(
            "cluster {} ({}) did not answer: {}",
            c.name,
            c.cluster_id,
            c.error.as_deref().unwrap_or("-")
        );
    }
}

impl Columns for PeerStatus {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "id",
            "name",
            "region",
            "url",
            "vms",
            "free_mem_mib",
            "last_seen",
        ];
        if wide {
            h.extend(["error", "keys"]);
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let s = self.summary.as_ref();
        let mut c = vec![
            self.peer.cluster_id.clone(),
            self.peer.name.clone(),
            or_dash(self.peer.region.clone()),
            self.peer.url.clone(),
            or_dash(s.map(|s| s.vms)),
            or_dash(s.map(|s| s.capacity.mem_mib.saturating_sub(s.used.mem_mib))),
            or_dash(self.last_seen_ms),
        ];
        if wide {
            c.push(or_dash(self.error.clone()));
            c.push(self.peer.jwks.keys.len().to_string());
        }
        c
    }
}

impl Columns for Peer {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["id", "name", "region", "url", "trust_rules", "placement"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![
            self.cluster_id.clone(),
            self.name.clone(),
            or_dash(self.region.clone()),
            self.url.clone(),
            self.trust.rules.len().to_string(),
            self.placement.to_string(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_rules_read_tenant_mapping_and_roles() {
        let r = parse_rule("acme=guests:viewer,operator").unwrap();
        assert_eq!(r.remote_tenant, "acme");
        assert_eq!(r.local_tenant.as_deref(), Some("guests"));
        assert_eq!(r.roles, vec![Role::Viewer, Role::Operator]);
        let r = parse_rule("*=x:admin").unwrap();
        assert_eq!(r.remote_tenant, "*");
        assert!(parse_rule("acme").is_err());
        assert!(parse_rule("acme:root").is_err());
        assert!(parse_rule(":viewer").is_err());
    }
}
