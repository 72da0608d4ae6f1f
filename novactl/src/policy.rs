//! `novactl policy get|set`: the cluster's migration policy. `set` sends a merge patch
//! (`PATCH /v1/migration-policy`) of the flags given and nothing else, so the rest
//! of the policy stays as it was.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{ArgGroup, Args, Subcommand};
use nova_controller_api::{
    Compression, ControllerClient, MigrationKind, MigrationMode, MigrationParamsPatch,
    MigrationPolicy, MigrationPolicyPatch, Move,
};

use crate::output::{self, Columns, Format};

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Show the migration policy.
    Get,
    /// Change the fields given; the others keep their values.
    #[command(after_long_help = "Examples:
  novactl policy set --mode precopy --downtime-ms 50
  novactl policy set --kind warm                    # pause, move, resume
  novactl policy set --bandwidth-mbit 2000 --compress zstd --connections 4
  novactl policy set --bandwidth-mbit none          # no bandwidth cap
  novactl policy set --max-parallel-per-host 1 --completion-timeout-s 900")]
    Set(SetArgs),
}

/// The fields `policy set` may change (at least one).
#[derive(Args, Debug)]
#[command(group(ArgGroup::new("fields").required(true).multiple(true)))]
pub struct SetArgs {
    /// How migrations run: precopy, postcopy or hybrid (pre-copy rounds, then post-copy).
    #[arg(long, group = "fields", value_parser = PossibleValuesParser::new(["precopy", "postcopy", "hybrid"])
        .try_map(|s| s.parse::<MigrationMode>()))]
    pub mode: Option<MigrationMode>,
    /// How VMs move unless asked otherwise: live, warm (paused, moved, resumed) or cold
    /// (stopped, disks moved, booted there).
    #[arg(long, group = "fields", value_parser = PossibleValuesParser::new(["live", "warm", "cold"])
        .try_map(|s| s.parse::<MigrationKind>()))]
    pub kind: Option<MigrationKind>,
    /// The longest pause pre-copy aims for, ms.
    #[arg(long, group = "fields", value_name = "MS")]
    pub downtime_ms: Option<u64>,
    /// A cap on each migration's bandwidth, Mbit/s; `none` removes the cap.
    #[arg(long, group = "fields", value_name = "MBIT|none", value_parser = parse_cap)]
    pub bandwidth_mbit: Option<Cap>,
    /// Compression of memory pages on the wire.
    #[arg(long, group = "fields", value_parser = PossibleValuesParser::new(["none", "zstd", "lz4"])
        .try_map(|s| s.parse::<Compression>()))]
    pub compress: Option<Compression>,
    /// TCP connections carrying memory in parallel.
    #[arg(long, group = "fields", value_name = "N")]
    pub connections: Option<u32>,
    /// Cancel a migration still running after this long (the VM stays on its source), s.
    #[arg(long, group = "fields", value_name = "S")]
    pub completion_timeout_s: Option<u64>,
    /// Whether post-copy (and hybrid) may be used.
    #[arg(long, group = "fields", value_name = "true|false")]
    pub postcopy_allowed: Option<bool>,
    /// Migrations at once in the whole cluster.
    #[arg(long, group = "fields", value_name = "N")]
    pub max_parallel_cluster: Option<u32>,
    /// Migrations at once leaving (or entering) one host.
    #[arg(long, group = "fields", value_name = "N")]
    pub max_parallel_per_host: Option<u32>,
}

/// `--bandwidth-mbit`: a cap, or `none`.
#[derive(Clone, Copy, Debug)]
pub struct Cap(Option<u64>);

fn parse_cap(s: &str) -> Result<Cap, String> {
    match s {
        "none" => Ok(Cap(None)),
        n => n
            .parse()
            .map(|v| Cap(Some(v)))
            .map_err(|_| format!("{n:?} is neither a number of Mbit/s nor none")),
    }
}

impl SetArgs {
    /// The merge patch of the fields given.
    pub fn patch(&self) -> MigrationPolicyPatch {
        let params = MigrationParamsPatch {
            mode: self.mode,
            downtime_ms: self.downtime_ms,
            bandwidth_mbit: self.bandwidth_mbit.map(|c| c.0),
            compress: self.compress,
            connections: self.connections,
        };
        MigrationPolicyPatch {
            params: (params != MigrationParamsPatch::default()).then_some(params),
            kind: self.kind,
            completion_timeout_s: self.completion_timeout_s,
            postcopy_allowed: self.postcopy_allowed,
            max_parallel_cluster: self.max_parallel_cluster,
            max_parallel_per_host: self.max_parallel_per_host,
        }
    }
}

pub async fn run(api: &ControllerClient, cmd: PolicyCmd, f: Format) -> anyhow::Result<()> {
    let p = match cmd {
        PolicyCmd::Get => api.migration_policy().await?,
        PolicyCmd::Set(a) => api.patch_migration_policy(&a.patch()).await?,
    };
    print!("{}", output::one(f, &p)?);
    Ok(())
}

impl Columns for MigrationPolicy {
    fn headers(wide: bool) -> Vec<&'static str> {
        let mut h = vec![
            "mode",
            "downtime_ms",
            "bandwidth_mbit",
            "compress",
            "connections",
            "timeout_s",
            "postcopy",
            "cluster",
            "per_host",
            "kind",
        ];
        if wide {
            h.push("revision");
        }
        h
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let p = &self.params;
        let mut c = vec![
            p.mode.as_str().into(),
            p.downtime_ms.to_string(),
            p.bandwidth_mbit.map_or("none".into(), |b| b.to_string()),
            p.compress.as_str().into(),
            p.connections.to_string(),
            self.completion_timeout_s.to_string(),
            self.postcopy_allowed.to_string(),
            self.max_parallel_cluster.to_string(),
            self.max_parallel_per_host.to_string(),
            self.kind.as_str().into(),
        ];
        if wide {
            c.push(self.revision.to_string());
        }
        c
    }
}

impl Columns for Move {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["vm", "from", "to"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![self.vm.clone(), self.from.clone(), self.to.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: SetArgs,
    }

    #[test]
    fn a_patch_names_only_the_fields_given() {
        let t = T::try_parse_from(["t", "--downtime-ms", "50"]).unwrap();
        assert_eq!(
            serde_json::to_string(&t.a.patch()).unwrap(),
            r#"{"params":{"downtime_ms":50}}"#
        );
        let t = T::try_parse_from([
            "t",
            "--bandwidth-mbit",
            "none",
            "--max-parallel-cluster",
            "8",
        ])
        .unwrap();
        assert_eq!(
            serde_json::to_string(&t.a.patch()).unwrap(),
            r#"{"params":{"bandwidth_mbit":null},"max_parallel_cluster":8}"#
        );
        assert!(T::try_parse_from(["t"]).is_err(), "nothing to change");
        assert!(T::try_parse_from(["t", "--mode", "fast"]).is_err());
    }
}
