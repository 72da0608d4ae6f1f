//! Global placement: which cluster of the federation a VM goes to. Filter (the
//! target: a cluster, a region or anywhere with constraints; the peers this cluster
//! may place on; a fresh summary within the deadline; room on one host) -> rank
//! (most free memory, then vCPUs, on the freest host; this cluster first on a tie)
//! -> create there, trying the next candidate when a cluster refuses. The chosen
//! cluster's own scheduler then places the VM on one of its hosts.

use std::time::Duration;

use super::view::{self, Speaker};
use super::Federation;
use crate::auth::Caller;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{Candidate, ClusterSummary, GlobalPlacement, GlobalVmSpec, Peer, Target};

/// How long a peer has to say how much room it has.
const SUMMARY_DEADLINE: Duration = Duration::from_secs(2);
/// How long a peer has to accept the VM.
const CREATE_DEADLINE: Duration = Duration::from_secs(10);

/// A cluster that may take the VM, with what it said of itself.
struct Option_ {
    /// None for this cluster.
    peer: Option<Peer>,
    summary: ClusterSummary,
}

fn named(target: &str, id: &str, name: &str) -> bool {
    target == id || target == name
}

/// Whether a cluster of this `id`, `name` and `region` meets `t`.
fn meets(t: &Target, id: &str, name: &str, region: Option<&str>) -> bool {
    match t {
        Target::Cluster(c) => named(c, id, name),
        Target::Region(r) => region == Some(r.as_str()),
        Target::Anywhere(c) => {
            !c.avoid.iter().any(|a| named(a, id, name))
                && (c.regions.is_empty()
                    || region.is_some_and(|r| c.regions.iter().any(|x| x == r)))
        }
    }
}

fn rank(a: &ClusterSummary) -> (u64, u64) {
    (a.largest_free.mem_mib, a.largest_free.vcpus)
}

/// Places `g.spec` for `caller` in `tenant` (this cluster's tenant the caller acts
/// for) on a cluster the target allows, and answers where it went and what was
/// weighed.
pub async fn place(
    ctx: &Context,
    fed: &Federation,
    caller: &Caller,
    tenant: &str,
    g: &GlobalVmSpec,
) -> Result<GlobalPlacement> {
    crate::vms::validate_spec(&g.spec).map_err(|mut e| {
        e.field = format!("spec.{}", e.field);
        e
    })?;
    let me = super::local(ctx).await?;
    let peers = super::peers(ctx).await?;
    let mut candidates: Vec<Candidate> = Vec::new();
    let mut options: Vec<Option_> = Vec::new();
    let here = meets(&g.placement, &me.cluster_id, &me.name, me.region.as_deref());
    if here {
        options.push(Option_ {
            peer: None,
            summary: view::summary(ctx, &me).await?,
        });
    }
    let mut asked = Vec::new();
    for p in peers {
        if !meets(&g.placement, &p.cluster_id, &p.name, p.region.as_deref()) {
            continue;
        }
        if !p.placement {
            candidates.push(Candidate {
                cluster_id: p.cluster_id.clone(),
                name: p.name.clone(),
                largest_free: None,
                rejected: Some("this cluster's policy places no VMs there".into()),
            });
            continue;
        }
        asked.push(p);
    }
    if let Target::Cluster(c) = &g.placement {
        if !here && asked.is_empty() && candidates.is_empty() {
            return Err(nova_http::FieldError::new(
                "placement.cluster",
                format!("{c:?} is neither this cluster nor a peer"),
            )
            .into());
        }
    }
    let answers = view::ask_all(
        fed,
        &me,
        asked,
        Speaker::Cluster,
        SUMMARY_DEADLINE,
        |c| async move { c.federation_summary().await },
    )
    .await;
    for a in answers {
        match a.answer {
            Ok(s) => {
                fed.note(&a.peer.cluster_id, Ok(s.clone()));
                options.push(Option_ {
                    peer: Some(a.peer),
                    summary: s,
                });
            }
            Err(why) => candidates.push(Candidate {
                cluster_id: a.peer.cluster_id,
                name: a.peer.name,
                largest_free: None,
                rejected: Some(format!("no summary: {why}")),
            }),
        }
    }
    let want = g.spec.resources();
    let mut fitting = Vec::new();
    for o in options {
        if view::fits(want, &o.summary) {
            fitting.push(o);
        } else {
            candidates.push(Candidate {
                cluster_id: o.summary.cluster_id.clone(),
                name: o.summary.name.clone(),
                largest_free: Some(o.summary.largest_free),
                rejected: Some(format!(
                    "no host has room: the freest has {} vCPUs, {} MiB free",
                    o.summary.largest_free.vcpus, o.summary.largest_free.mem_mib
                )),
            });
        }
    }
    // Most room first; on a tie this cluster (no forwarding), then by id.
    fitting.sort_by(|a, b| {
        rank(&b.summary)
            .cmp(&rank(&a.summary))
            .then(a.peer.is_some().cmp(&b.peer.is_some()))
            .then(a.summary.cluster_id.cmp(&b.summary.cluster_id))
    });
    for o in fitting {
        let s = &o.summary;
        let tried = match &o.peer {
            None => crate::vms::create(ctx, tenant, g.spec.clone())
                .await
                .map_err(|e| match e {
                    Error::Invalid(_) => Err(e),
                    e => Ok(e.to_string()),
                }),
            Some(p) => create_at(fed, &me, caller, p, g).await,
        };
        match tried {
            Ok(vm) => {
                candidates.push(Candidate {
                    cluster_id: s.cluster_id.clone(),
                    name: s.name.clone(),
                    largest_free: Some(s.largest_free),
                    rejected: None,
                });
                tracing::info!(vm = %vm.id, cluster = %s.cluster_id, "federation: VM placed");
                return Ok(GlobalPlacement {
                    cluster_id: s.cluster_id.clone(),
                    name: s.name.clone(),
                    vm,
                    candidates,
                });
            }
            Err(Err(fatal)) => return Err(fatal),
            Err(Ok(why)) => candidates.push(Candidate {
                cluster_id: s.cluster_id.clone(),
                name: s.name.clone(),
                largest_free: Some(s.largest_free),
                rejected: Some(format!("refused: {why}")),
            }),
        }
    }
    let why: Vec<String> = candidates
        .iter()
        .map(|c| format!("{}: {}", c.name, c.rejected.as_deref().unwrap_or("-")))
        .collect();
    Err(Error::conflict_on(
        "placement",
        if why.is_empty() {
            "no cluster of the federation meets the placement".to_string()
        } else {
            format!("no cluster took the VM ({})", why.join("; "))
        },
    ))
}

