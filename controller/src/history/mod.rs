//! The metric history the context holds: the embedded time-series store ([`tsdb`])
//! and how it is configured. Filled and read by `monitoring` and `alerting`, which
//! run above the context; this module sits below it and knows nothing of either.

pub mod codec;
pub mod tsdb;

use std::path::PathBuf;
use std::sync::Arc;
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
    /// Between evaluations of the alert rules (by the leader).
    pub alert_interval: Duration,
}

impl Default for MonitoringSettings {
    fn default() -> Self {
        MonitoringSettings {
            db: None,
            scrape_interval: Duration::from_secs(10),
            checkpoint: Duration::from_secs(60),
            max_series: 200_000,
            tiers: DEFAULT_TIERS.to_vec(),
            alert_interval: Duration::from_secs(10),
        }
    }
}

/// The history and how it is kept.
pub struct Monitoring {
    pub db: Arc<Tsdb>,
    pub settings: MonitoringSettings,
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
        })
    }
}
