//! Alerting built in. Owns the stored rules (`alertrules/`), alerts (`alerts/`),
//! silences (`silences/`), notification receivers (`alertreceivers/`) and dead
//! letters (`deadletters/`). The leader evaluates every rule on an interval over the
//! metric history ([`eval`] does the arithmetic), keeps one alert per rule and target
//! (deduplicated, whatever how often it is evaluated) and moves it through pending ->
//! firing -> resolved (people acknowledge it; silences mute it), publishes each
//! change on the event stream, and hands each evaluation's changes, grouped per rule,
//! to [`notify`]. Knows nothing of HTTP (over 500 lines: the lifecycle, its
//! validation and the shipped rules are one unit).

pub mod eval;
pub mod notify;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use nova_http::FieldError;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::model::{
    now_ms, Alert, AlertRule, AlertState, Cmp, DeadLetter, NewSilence, Notification, Receiver,
    ReceiverKind, RuleKind, Silence, ALERT_LABELS,
};
use crate::store::{Expect, Object, Objects, StoreError};

impl Object for AlertRule {
    const PREFIX: &'static str = "alertrules/";
    fn key(&self) -> &str {
        &self.id
    }
}
impl Object for Alert {
    const PREFIX: &'static str = "alerts/";
    fn key(&self) -> &str {
        &self.id
    }
}
impl Object for Silence {
    const PREFIX: &'static str = "silences/";
    fn key(&self) -> &str {
        &self.id
    }
}
impl Object for Receiver {
    const PREFIX: &'static str = "alertreceivers/";
    fn key(&self) -> &str {
        &self.id
    }
}
impl Object for DeadLetter {
    const PREFIX: &'static str = "deadletters/";
    fn key(&self) -> &str {
        &self.id
    }
}

/// Severities, least first.
pub const SEVERITIES: [&str; 3] = ["info", "warning", "critical"];
/// The longest window, `for` or silence: 30 days.
const MAX_SPAN_S: u64 = 30 * 86_400;
/// Resolved alerts are kept this long, then forgotten.
const KEEP_RESOLVED_MS: u64 = 7 * 86_400 * 1000;

/// The rank of a severity (None for an unknown one).
pub fn severity_rank(s: &str) -> Option<usize> {
    SEVERITIES.iter().position(|x| *x == s)
}

/// The rules every cluster starts with (`builtin`). The last one tests
/// `controller.backups_failed`, a metric that exists once backups land: until then
/// it has no series and never fires.
pub fn default_rules() -> Vec<AlertRule> {
    let rule =
        |id: &str, metric: &str, condition, for_s, severity: &str, summary: &str| AlertRule {
            id: id.into(),
            metric: metric.into(),
            target: None,
            condition,
            for_s,
            severity: severity.into(),
            summary: summary.into(),
            builtin: true,
        };
    vec![
        rule(
            "host-down",
            "host.up",
            RuleKind::Threshold {
                cmp: Cmp::Below,
                value: 0.5,
                ratio_of: None,
            },
            30,
            "critical",
            "the host's hostd does not answer",
        ),
        rule(
            "host-memory-high",
            "host.mem_used_bytes",
            RuleKind::Threshold {
                cmp: Cmp::Above,
                value: 0.9,
                ratio_of: Some("host.mem_total_bytes".into()),
            },
            300,
            "warning",
            "the host uses more than 90 % of its memory",
        ),
        rule(
            "vm-crash-looping",
            "vm.restarts",
            RuleKind::Change {
                cmp: Cmp::Above,
                value: 2.0,
                window_s: 900,
            },
            0,
            "warning",
            "the VM restarted 3 times or more in 15 minutes",
        ),
        rule(
            "migration-failed",
            "controller.migrations_failed",
            RuleKind::Change {
                cmp: Cmp::Above,
                value: 0.0,
                window_s: 600,
            },
            0,
            "warning",
            "a live migration failed in the last 10 minutes",
        ),
        rule(
            "disk-filling",
            "host.disk_used_bytes",
            RuleKind::Forecast {
                capacity_of: "host.disk_total_bytes".into(),
                days: 3.0,
                window_s: 6 * 3600,
            },
            900,
            "warning",
            "at the last 6 hours' rate the host's disk is full within 3 days (value: days left)",
        ),
        rule(
            "backup-failed",
            "controller.backups_failed",
            RuleKind::Change {
                cmp: Cmp::Above,
                value: 0.0,
                window_s: 86_400,
            },
            0,
            "critical",
            "a backup failed in the last day",
        ),
    ]
}

