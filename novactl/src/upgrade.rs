//! `novactl host upgrade HOST` and `novactl cluster upgrade`: installing a host image
//! version (from the controller's `--system-images`) on one host, or on every host one
//! at a time, draining each first. The host reboots into the new version once; it
//! stays there only if its hostd registers again within the image's trial time, or
//! else falls back to the version it ran. Progress goes to stderr a line a step. The
//! controller streams the image in the background: its `host.upgrading` and
//! `host.upgrade_failed` events, followed from before the request, say at once when
//! the host took the image or why it did not (a bad signature, a full disk).

use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use nova_controller_api::{
    ControllerClient, Event, Host, HostState, HostUpgradeEvent, HostUpgradeRequest,
};

use crate::output::{self, Format};
use crate::progress::{self, RECONNECT_FOR};

/// How often the host is read while waiting for it to come back.
const POLL: Duration = Duration::from_secs(2);

#[derive(Args)]
pub struct UpgradeArgs {
    /// The host image version (a directory of the controller's --system-images); the
    /// newest when absent.
    #[arg(long)]
    pub image: Option<String>,
    /// Give up waiting for a host to come back Ready after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_s: u64,
    /// Print the upgrade started and return at once (host upgrade only).
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Subcommand)]
pub enum ClusterCmd {
    /// Upgrade every host not on the version, one at a time: drain it (live-migrate its
    /// VMs away), install the version, wait until it is Ready on it, uncordon it. Stops
    /// at the first host that does not come back on the new version.
    #[command(after_long_help = "Examples:
  novactl cluster upgrade                 # to the newest version the controller holds
  novactl cluster upgrade --image 0.2.0")]
    Upgrade(UpgradeArgs),
}

/// How an upgrade of one host ended.
enum Outcome {
    Upgraded,
    /// Back Ready on another version: the new system did not register in time.
    RolledBack(Option<String>),
}

fn say(f: Format, line: String) {
    if f.is_table() {
        eprintln!("{line}");
    }
}

fn version(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// What a `host.upgrading` / `host.upgrade_failed` event about `id` says, if it is one.
fn upgrade_event(ev: &Event, id: &str) -> Option<(bool, HostUpgradeEvent)> {
    let failed = match ev.kind.as_str() {
        "host.upgrading" => false,
        "host.upgrade_failed" => true,
        _ => return None,
    };
    if ev.id != id {
        return None;
    }
    let data = serde_json::from_value::<HostUpgradeEvent>(ev.data.clone()).unwrap_or_default();
    Some((failed, data))
}

/// Installs the version on `id` and waits (unless `no_wait`) until the host is Ready.
async fn upgrade_one(
    api: &ControllerClient,
    id: &str,
    a: &UpgradeArgs,
    f: Format,
    prefix: &str,
) -> anyhow::Result<Outcome> {
    let t0 = Instant::now();
    // Subscribed before the request: its outcome cannot slip in between.
    let mut events: Option<BoxStream<'static, Result<Event, nova_http::Error>>> = if a.no_wait {
        None
    } else {
        match api.follow_events(None, RECONNECT_FOR).await {
            Ok(s) => Some(s),
            Err(e) => {
                say(
                    f,
                    format!("{prefix}host {id}: not following events ({e}): polling only"),
                );
                None
            }
        }
    };
    let up = api
        .upgrade_host(
            id,
            &HostUpgradeRequest {
                image: a.image.clone(),
            },
        )
        .await?;
    say(
        f,
        format!(
            "{prefix}host {id}: {} -> {}: streaming it to the host, which then reboots into it",
            version(&up.from_version),
            up.to_version,
        ),
    );
    if a.no_wait {
        print!("{}", output::one(f, &up)?);
        return Ok(Outcome::Upgraded);
    }
    let mut went_down = false;
    let deadline = Duration::from_secs(a.timeout_s);
    loop {
        // Sleep until the next poll, unless an event about this upgrade comes first.
        let poll = tokio::time::sleep(POLL);
        tokio::pin!(poll);
        loop {
            let next = async {
                match events.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut poll => break,
                ev = next => match ev {
                    Some(Ok(ev)) => match upgrade_event(&ev, id) {
                        Some((true, d)) => bail!(
                            "{prefix}host {id}: the upgrade to {} failed after {} s: {}; the host stays on {}",
                            up.to_version,
                            t0.elapsed().as_secs(),
                            d.error.as_deref().unwrap_or("no reason given"),
                            version(&up.from_version),
                        ),
                        Some((false, d)) => say(
                            f,
                            format!(
                                "{prefix}host {id}: {} written to slot {}: rebooting into it",
                                up.to_version,
                                d.slot.as_deref().unwrap_or("-")
                            ),
                        ),
                        None => {}
                    },
                    Some(Err(e)) => {
                        say(f, format!("{prefix}host {id}: the event stream failed ({e}): polling only"));
                        events = None;
                    }
                    None => events = None,
                },
            }
        }
        let h: Host = match api.host(id).await {
            Ok(h) => h,
            Err(e) if e.is_unreachable() => continue,
            Err(e) => return Err(e.into()),
        };
        if h.state != HostState::Ready && !went_down {
            went_down = true;
            say(f, format!("{prefix}host {id}: down (rebooting)"));
        }
        if h.state == HostState::Ready && h.image_version.as_deref() == Some(&up.to_version) {
            say(
                f,
                format!(
                    "{prefix}host {id}: Ready on {} after {} s",
                    up.to_version,
                    t0.elapsed().as_secs()
                ),
            );
            return Ok(Outcome::Upgraded);
        }
        if h.state == HostState::Ready && went_down {
            say(
                f,
                format!(
                    "{prefix}host {id}: back Ready on {} after {} s: {} did not register in time and the host fell back",
                    version(&h.image_version),
                    t0.elapsed().as_secs(),
                    up.to_version
                ),
            );
            return Ok(Outcome::RolledBack(h.image_version));
        }
        if t0.elapsed() > deadline {
            bail!(
                "host {id} is not Ready on {} after {} s (state {:?}, version {})",
                up.to_version,
                a.timeout_s,
                h.state,
                version(&h.image_version)
            );
        }
    }
}

