//! The context every domain operation runs in: the store, the event log, the pool the
//! hostd clients come from, the migration slots, the settings, the metrics, and
//! whether this controller leads. Domain code takes a `&Context` and answers domain
//! errors; it knows nothing of HTTP.

use std::sync::Arc;
use std::time::Duration;

use nova_hostd_api::HostdClient;
use tokio::sync::watch;

use crate::error::Result;
use crate::events::Events;
use crate::metrics::Metrics;
use crate::model::Host;
use crate::scheduler::Weights;
use crate::slots::Slots;
use crate::store::DynStore;

/// How the controller runs (from flags or the config file).
#[derive(Debug, Clone)]
pub struct Settings {
    /// How often hosts are told to heartbeat.
    pub heartbeat: Duration,
    /// Between reconcile passes.
    pub reconcile_interval: Duration,
    /// A host silent this long is down.
    pub down_after: Duration,
    /// How the scheduler ranks hosts.
    pub weights: Weights,
    /// How long finished operations, audit entries, events and idempotency keys stay.
    pub retention: Retention,
    /// The CA that signs https hostd certificates (`--hostd-ca`).
    pub hostd_ca: Option<std::path::PathBuf>,
    /// The CA federation peers' https certificates chain to
    /// (`--federation-peer-ca`, else `--hostd-ca`).
    pub federation_peer_ca: Option<std::path::PathBuf>,
    /// The CA pair hosts' serving certificates are issued with (`--hostd-ca-key`).
    pub host_ca: Option<std::sync::Arc<crate::hostca::HostCa>>,
    /// VMs one tenant may have at most (`--max-vms-per-tenant`).
    pub max_vms_per_tenant: u64,
    /// Largest image upload, MiB (`--max-image-mib`).
    pub max_image_mib: u64,
    /// Host image versions hosts upgrade to (`--system-images`).
    pub system_images: Option<std::path::PathBuf>,
    /// Metric history: where, how often, how much.
    pub monitoring: crate::history::MonitoringSettings,
    /// The burst policy until the API sets one (`[cloud.burst]`).
    pub burst_policy: crate::model::BurstPolicy,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            heartbeat: Duration::from_secs(5),
            reconcile_interval: Duration::from_secs(1),
            down_after: Duration::from_secs(16),
            weights: Weights::default(),
            retention: Retention::default(),
            hostd_ca: None,
            federation_peer_ca: None,
            host_ca: None,
            max_vms_per_tenant: 1000,
            max_image_mib: 16384,
            system_images: None,
            monitoring: Default::default(),
            burst_policy: Default::default(),
        }
    }
}

/// How much history is kept: each kind is pruned past an age and past a count (the
/// oldest go first). Operations still under way are never pruned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub operations_max_age: Duration,
    pub operations_max_count: usize,
    pub audit_max_age: Duration,
    pub audit_max_count: usize,
    pub events_max_age: Duration,
    pub events_max_count: usize,
    /// How long a retried create with the same `Idempotency-Key` answers the first result.
    pub idempotency_ttl: Duration,
    /// How often the leader prunes.
    pub every: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(86_400);
        Retention {
            operations_max_age: 7 * DAY,
            operations_max_count: 10_000,
            audit_max_age: 90 * DAY,
            audit_max_count: 100_000,
            events_max_age: DAY,
            events_max_count: 100_000,
            idempotency_ttl: DAY,
            every: Duration::from_secs(60),
        }
    }
}

/// What every domain operation and loop shares; cheap to clone.
#[derive(Clone)]
pub struct Context {
    pub store: DynStore,
    pub events: Events,
    /// Migrations under way here, for the policy's parallelism limits.
    pub slots: Arc<Slots>,
    pub settings: Arc<Settings>,
    pub metrics: Arc<Metrics>,
    /// The metric history (see `monitoring`).
    pub monitoring: Arc<crate::history::Monitoring>,
    /// Whether this controller leads (runs the reconcile loops).
    pub leading: watch::Receiver<bool>,
    /// This controller's name.
    pub node: String,
    /// The cloud provider burst hosts are launched through (`[cloud]`), if any.
    pub cloud: Option<Arc<nova_cloud::Fleet>>,
    /// One keep-alive pool for every hostd.
    http: nova_http::Client,
}

impl Context {
    pub fn new(
        store: DynStore,
        settings: Settings,
        leading: watch::Receiver<bool>,
        node: String,
    ) -> Result<Context> {
        // Short deadlines: a slow host must not stall a reconcile pass.
        let opts = nova_http::ClientOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            ca_file: settings.hostd_ca.clone(),
        };
        let http = nova_http::Client::new("http://hostd.invalid", None, &opts)?;
        let metrics = Arc::new(Metrics::new());
        let monitoring = crate::history::Monitoring::open(settings.monitoring.clone())
            .map_err(|e| crate::store::StoreError::Backend(e.to_string()))?;
        Ok(Context {
            events: Events::new(store.clone()),
            store,
            slots: Arc::default(),
            settings: Arc::new(settings),
            metrics,
            monitoring: Arc::new(monitoring),
            leading,
            node,
            cloud: None,
            http,
        })
    }

    /// This context with a cloud provider to burst into.
    pub fn with_cloud(mut self, cloud: nova_cloud::Fleet) -> Context {
        self.cloud = Some(Arc::new(cloud));
        self
    }

    /// The client of `host`'s hostd (its URL and the token it registered).
    pub fn hostd(&self, host: &Host) -> Result<HostdClient> {
        Ok(HostdClient::with(&self.http, &host.url, &host.hostd_token)?)
    }

    /// Whether this controller leads right now.
    pub fn leads(&self) -> bool {
        *self.leading.borrow()
    }
}
