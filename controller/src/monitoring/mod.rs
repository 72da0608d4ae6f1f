//! Monitoring: the controller scrapes every hostd's `/metrics` and its own on an
//! interval and keeps the history of hosts and VMs in an embedded store ([`tsdb`]:
//! Gorilla-compressed chunks in SQLite, three resolutions, bounded, surviving
//! restarts); [`scrape`] turns expositions into series. Every controller scrapes
//! (`scraping`, the loop over the cluster), so any of them answers queries after a
//! failover. The HTTP routes live in `api::monitoring`; this module knows nothing of
//! HTTP nor of the cluster.

pub mod scrape;
pub mod tsdb;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tsdb::{Tier, Tsdb, TsdbError, DEFAULT_TIERS};

/// How monitoring runs (flags `--metrics-*`).
#[derive(Debug, Clone)]
pub struct MonitoringSettings {
    /// The history's SQLite file; in memory when None.
    pub db: Option<PathBuf>,
    /// Between scrapes (and the resolution of the finest tier).
    pub scrape_interval: Duration,
    /// Between writes of the open chunks (what a crash may lose).
    pub checkpoint: Duration,
    /// Series kept at most; samples of further series are dropped and counted.
    pub max_series: usize,
    pub tiers: Vec<Tier>,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        MonitoringSettings {
            db: None,
            scrape_interval: Duration::from_secs(10),
            checkpoint: Duration::from_secs(60),
            max_series: 200_000,
            tiers: DEFAULT_TIERS.to_vec(),
        }
    }
}

/// The history and what fills it.
pub struct Monitoring {
    pub db: Arc<Tsdb>,
    pub settings: MonitoringSettings,
    pub(crate) rates: Mutex<scrape::Rates>,
}

impl Monitoring {
    pub fn open(settings: MonitoringSettings) -> Result<Monitoring, TsdbError> {
        let path = settings
            .db
            .clone()
            .unwrap_or_else(|| PathBuf::from(":memory:"));
        if let Some(d) = settings.db.as_ref().and_then(|p| p.parent()) {
            std::fs::create_dir_all(d).ok();
        }
        let db = Tsdb::open(&path, &settings.tiers, settings.max_series)?;
        Ok(Monitoring {
            db: Arc::new(db),
            settings,
            rates: Mutex::default(),
        })
    }
}