/// `novactl host upgrade HOST`.
pub async fn host(
    api: &ControllerClient,
    id: &str,
    a: UpgradeArgs,
    f: Format,
) -> anyhow::Result<()> {
    match upgrade_one(api, id, &a, f, "").await? {
        Outcome::Upgraded if a.no_wait => Ok(()),
        Outcome::Upgraded => {
            print!("{}", output::one(f, &api.host(id).await?)?);
            Ok(())
        }
        Outcome::RolledBack(v) => bail!(
            "host {id} rolled back to {}: the new version never registered",
            version(&v)
        ),
    }
}

/// `novactl cluster ...`.
pub async fn cluster(api: &ControllerClient, cmd: ClusterCmd, f: Format) -> anyhow::Result<()> {
    let ClusterCmd::Upgrade(mut a) = cmd;
    if a.no_wait {
        bail!("--no-wait: a rolling upgrade waits for each host before the next");
    }
    let target = match &a.image {
        Some(v) => v.clone(),
        None => match api.system_images().await?.images.first() {
            Some(i) => i.version.clone(),
            None => bail!("the controller holds no host image version (--system-images)"),
        },
    };
    a.image = Some(target.clone());
    let mut hosts: Vec<Host> = api
        .hosts()
        .await?
        .into_iter()
        .filter(|h| h.image_version.is_some() && h.image_version.as_deref() != Some(&target))
        .collect();
    hosts.sort_by(|x, y| x.id.cmp(&y.id));
    let n = hosts.len();
    say(
        f,
        format!("rolling upgrade to {target}: {n} host(s) to upgrade"),
    );
    for (i, h) in hosts.iter().enumerate() {
        let prefix = format!("[{}/{n}] ", i + 1);
        if h.state != HostState::Ready {
            bail!(
                "{prefix}host {} is not Ready: fix it first (or forget it)",
                h.id
            );
        }
        say(f, format!("{prefix}host {}: draining", h.id));
        let op = api.drain(&h.id).await?;
        let done = progress::follow(api, op, f).await?;
        if done.state != nova_controller_api::OpState::Succeeded {
            bail!(
                "{prefix}drain of host {} {}: {}",
                h.id,
                progress::state(done.state),
                done.message
            );
        }
        let outcome = upgrade_one(api, &h.id, &a, f, &prefix).await;
        // Back in service either way: a failed upgrade left it on its version.
        api.uncordon(&h.id).await?;
        say(f, format!("{prefix}host {}: uncordoned", h.id));
        let outcome = outcome.map_err(|e| e.context("rolling upgrade stopped"))?;
        if let Outcome::RolledBack(v) = outcome {
            bail!(
                "rolling upgrade stopped: host {} rolled back to {}",
                h.id,
                version(&v)
            );
        }
    }
    print!("{}", output::list(f, &api.hosts().await?)?);
    Ok(())
}

impl output::Columns for nova_controller_api::HostUpgrade {
    fn headers(_wide: bool) -> Vec<&'static str> {
        vec!["host", "from", "to"]
    }
    fn cells(&self, _wide: bool) -> Vec<String> {
        vec![
            self.host.clone(),
            version(&self.from_version).to_string(),
            self.to_version.clone(),
        ]
    }
}