fn ident(field: &str, v: &str) -> Result<()> {
    if v.is_empty()
        || v.len() > 63
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(FieldError::new(field, "letters, digits, - and _, 1 to 63").into());
    }
    Ok(())
}

fn window(field: &str, v: u64) -> Result<()> {
    if !(1..=MAX_SPAN_S).contains(&v) {
        return Err(FieldError::new(field, "1 s to 30 days").into());
    }
    Ok(())
}

fn finite(field: &str, v: f64) -> Result<()> {
    if !v.is_finite() {
        return Err(FieldError::new(field, "must be a finite number").into());
    }
    Ok(())
}

fn metric_name(field: &str, m: &str) -> Result<()> {
    if m.is_empty() || m.len() > 128 || m.chars().any(|c| c.is_control() || c == ' ') {
        return Err(FieldError::new(field, "a metric name, 1 to 128 characters").into());
    }
    Ok(())
}

/// Checks a rule; the error names the bad field.
pub fn validate_rule(r: &AlertRule) -> Result<()> {
    ident("id", &r.id)?;
    metric_name("metric", &r.metric)?;
    if let Some(t) = &r.target {
        ident("target", t)?;
    }
    if r.for_s > MAX_SPAN_S {
        return Err(FieldError::new("for_s", "at most 30 days").into());
    }
    if severity_rank(&r.severity).is_none() {
        return Err(FieldError::new("severity", "info, warning or critical").into());
    }
    if r.summary.len() > 1024 {
        return Err(FieldError::new("summary", "at most 1024 characters").into());
    }
    match &r.condition {
        RuleKind::Threshold {
            value, ratio_of, ..
        } => {
            finite("condition.value", *value)?;
            if let Some(m) = ratio_of {
                metric_name("condition.ratio_of", m)?;
            }
        }
        RuleKind::Change {
            value, window_s, ..
        } => {
            finite("condition.value", *value)?;
            window("condition.window_s", *window_s)?;
        }
        RuleKind::Absent { window_s } => window("condition.window_s", *window_s)?,
        RuleKind::Anomaly { z, window_s } => {
            finite("condition.z", *z)?;
            if *z <= 0.0 {
                return Err(FieldError::new("condition.z", "must be above 0").into());
            }
            window("condition.window_s", *window_s)?;
        }
        RuleKind::Forecast {
            capacity_of,
            days,
            window_s,
        } => {
            metric_name("condition.capacity_of", capacity_of)?;
            finite("condition.days", *days)?;
            if *days <= 0.0 {
                return Err(FieldError::new("condition.days", "must be above 0").into());
            }
            window("condition.window_s", *window_s)?;
        }
    }
    Ok(())
}

