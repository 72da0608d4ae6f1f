//! What the scheduler is given: the view of every host built from the store (what the
//! VMs placed there hold, their labels for affinity), and a VM's request (resources,
//! affinity, its tenant's quota and usage). Used by the reconcile loop, migrations and
//! the rebalancer.

use std::collections::HashMap;

use crate::context::Context;
use crate::model::{DesiredState, Host, HostState, Resources, Tenant, Vm};
use crate::scheduler::{HostView, Request};
use crate::store::{Objects, StoreError};

/// The scheduler's view of every host, built from the store, and the VMs.
pub async fn host_views(ctx: &Context) -> Result<(Vec<HostView>, Vec<Vm>), StoreError> {
    let hosts = ctx.store.list_all::<Host>().await?;
    let vms = ctx.store.list_all::<Vm>().await?;
    let mut views: Vec<HostView> = hosts
        .iter()
        .map(|h| HostView {
            id: h.id.clone(),
            ready: h.state == HostState::Ready,
            cordoned: h.cordoned,
            labels: h.labels.clone(),
            capacity: h.capacity,
            ..Default::default()
        })
        .collect();
    let index: HashMap<String, usize> = views
        .iter()
        .enumerate()
        .map(|(i, v)| (v.id.clone(), i))
        .collect();
    for vm in &vms {
        if let Some(i) = vm.host.as_ref().and_then(|h| index.get(h)) {
            views[*i].add(&vm.id, vm.spec.resources(), &tenant_labels(vm));
        }
    }
    Ok((views, vms))
}

/// A VM's labels as `tenant/k=v`, so that affinity never crosses tenants.
pub fn tenant_labels(vm: &Vm) -> Vec<String> {
    vm.spec
        .label_pairs()
        .map(|l| format!("{}/{l}", vm.tenant))
        .collect()
}

/// Every tenant by id.
pub async fn tenants(ctx: &Context) -> Result<HashMap<String, Tenant>, StoreError> {
    Ok(ctx
        .store
        .list_all::<Tenant>()
        .await?
        .into_iter()
        .map(|t| (t.id.clone(), t))
        .collect())
}

/// The scheduler's request for a VM.
pub fn request_for(vm: &Vm, tenants: &HashMap<String, Tenant>, vms: &[Vm]) -> Request {
    let mut used = Resources::default();
    let mut count = 0;
    for o in vms.iter().filter(|o| {
        o.tenant == vm.tenant
            && o.id != vm.id
            && o.host.is_some()
            && o.desired != DesiredState::Deleted
    }) {
        used = used.plus(o.spec.resources());
        count += 1;
    }
    let scoped = |terms: &[String]| -> Vec<String> {
        terms.iter().map(|l| format!("{}/{l}", vm.tenant)).collect()
    };
    Request {
        tenant: vm.tenant.clone(),
        resources: vm.spec.resources(),
        host_labels: vm.spec.affinity.host_labels.clone(),
        with: scoped(&vm.spec.affinity.with),
        apart_from: scoped(&vm.spec.affinity.apart_from),
        exclude: vec![],
        quota: tenants.get(&vm.tenant).and_then(|t| t.quota),
        tenant_usage: (used, count),
    }
}
