//! Sending notifications: to a webhook (the [`Notification`] as JSON, signed with
//! HMAC-SHA256 in `X-Nova-Signature`), by mail through an SMTP relay (lettre), or to
//! Alertmanager's `POST /api/v2/alerts`. Each delivery is retried with exponential
//! backoff (the receiver's `max_attempts`, `backoff_ms`), then stored as a
//! [`DeadLetter`] the API lists.

use std::time::Duration;

use hmac::{Hmac, Mac};
use lettre::message::Mailbox;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use nova_http::Method;
use sha2::Sha256;

use super::severity_rank;
use crate::context::Context;
use crate::model::{
    now_ms, Alert, AlertmanagerAlert, DeadLetter, Notification, Receiver, ReceiverKind,
};
use crate::store::Objects;

/// The header a webhook's signature is in.
pub const SIGNATURE_HEADER: &str = "X-Nova-Signature";

/// `sha256=<hex HMAC-SHA256 of body with secret>`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    m.update(body);
    format!("sha256={}", hex::encode(m.finalize().into_bytes()))
}

/// `(base, path)` of an http(s) URL: `http://h:p` and `/path?q` (`/` when none).
pub fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    if url.len() > 2048 || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if host.is_empty() || host.contains('@') {
        return None;
    }
    Some((
        url[..url.len() - rest.len() + host.len()].to_string(),
        path.to_string(),
    ))
}

/// `(host, port)` of `host:port`.
pub fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    if h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_whitespace() || c == '/') {
        return None;
    }
    Some((h.to_string(), p.parse().ok().filter(|p| *p > 0)?))
}

/// A mail address, or why it is not one.
pub fn mailbox(a: &str) -> Result<Mailbox, String> {
    a.parse::<Mailbox>().map_err(|e| format!("{a}: {e}"))
}

/// The alerts of `n` a receiver wants (its minimum severity); None when none.
fn for_receiver(r: &Receiver, n: &Notification) -> Option<Notification> {
    let min = r
        .min_severity
        .as_deref()
        .and_then(severity_rank)
        .unwrap_or(0);
    let alerts: Vec<Alert> = n
        .alerts
        .iter()
        .filter(|a| severity_rank(&a.severity).unwrap_or(0) >= min)
        .cloned()
        .collect();
    (!alerts.is_empty()).then(|| Notification {
        group: n.group.clone(),
        status: n.status.clone(),
        alerts,
    })
}

/// Sends every notification to every receiver that wants it, each delivery in its
/// own task; `alertmanager_only` for the periodic repeat of firing alerts.
pub async fn dispatch(ctx: &Context, notes: Vec<Notification>, alertmanager_only: bool) {
    if notes.is_empty() {
        return;
    }
    let receivers = match ctx.store.list_all::<Receiver>().await {
        Ok(r) => r,
        Err(e) => return tracing::error!("alert receivers not read: {e}"),
    };
    for r in receivers {
        if alertmanager_only && !matches!(r.channel, ReceiverKind::Alertmanager { .. }) {
            continue;
        }
        for n in &notes {
            if let Some(n) = for_receiver(&r, n) {
                tokio::spawn(deliver(ctx.clone(), r.clone(), n));
            }
        }
    }
}

/// Sends with retries; dead-letters after the last attempt.
async fn deliver(ctx: Context, r: Receiver, n: Notification) {
    let mut wait = Duration::from_millis(r.backoff_ms);
    let mut error = String::new();
    for attempt in 1..=r.max_attempts {
        match send(&r, &n).await {
            Ok(()) => {
                tracing::info!(receiver = %r.id, group = %n.group, status = %n.status, attempt, "notified");
                return;
            }
            Err(e) => {
                tracing::warn!(receiver = %r.id, attempt, "notification failed: {e}");
                error = e;
            }
        }
        if attempt < r.max_attempts {
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(3600));
        }
    }
    let d = DeadLetter {
        id: format!("dl-{}-{}", now_ms(), hex::encode(rand::random::<[u8; 4]>())),
        receiver: r.id.clone(),
        at_ms: now_ms(),
        attempts: r.max_attempts,
        error,
        notification: n,
    };
    if let Err(e) = ctx.store.create(&d).await {
        tracing::error!(receiver = %r.id, "dead letter not stored: {e}");
    }
}

