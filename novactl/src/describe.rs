//! `novactl vm get`: one VM described for a person, as `kubectl describe` does: its
//! spec, where it is placed, what its host last observed, and its recent operations
//! and events, times as dates with their age.

use std::fmt::Write as _;

use nova_controller_api::{
    ControllerClient, DesiredState, DiskRequest, Event, HostFailurePolicy, Operation, Vm,
};

use crate::dates;
use crate::output::{self, Columns};

/// Most operations and events shown.
const RECENT: usize = 10;

/// A desired state as a word.
pub fn desired(d: DesiredState) -> &'static str {
    match d {
        DesiredState::Running => "running",
        DesiredState::Stopped => "stopped",
        DesiredState::Deleted => "deleted",
    }
}

/// A disk as a user wrote it: `image=REF,size=10G,ro`.
pub fn disk(d: &DiskRequest) -> String {
    let mut parts = vec![];
    if let Some(i) = &d.image {
        parts.push(format!("image={i}"));
    }
    if let Some(m) = d.size_mib {
        parts.push(if m.is_multiple_of(1024) {
            format!("size={}G", m / 1024)
        } else {
            format!("size={m}M")
        });
    }
    if d.read_only {
        parts.push("ro".into());
    }
    parts.join(",")
}

/// `key:` padded so that values line up, at `indent`.
fn field(o: &mut String, indent: usize, key: &str, value: impl std::fmt::Display) {
    let key = format!("{key}:");
    let _ = writeln!(o, "{:indent$}{key:<w$}{value}", "", w = 20 - indent);
}

/// The describe view of `vm`.
pub async fn vm(api: &ControllerClient, vm: &Vm, wide: bool) -> anyhow::Result<String> {
    let s = &vm.spec;
    let mut o = String::new();
    let dash = |v: Option<&String>| output::or_dash(v.cloned());
    field(&mut o, 0, "Name", &s.name);
    field(&mut o, 0, "ID", &vm.id);
    field(&mut o, 0, "Tenant", &vm.tenant);
    field(&mut o, 0, "Created", dates::date_and_ago(vm.created_at_ms));
    field(&mut o, 0, "Revision", vm.revision);
    field(&mut o, 0, "Desired", desired(vm.desired));
    writeln!(o, "Spec:")?;
    field(&mut o, 2, "vCPUs", s.vcpus);
    field(&mut o, 2, "Memory", format!("{} MiB", s.mem_mib));
    field(&mut o, 2, "Kernel", &s.kernel);
    field(&mut o, 2, "Initrd", dash(s.initrd.as_ref()));
    field(&mut o, 2, "Cmdline", dash(s.cmdline.as_ref()));
    if s.disks.is_empty() {
        field(&mut o, 2, "Disks", "-");
    } else {
        writeln!(o, "  Disks:")?;
        for (i, d) in s.disks.iter().enumerate() {
            writeln!(o, "    {i}  {}", disk(d))?;
        }
    }
    field(&mut o, 2, "NICs", s.nics.len());
    field(&mut o, 2, "Labels", output::pairs(&s.labels));
    let a = &s.affinity;
    field(&mut o, 2, "Host labels", output::pairs(&a.host_labels));
    field(&mut o, 2, "With", output::or_dash(Some(a.with.join(","))));
    field(
        &mut o,
        2,
        "Apart from",
        output::or_dash(Some(a.apart_from.join(","))),
    );
    let on_failure = match s.on_host_failure {
        HostFailurePolicy::Wait => "wait for the host",
        HostFailurePolicy::Restart => "restart elsewhere",
    };
    field(&mut o, 2, "On host failure", on_failure);
    writeln!(o, "Placement:")?;
    field(&mut o, 2, "Host", dash(vm.host.as_ref()));
    field(&mut o, 2, "Migrating", dash(vm.migrating.as_ref()));
    writeln!(o, "Observed:")?;
    match &vm.observed {
        Some(ob) => {
            field(&mut o, 2, "State", &ob.state);
            field(&mut o, 2, "Host", dash(ob.host.as_ref()));
            field(&mut o, 2, "At", dates::date_and_ago(ob.at_ms));
            field(&mut o, 2, "Error", dash(ob.error.as_ref()));
        }
        None => writeln!(o, "  -")?,
    }

    let mut ops: Vec<Operation> = api
        .operations()
        .await?
        .into_iter()
        .filter(|op| op.target == vm.id)
        .collect();
    ops.sort_by_key(|op| op.created_at_ms);
    let ops = &ops[ops.len().saturating_sub(RECENT)..];
    writeln!(o, "Operations:")?;
    if ops.is_empty() {
        writeln!(o, "  -")?;
    } else {
        for line in output::list(output::Format::Table, ops)?.lines() {
            writeln!(o, "  {line}")?;
        }
    }

    let events = recent_events(api, vm).await?;
    writeln!(o, "Events:")?;
    if events.is_empty() {
        writeln!(o, "  -")?;
    } else {
        let f = if wide {
            output::Format::Wide
        } else {
            output::Format::Table
        };
        for line in output::list(f, &events)?.lines() {
            writeln!(o, "  {line}")?;
        }
    }
    Ok(o)
}

/// The VM's last [`RECENT`] events (and its operations'), oldest first.
async fn recent_events(api: &ControllerClient, vm: &Vm) -> anyhow::Result<Vec<Event>> {
    let mut all = api.vm_events(&vm.id).await?;
    Ok(all.split_off(all.len().saturating_sub(RECENT)))
}

impl Columns for Event {
    fn headers(wide: bool) -> Vec<&'static str> {
        if wide {
            vec!["revision", "when", "kind", "id", "at", "data"]
        } else {
            vec!["revision", "when", "kind", "id", "data"]
        }
    }
    fn cells(&self, wide: bool) -> Vec<String> {
        let data = match &self.data {
            // An operation's event carries the whole operation: its message says it.
            d if self.kind.starts_with("operation.") => {
                serde_json::from_value::<Operation>(d.clone())
                    .map(|op| {
                        let state = crate::progress::state(op.state);
                        format!("{state} {}% {}", op.progress, op.message)
                    })
                    .unwrap_or_else(|_| d.to_string())
            }
            d => d.to_string(),
        };
        let mut c = vec![
            self.revision.to_string(),
            dates::ago(self.at_ms),
            self.kind.clone(),
            self.id.clone(),
        ];
        if wide {
            c.push(dates::date(self.at_ms));
        }
        c.push(data);
        c
    }
}