/// Checks a receiver; the error names the bad field.
pub fn validate_receiver(r: &Receiver) -> Result<()> {
    ident("id", &r.id)?;
    if let Some(s) = &r.min_severity {
        if severity_rank(s).is_none() {
            return Err(FieldError::new("min_severity", "info, warning or critical").into());
        }
    }
    if !(1..=20).contains(&r.max_attempts) {
        return Err(FieldError::new("max_attempts", "1 to 20").into());
    }
    if !(10..=600_000).contains(&r.backoff_ms) {
        return Err(FieldError::new("backoff_ms", "10 to 600000").into());
    }
    let url = |field: &str, u: &str| -> Result<()> {
        notify::split_url(u)
            .map(|_| ())
            .ok_or_else(|| FieldError::new(field, "an http:// or https:// URL with a host").into())
    };
    match &r.channel {
        ReceiverKind::Webhook { url: u, secret } => {
            url("channel.url", u)?;
            if secret.len() < 16 || secret.len() > 256 {
                return Err(FieldError::new("channel.secret", "16 to 256 characters").into());
            }
        }
        ReceiverKind::Email { smtp, from, to } => {
            if notify::split_host_port(smtp).is_none() {
                return Err(FieldError::new("channel.smtp", "host:port of an SMTP relay").into());
            }
            notify::mailbox(from).map_err(|e| Error::from(FieldError::new("channel.from", e)))?;
            if to.is_empty() || to.len() > 50 {
                return Err(FieldError::new("channel.to", "1 to 50 addresses").into());
            }
            for a in to {
                notify::mailbox(a).map_err(|e| Error::from(FieldError::new("channel.to", e)))?;
            }
        }
        ReceiverKind::Alertmanager { url: u } => url("channel.url", u)?,
    }
    Ok(())
}

/// The labels an alert is matched (silenced) on.
pub fn labels(a: &Alert) -> BTreeMap<&str, &str> {
    [
        ("rule", a.rule.as_str()),
        ("target", a.target.as_str()),
        ("metric", a.metric.as_str()),
        ("severity", a.severity.as_str()),
        ("tenant", a.tenant.as_str()),
    ]
    .into_iter()
    .collect()
}

/// Makes a silence from a request by `by`; the error names the bad field.
pub fn new_silence(n: &NewSilence, by: &str, now: u64) -> Result<Silence> {
    if n.matchers.is_empty() || n.matchers.len() > ALERT_LABELS.len() {
        return Err(FieldError::new(
            "matchers",
            "one to five of rule, target, metric, severity, tenant",
        )
        .into());
    }
    for (k, v) in &n.matchers {
        if !ALERT_LABELS.contains(&k.as_str()) {
            return Err(FieldError::new(
                "matchers",
                format!("{k}: not one of rule, target, metric, severity, tenant"),
            )
            .into());
        }
        if v.is_empty() || v.len() > 128 || v.chars().any(char::is_control) {
            return Err(FieldError::new("matchers", format!("{k}: 1 to 128 characters")).into());
        }
    }
    window("for_s", n.for_s)?;
    if n.comment.len() > 1024 {
        return Err(FieldError::new("comment", "at most 1024 characters").into());
    }
    Ok(Silence {
        id: format!("sil-{}", hex::encode(rand::random::<[u8; 6]>())),
        matchers: n.matchers.clone(),
        until_ms: now + n.for_s * 1000,
        created_by: by.into(),
        comment: n.comment.clone(),
    })
}