fn client(base: &str) -> Result<nova_http::Client, String> {
    let opts = nova_http::ClientOptions {
        timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(5),
        ca_file: None,
    };
    nova_http::Client::new(base, None, &opts).map_err(|e| e.to_string())
}

async fn post(url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Result<(), String> {
    let (base, path) = split_url(url).ok_or_else(|| format!("{url}: not an http(s) URL"))?;
    let (status, answer) = client(&base)?
        .send_raw(Method::POST, &path, "application/json", body, headers)
        .await
        .map_err(|e| e.to_string())?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        Err(format!("{url} answered {status}: {text}"))
    }
}

/// RFC 3339 of `ms` since the epoch.
fn rfc3339(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// An alert as Alertmanager takes it.
pub fn to_alertmanager(a: &Alert) -> AlertmanagerAlert {
    AlertmanagerAlert {
        labels: [
            ("alertname", a.rule.as_str()),
            ("target", a.target.as_str()),
            ("metric", a.metric.as_str()),
            ("severity", a.severity.as_str()),
            ("tenant", a.tenant.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        annotations: [
            ("summary".to_string(), a.summary.clone()),
            ("value".to_string(), format!("{}", a.value)),
        ]
        .into_iter()
        .collect(),
        starts_at: rfc3339(a.fired_ms.unwrap_or(a.since_ms)),
        ends_at: a.resolved_ms.map(rfc3339),
        generator_url: String::new(),
    }
}

/// The mail of a notification: a subject line and one paragraph per alert.
pub fn mail_text(n: &Notification) -> (String, String) {
    let subject = format!(
        "[{}] {} ({} alert{})",
        n.status.to_uppercase(),
        n.group,
        n.alerts.len(),
        if n.alerts.len() == 1 { "" } else { "s" }
    );
    let mut body = String::new();
    for a in &n.alerts {
        body.push_str(&format!(
            "{} on {}: {}\n  severity {}, value {}, metric {}, since {}\n\n",
            a.rule,
            a.target,
            a.summary,
            a.severity,
            a.value,
            a.metric,
            rfc3339(a.since_ms)
        ));
    }
    (subject, body)
}

/// One attempt at sending `n` to `r`.
async fn send(r: &Receiver, n: &Notification) -> Result<(), String> {
    match &r.channel {
        ReceiverKind::Webhook { url, secret } => {
            let body = serde_json::to_vec(n).map_err(|e| e.to_string())?;
            let sig = signature(secret, &body);
            post(url, body, &[(SIGNATURE_HEADER, &sig)]).await
        }
        ReceiverKind::Alertmanager { url } => {
            let alerts: Vec<AlertmanagerAlert> = n.alerts.iter().map(to_alertmanager).collect();
            let body = serde_json::to_vec(&alerts).map_err(|e| e.to_string())?;
            post(
                &format!("{}/api/v2/alerts", url.trim_end_matches('/')),
                body,
                &[],
            )
            .await
        }
        ReceiverKind::Email { smtp, from, to } => {
            let (host, port) =
                split_host_port(smtp).ok_or_else(|| format!("{smtp}: not host:port"))?;
            let (subject, text) = mail_text(n);
            let mut m = Message::builder().from(mailbox(from)?).subject(subject);
            for a in to {
                m = m.to(mailbox(a)?);
            }
            let msg = m.body(text).map_err(|e| e.to_string())?;
            // Plain SMTP to a relay the operator names (a local MTA, a smarthost).
            let t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(port)
                .timeout(Some(Duration::from_secs(10)))
                .build();
            t.send(msg).await.map(|_| ()).map_err(|e| e.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_split_into_base_and_path_and_bad_ones_are_refused() {
        assert_eq!(
            split_url("http://127.0.0.1:9/hook?x=1"),
            Some(("http://127.0.0.1:9".into(), "/hook?x=1".into()))
        );
        assert_eq!(
            split_url("https://am.example"),
            Some(("https://am.example".into(), "/".into()))
        );
        for bad in ["ftp://x/", "http://", "http://u@h/", "http://h/ x"] {
            assert_eq!(split_url(bad), None, "{bad}");
        }
        assert_eq!(
            split_host_port("127.0.0.1:25"),
            Some(("127.0.0.1".into(), 25))
        );
        assert_eq!(split_host_port("smtp"), None);
        assert_eq!(split_host_port("h:0"), None);
    }
}
