//! Monitoring: the controller scrapes every hostd's `/metrics` and its own on an
//! interval and keeps the history of hosts and VMs in the embedded store of
//! `crate::history` (Gorilla-compressed chunks in SQLite, three resolutions, bounded,
//! surviving restarts); [`scrape`] turns expositions into series, [`capacity`] plans
//! from the history with [`trend`]. Every controller scrapes, so
//! any of them answers queries after a failover. The HTTP routes live in
//! `api::monitoring`; this module knows nothing of HTTP.

pub mod capacity;
pub mod scrape;
pub mod trend;

use std::collections::HashMap;
use std::time::Duration;

use crate::context::Context;
pub use crate::history::{tsdb, Monitoring, MonitoringSettings};
use crate::model::{now_ms, Host, Vm};
use crate::store::Objects;

/// Seconds since the epoch, on the scrape grid (so that timestamps compress).
fn tick_time(interval: Duration) -> u64 {
    let s = now_ms() / 1000;
    let i = interval.as_secs().max(1);
    s - s % i
}

/// One scrape of every host and of this controller, stored; answers the samples
/// stored.
pub async fn scrape_once(ctx: &Context, rates: &mut scrape::Rates) -> usize {
    let m = &ctx.monitoring;
    let t = tick_time(m.settings.scrape_interval);
    let hosts = ctx.store.list_all::<Host>().await.unwrap_or_default();
    let tenants: HashMap<String, String> = ctx
        .store
        .list_all::<Vm>()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.id, v.tenant))
        .collect();
    let deadline = m.settings.scrape_interval.max(Duration::from_secs(1));
    let pages = futures_util::future::join_all(hosts.iter().map(|h| async move {
        let text = match ctx.hostd(h) {
            Ok(c) => tokio::time::timeout(deadline, c.metrics())
                .await
                .ok()
                .and_then(Result::ok),
            Err(_) => None,
        };
        (h.id.clone(), text)
    }))
    .await;
    let mut samples = vec![];
    {
        for (host, text) in pages {
            match text {
                Some(text) => {
                    samples.extend(scrape::host_samples(&host, &text, t, &tenants, rates))
                }
                None => samples.push((
                    scrape::key("host.up", &host),
                    crate::model::SYSTEM_TENANT.into(),
                    0.0,
                )),
            }
        }
        samples.extend(scrape::controller_samples(
            &ctx.node,
            &ctx.metrics.encode(),
            t,
            rates,
        ));
        rates.forget_older(t.saturating_sub(10 * deadline.as_secs().max(1)));
    }
    let db = m.db.clone();
    let r = tokio::task::spawn_blocking(move || {
        let refs: Vec<(tsdb::Key, &str, f64)> = samples
            .iter()
            .map(|(k, ten, v)| (k.clone(), ten.as_str(), *v))
            .collect();
        db.ingest(t, &refs)
    })
    .await;
    match r {
        Ok(Ok(n)) => n,
        Ok(Err(e)) => {
            tracing::error!("metric history: {e}");
            0
        }
        Err(e) => {
            tracing::error!("metric history: {e}");
            0
        }
    }
}

/// Scrapes forever; checkpoints and prunes the history as configured.
pub async fn run(ctx: Context) {
    let s = ctx.monitoring.settings.clone();
    let mut tick = tokio::time::interval(s.scrape_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_checkpoint = tokio::time::Instant::now();
    // Counters' last values, to turn them into rates: this loop's own state.
    let mut rates = scrape::Rates::default();
    loop {
        tick.tick().await;
        scrape_once(&ctx, &mut rates).await;
        if last_checkpoint.elapsed() >= s.checkpoint {
            last_checkpoint = tokio::time::Instant::now();
            let db = ctx.monitoring.db.clone();
            let r = tokio::task::spawn_blocking(move || {
                db.checkpoint()?;
                db.prune(now_ms() / 1000)
            })
            .await;
            if let Ok(Err(e)) = r {
                tracing::error!("metric history checkpoint: {e}");
            }
        }
    }
}