/// Creates the VM at `peer` as `caller`: the peer's policy decides what the caller
/// may do there. `Err(Ok(why))`: that peer refused (try another); `Err(Err(e))`: the
/// spec itself is bad.
async fn create_at(
    fed: &Federation,
    me: &super::LocalCluster,
    caller: &Caller,
    peer: &Peer,
    g: &GlobalVmSpec,
) -> std::result::Result<crate::model::Vm, Result<String>> {
    let token = super::caller_token(me, caller, &peer.cluster_id).map_err(Err)?;
    let c = fed.client(&peer.url, &token).map_err(Err)?;
    match tokio::time::timeout(CREATE_DEADLINE, c.create_vm(&g.spec, None)).await {
        Err(_) => Err(Ok(format!(
            "no answer within {} s",
            CREATE_DEADLINE.as_secs()
        ))),
        Ok(Ok(vm)) => Ok(vm),
        Ok(Err(e)) if e.status() == Some(400) => Err(Err(match e.body() {
            Some(b) => nova_http::FieldError::new(
                format!("spec.{}", b.field.clone().unwrap_or_default()),
                b.error.clone(),
            )
            .into(),
            None => Error::conflict(e.to_string()),
        })),
        Ok(Err(e)) => Err(Ok(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Constraints;

    #[test]
    fn a_target_picks_clusters_by_id_name_region_and_constraints() {
        let t = Target::Cluster("east".into());
        assert!(meets(&t, "c-1", "east", None));
        assert!(meets(&Target::Cluster("c-1".into()), "c-1", "east", None));
        assert!(!meets(&t, "c-2", "west", None));
        let r = Target::Region("eu".into());
        assert!(meets(&r, "c-1", "a", Some("eu")));
        assert!(!meets(&r, "c-1", "a", None));
        let any = Target::Anywhere(Constraints {
            regions: vec!["eu".into(), "us".into()],
            avoid: vec!["b".into()],
        });
        assert!(meets(&any, "c-1", "a", Some("us")));
        assert!(!meets(&any, "c-2", "b", Some("eu")), "avoided");
        assert!(!meets(&any, "c-3", "c", Some("ap")), "region not allowed");
        assert!(meets(
            &Target::Anywhere(Constraints::default()),
            "c-3",
            "c",
            None
        ));
    }
}