/// Stores the shipped rules that are missing (a deleted one comes back when a
/// controller starts leading).
pub async fn install_defaults(ctx: &Context) -> Result<()> {
    for r in default_rules() {
        match ctx.store.create(&r).await {
            Ok(_) | Err(StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

async fn save(ctx: &Context, a: &Alert) -> Result<()> {
    let bytes = serde_json::to_vec(a).map_err(|e| StoreError::Backend(e.to_string()))?;
    ctx.store
        .put(&format!("{}{}", Alert::PREFIX, a.id), bytes, Expect::Any)
        .await?;
    Ok(())
}

async fn publish(ctx: &Context, a: &Alert) {
    let state = serde_json::to_value(a.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let data = serde_json::to_value(a).unwrap_or_default();
    ctx.events
        .publish(&format!("alert.{state}"), &a.tenant, &a.id, data)
        .await;
}

/// The latest silence end that mutes `a` at `now`, if one does.
fn muted_until(silences: &[Silence], a: &Alert, now: u64) -> Option<u64> {
    let l = labels(a);
    silences
        .iter()
        .filter(|s| s.mutes(now, &l))
        .map(|s| s.until_ms)
        .max()
}

/// What one rule's evaluation read: per target, the value its condition holds with.
type Held = BTreeMap<String, (f64, String)>;

/// Reads the history one rule needs and answers the targets it holds for.
async fn evaluate_rule(ctx: &Context, r: &AlertRule, now_s: u64) -> Result<Held> {
    let interval = ctx.monitoring.settings.scrape_interval.as_secs().max(1);
    let back = eval::lookback(&r.condition, interval);
    let other = match &r.condition {
        RuleKind::Threshold {
            ratio_of: Some(m), ..
        } => Some(m.clone()),
        RuleKind::Forecast { capacity_of, .. } => Some(capacity_of.clone()),
        _ => None,
    };
    let db = ctx.monitoring.db.clone();
    let (metric, target) = (r.metric.clone(), r.target.clone());
    let read = tokio::task::spawn_blocking(move || {
        let all = |_: &str| true;
        let main = db.query(
            &metric,
            target.as_deref(),
            now_s.saturating_sub(back),
            now_s,
            now_s,
            &all,
        )?;
        let latest: HashMap<String, f64> = match other {
            Some(m) => db
                .query(
                    &m,
                    target.as_deref(),
                    now_s.saturating_sub(back.max(3600)),
                    now_s,
                    now_s,
                    &all,
                )?
                .1
                .into_iter()
                .filter_map(|f| Some((f.key.target, f.points.last()?.1)))
                .collect(),
            None => HashMap::new(),
        };
        Ok::<_, crate::monitoring::tsdb::TsdbError>((main.1, latest))
    })
    .await
    .map_err(|e| StoreError::Backend(e.to_string()))?
    .map_err(|e| StoreError::Backend(e.to_string()))?;
    let (found, latest) = read;
    let mut held = Held::new();
    for f in found {
        let s = eval::Series {
            points: &f.points,
            other: latest.get(&f.key.target).copied(),
        };
        if let Some(v) = eval::holds(&r.condition, &s, now_s, interval) {
            held.insert(f.key.target, (v, f.tenant));
        }
    }
    Ok(held)
}

/// Notifications of one evaluation, grouped per rule and status.
#[derive(Default)]
struct Outbox(BTreeMap<(String, &'static str), Vec<Alert>>);

impl Outbox {
    fn add(&mut self, status: &'static str, a: &Alert) {
        self.0
            .entry((a.rule.clone(), status))
            .or_default()
            .push(a.clone());
    }

    fn into_notifications(self) -> Vec<Notification> {
        self.0
            .into_iter()
            .map(|((group, status), alerts)| Notification {
                group,
                status: status.into(),
                alerts,
            })
            .collect()
    }
}

/// Moves an alert whose condition holds one step on; whether it changed state.
fn step_holding(
    a: &mut Alert,
    r: &AlertRule,
    silences: &[Silence],
    now: u64,
    out: &mut Outbox,
) -> bool {
    let before = a.state;
    let mute = muted_until(silences, a, now);
    a.silenced_until_ms = mute;
    match a.state {
        AlertState::Pending if now >= a.since_ms + r.for_s * 1000 => {
            a.fired_ms = Some(now);
            a.state = if mute.is_some() {
                AlertState::Silenced
            } else {
                AlertState::Firing
            };
        }
        AlertState::Firing if mute.is_some() => a.state = AlertState::Silenced,
        AlertState::Silenced if mute.is_none() => a.state = AlertState::Firing,
        _ => {}
    }
    if a.state != before && a.state == AlertState::Firing {
        out.add("firing", a);
    }
    a.state != before
}

/// One evaluation of every rule at `now` (ms): updates the alerts, publishes their
/// changes, and answers the notifications to send.
pub async fn evaluate_once(ctx: &Context, now: u64) -> Result<Vec<Notification>> {
    let now_s = now / 1000;
    let rules = ctx.store.list_all::<AlertRule>().await?;
    let silences: Vec<Silence> = ctx.store.list_all::<Silence>().await?;
    let mut alerts: HashMap<String, Alert> = ctx
        .store
        .list_all::<Alert>()
        .await?
        .into_iter()
        .map(|a| (a.id.clone(), a))
        .collect();
    let mut out = Outbox::default();
    let mut changed: Vec<(Alert, bool)> = vec![];
    let mut seen = std::collections::HashSet::new();
    for r in &rules {
        let held = match evaluate_rule(ctx, r, now_s).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(rule = %r.id, "alert rule not evaluated: {e}");
                // Keep its alerts as they are rather than resolve them on a read error.
                for a in alerts.values().filter(|a| a.rule == r.id) {
                    seen.insert(a.id.clone());
                }
                continue;
            }
        };
        for (target, (value, tenant)) in held {
            let id = format!("{}:{target}", r.id);
            seen.insert(id.clone());
            let mut a = match alerts.remove(&id).filter(Alert::active) {
                Some(a) => a,
                None => Alert {
                    id: id.clone(),
                    rule: r.id.clone(),
                    target: target.clone(),
                    metric: r.metric.clone(),
                    tenant,
                    state: AlertState::Pending,
                    severity: r.severity.clone(),
                    summary: r.summary.clone(),
                    value,
                    since_ms: now,
                    fired_ms: None,
                    resolved_ms: None,
                    acknowledged_by: None,
                    silenced_until_ms: None,
                    count: 0,
                },
            };
            let fresh = a.count == 0;
            a.count += 1;
            a.value = value;
            a.severity = r.severity.clone();
            a.summary = r.summary.clone();
            let moved = step_holding(&mut a, r, &silences, now, &mut out);
            changed.push((a, fresh || moved));
        }
    }
    // Every active alert whose condition no longer holds (or whose rule is gone).
    for (_, mut a) in alerts.into_iter() {
        if !a.active() {
            if a.resolved_ms.is_some_and(|t| t + KEEP_RESOLVED_MS < now) {
                ctx.store.remove::<Alert>(&a.id).await?;
            }
            continue;
        }
        if seen.contains(&a.id) {
            continue;
        }
        let notify = matches!(a.state, AlertState::Firing | AlertState::Acknowledged);
        a.state = AlertState::Resolved;
        a.resolved_ms = Some(now);
        if notify {
            out.add("resolved", &a);
        }
        changed.push((a, true));
    }
    for (a, moved) in &changed {
        save(ctx, a).await?;
        if *moved {
            publish(ctx, a).await;
        }
    }
    // Silences long expired are forgotten.
    for s in silences
        .iter()
        .filter(|s| s.until_ms + KEEP_RESOLVED_MS < now)
    {
        ctx.store.remove::<Silence>(&s.id).await?;
    }
    Ok(out.into_notifications())
}

/// Acknowledges an active alert for `by`: no more notifications until it resolves.
pub async fn acknowledge(ctx: &Context, id: &str, by: &str) -> Result<Alert> {
    let mut refused = false;
    let a = ctx
        .store
        .update::<Alert, _>(id, |a| {
            refused = !a.active();
            if refused {
                return false;
            }
            a.state = AlertState::Acknowledged;
            a.acknowledged_by = Some(by.to_string());
            true
        })
        .await
        .map_err(crate::error::missing("alert"))?;
    if refused {
        return Err(Error::conflict("the alert is resolved"));
    }
    publish(ctx, &a).await;
    Ok(a)
}

/// Silences one alert (its rule and target) for `for_s`: stores the silence and
/// marks the alert silenced now rather than at the next evaluation.
pub async fn silence_alert(
    ctx: &Context,
    id: &str,
    for_s: u64,
    by: &str,
) -> Result<(Alert, Silence)> {
    let a = ctx
        .store
        .must_read::<Alert>(id)
        .await
        .map_err(crate::error::missing("alert"))?;
    if !a.active() {
        return Err(Error::conflict("the alert is resolved"));
    }
    let s = new_silence(
        &NewSilence {
            matchers: [
                ("rule".to_string(), a.rule.clone()),
                ("target".to_string(), a.target.clone()),
            ]
            .into_iter()
            .collect(),
            for_s,
            comment: format!("silenced from alert {id}"),
        },
        by,
        now_ms(),
    )?;
    ctx.store.create(&s).await?;
    let a = ctx
        .store
        .update::<Alert, _>(id, |a| {
            if !a.active() || a.state == AlertState::Pending {
                return false;
            }
            a.state = AlertState::Silenced;
            a.silenced_until_ms = Some(s.until_ms);
            true
        })
        .await
        .map_err(crate::error::missing("alert"))?;
    publish(ctx, &a).await;
    Ok((a, s))
}

/// Evaluates on the interval while this controller leads, sends what changed, and
/// re-sends firing alerts to Alertmanager receivers every minute (Alertmanager
/// resolves an alert nobody repeats).
pub async fn run(ctx: Context) {
    let every = ctx.monitoring.settings.alert_interval;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut installed = false;
    let mut last_repeat = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if !ctx.leads() {
            installed = false;
            continue;
        }
        if !installed {
            match install_defaults(&ctx).await {
                Ok(()) => installed = true,
                Err(e) => tracing::warn!("default alert rules not installed: {e}"),
            }
        }
        match evaluate_once(&ctx, now_ms()).await {
            Ok(notes) => notify::dispatch(&ctx, notes, false).await,
            Err(e) => tracing::error!("alert evaluation: {e}"),
        }
        if last_repeat.elapsed() >= Duration::from_secs(60) {
            last_repeat = tokio::time::Instant::now();
            if let Ok(all) = ctx.store.list_all::<Alert>().await {
                let mut out = Outbox::default();
                for a in all.iter().filter(|a| a.state == AlertState::Firing) {
                    out.add("firing", a);
                }
                notify::dispatch(&ctx, out.into_notifications(), true).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_are_valid_and_cover_the_issue() {
        let rules = default_rules();
        for r in &rules {
            validate_rule(r).unwrap_or_else(|e| panic!("{}: {e}", r.id));
        }
        for id in [
            "host-down",
            "host-memory-high",
            "vm-crash-looping",
            "migration-failed",
            "disk-filling",
            "backup-failed",
        ] {
            assert!(rules.iter().any(|r| r.id == id), "{id}");
        }
    }

    #[test]
    fn bad_rules_are_refused_naming_the_field() {
        let mut r = default_rules()[0].clone();
        r.severity = "loud".into();
        let e = validate_rule(&r).unwrap_err().to_string();
        assert!(e.contains("severity"), "{e}");
        let mut r = default_rules()[0].clone();
        r.id = "a/b".into();
        assert!(validate_rule(&r).unwrap_err().to_string().contains("id"));
        let mut r = default_rules()[0].clone();
        r.condition = RuleKind::Anomaly {
            z: 0.0,
            window_s: 60,
        };
        assert!(validate_rule(&r)
            .unwrap_err()
            .to_string()
            .contains("condition.z"));
        r.condition = RuleKind::Absent { window_s: 0 };
        assert!(validate_rule(&r)
            .unwrap_err()
            .to_string()
            .contains("condition.window_s"));
    }

    #[test]
    fn a_silence_mutes_by_exact_and_prefix_matchers_until_it_expires() {
        let s = new_silence(
            &NewSilence {
                matchers: [
                    ("rule".to_string(), "host-down".to_string()),
                    ("target".to_string(), "h-*".to_string()),
                ]
                .into_iter()
                .collect(),
                for_s: 10,
                comment: String::new(),
            },
            "ann",
            1000,
        )
        .unwrap();
        let l = |rule, target| -> BTreeMap<&str, &str> {
            [("rule", rule), ("target", target)].into_iter().collect()
        };
        assert!(s.mutes(2000, &l("host-down", "h-1")));
        assert!(!s.mutes(2000, &l("host-down", "x-1")));
        assert!(!s.mutes(2000, &l("disk-filling", "h-1")));
        assert!(!s.mutes(11_000, &l("host-down", "h-1")));
        let bad = NewSilence {
            matchers: [("colour".to_string(), "red".to_string())]
                .into_iter()
                .collect(),
            for_s: 10,
            comment: String::new(),
        };
        assert!(new_silence(&bad, "ann", 0)
            .unwrap_err()
            .to_string()
            .contains("matchers"));
    }
}
