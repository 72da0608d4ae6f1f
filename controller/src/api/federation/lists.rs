//! `?scope=federation` on `GET /v1/vms`, `/v1/hosts`, `/v1/alerts` and
//! `/v1/capacity`: this cluster's items and every peer's, asked in parallel as the
//! caller, with which clusters answered.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::value::RawValue;

use super::super::error::ApiQuery;
use super::super::{must_be_cluster, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::federation::view::{self, Speaker};
use crate::federation::{self as fed, Presenter};
use crate::model::{now_ms, Alert, ClusterAnswer, Host, ScopeQuery};
use crate::store::{Objects, StoreError};

/// The lists that answer `?scope=federation`.
const SCOPED: &[&str] = &["/v1/vms", "/v1/hosts", "/v1/alerts", "/v1/capacity"];

/// `GET <list>?scope=federation`: this cluster's items and every peer's (asked in
/// parallel as the caller, each within `timeout_ms`), and which clusters answered.
/// Other requests pass on untouched.
pub async fn scope(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let scoped = req.method() == Method::GET
        && SCOPED.contains(&path)
        && form_urlencoded::parse(req.uri().query().unwrap_or_default().as_bytes())
            .any(|(k, _)| k == "scope");
    if !scoped {
        return next.run(req).await;
    }
    let path = path.to_string();
    let (mut parts, _) = req.into_parts();
    let q = match ApiQuery::<ScopeQuery>::from_request_parts(&mut parts, &()).await {
        Ok(ApiQuery(q)) => q,
        Err(e) => return e.into_response(),
    };
    let Some(c) = parts.extensions.get::<Caller>().cloned() else {
        return ApiError::new(StatusCode::UNAUTHORIZED, "no caller").into_response();
    };
    let presenter = parts.extensions.get::<Presenter>().cloned();
    match federated_list(&st, &c, presenter, &path, &q).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn federated_list(
    st: &AppState,
    c: &Caller,
    presenter: Option<Presenter>,
    path: &str,
    q: &ScopeQuery,
) -> ApiResult<Response> {
    if q.scope.as_deref() != Some("federation") {
        return Err(nova_http::FieldError::new("scope", "the only scope is `federation`").into());
    }
    let timeout = q.timeout_ms.unwrap_or(2000);
    if !(10..=30_000).contains(&timeout) {
        return Err(nova_http::FieldError::new("timeout_ms", "must be 10 to 30000").into());
    }
    let timeout = Duration::from_millis(timeout);
    // A peer's user sees this cluster only: federation does not chain.
    let fan_out = matches!(presenter, None | Some(Presenter::Local(_)));
    let ctx = &st.ctx;
    Ok(match path {
        "/v1/vms" => {
            let mine = async {
                let all = st.vm_json.list(&ctx.store).await?;
                Ok(all
                    .into_iter()
                    .filter(|v| c.sees(&v.tenant))
                    .map(|v| v.json)
                    .collect())
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
        "/v1/hosts" => {
            must_be_cluster(c, false)?;
            let mine = async {
                let all = ctx.store.list_all::<Host>().await?;
                each_encoded(all.into_iter().map(|mut h: Host| {
                    h.hostd_token.clear();
                    h
                }))
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
        "/v1/alerts" => {
            let mine = async {
                let all = ctx.store.list_all::<Alert>().await?;
                each_encoded(all.into_iter().filter(|a| c.sees(&a.tenant)))
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
        _ => {
            must_be_cluster(c, false)?;
            let mine = async {
                let now_s = now_ms() / 1000;
                let cap =
                    crate::monitoring::capacity::capacity(ctx, 1, 512, 7 * 86_400, now_s).await?;
                each_encoded([cap])
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
    })
}

/// This cluster's items (`mine`, read while the peers are asked) and each peer's own
/// items of the list at `path`, as one federated list. A peer is asked the same
/// federated question as its user (one request, one body: a peer's user sees that
/// cluster only, so it does not fan out). Its answer is checked, not decoded into
/// values: every item must be exactly `{"cluster": <that peer's id>, "item": {..}}`
/// (a peer speaks for itself only), or the peer counts as not answering; then its
/// items go into this answer as the bytes they came as.
async fn gather(
    st: &AppState,
    c: &Caller,
    fan_out: bool,
    timeout: Duration,
    path: &str,
    mine: impl std::future::Future<Output = crate::error::Result<Vec<Arc<[u8]>>>>,
) -> ApiResult<Response> {
    let me = fed::local(&st.ctx).await?;
    let peers = if fan_out {
        fed::peers(&st.ctx).await?
    } else {
        Vec::new()
    };
    let asked = view::ask_all(
        &st.federation,
        &me,
        peers,
        Speaker::User(c),
        timeout,
        // Each answer is checked as it arrives, while the others are awaited.
        |cl| async move { Ok(PeerItems::check(cl.federated_body(path).await?)) },
    );
    // The peers' requests go out first; this cluster's list is read meanwhile.
    let (answers, mine) = tokio::join!(asked, mine);
    let mine = mine?;
    let mut clusters = vec![ClusterAnswer {
        cluster_id: me.cluster_id.clone(),
        name: me.name.clone(),
        answered: true,
        error: None,
        items: mine.len() as u64,
        took_ms: 0,
    }];
    let mut out = ListWriter::new();
    let located = located_prefix(&me.cluster_id);
    for json in &mine {
        out.item(&located, json);
    }
    for a in answers {
        let view::PeerAnswer {
            peer,
            answer,
            took_ms,
        } = a;
        let checked = answer.and_then(|checked| checked?.all_of(&peer.cluster_id));
        let a = view::PeerAnswer {
            answer: checked,
            peer,
            took_ms,
        };
        let n = a.answer.as_ref().map_or(0, |p| p.count as u64);
        clusters.push(a.status(n));
        if let Ok(p) = &a.answer {
            out.items(p.items());
        }
    }
    let partial = clusters.iter().any(|c| !c.answered);
    out.finish(&clusters, partial)
}

/// Each item's API JSON.
fn each_encoded<T: serde::Serialize>(
    items: impl IntoIterator<Item = T>,
) -> crate::error::Result<Vec<Arc<[u8]>>> {
    items
        .into_iter()
        .map(|i| {
            serde_json::to_vec(&i).map(Into::into).map_err(|e| {
                crate::error::Error::Store(StoreError::Codec("an item".into(), e.to_string()))
            })
        })
        .collect()
}

/// `{"cluster":"<id>","item":`: what each of a cluster's items starts with.
fn located_prefix(cluster_id: &str) -> Vec<u8> {
    let mut p = b"{\"cluster\":".to_vec();
    // A string always encodes.
    p.extend(serde_json::to_vec(cluster_id).unwrap_or_default());
    p.extend(b",\"item\":");
    p
}

/// A federated list's body, written as its parts come: items first, then how each
/// cluster answered (the shape of [`crate::model::FederatedList`]).
struct ListWriter {
    body: Vec<u8>,
    any: bool,
}

impl ListWriter {
    fn new() -> ListWriter {
        let mut body = Vec::with_capacity(64 << 10);
        body.extend(b"{\"items\":[");
        ListWriter { body, any: false }
    }

    fn comma(&mut self) {
        if self.any {
            self.body.push(b',');
        }
        self.any = true;
    }

    /// One item: `located` (see [`located_prefix`]), the item's JSON, `}`.
    fn item(&mut self, located: &[u8], json: &[u8]) {
        self.comma();
        self.body.extend(located);
        self.body.extend(json);
        self.body.push(b'}');
    }

    /// Items already located, comma-separated (a peer's, checked).
    fn items(&mut self, items: &[u8]) {
        if items.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        self.comma();
        self.body.extend(items);
    }

    fn finish(mut self, clusters: &[ClusterAnswer], partial: bool) -> ApiResult<Response> {
        self.body.extend(b"],\"clusters\":");
        serde_json::to_writer(&mut self.body, clusters)
            .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        self.body
            .extend(format!(",\"partial\":{partial}}}").as_bytes());
        Ok((
            [(
                axum::http::header::CONTENT_TYPE,
                axum::http::HeaderValue::from_static("application/json"),
            )],
            self.body,
        )
            .into_response())
    }
}

/// A peer's items, checked: the inside of its answer's `items` array (a range of its
/// body), how many there are, and the clusters they name.
struct PeerItems {
    body: nova_http::Bytes,
    range: std::ops::Range<usize>,
    count: usize,
    clusters: Vec<String>,
}

impl PeerItems {
    /// Checks a peer's federated answer: a JSON object whose `items` are each exactly
    /// `{"cluster": "<id>", "item": {...}}`. Why not, when it is not.
    fn check(body: nova_http::Bytes) -> Result<PeerItems, String> {
        #[derive(serde::Deserialize)]
        struct Answer<'a> {
            #[serde(borrow)]
            items: &'a RawValue,
        }
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PeerItem<'a> {
            #[serde(borrow)]
            cluster: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            item: &'a RawValue,
        }
        let answer: Answer = serde_json::from_slice(&body)
            .map_err(|e| format!("its answer is not a federated list: {e}"))?;
        let raw = answer.items.get();
        let items: Vec<PeerItem> = serde_json::from_str(raw)
            .map_err(|e| format!("its items are not located items: {e}"))?;
        let mut clusters: Vec<String> = Vec::new();
        for (i, it) in items.iter().enumerate() {
            if !it.item.get().starts_with('{') {
                return Err(format!("item {i} of its answer is not a JSON object"));
            }
            if !clusters.iter().any(|c| *c == it.cluster) {
                clusters.push(it.cluster.to_string());
            }
        }
        // `raw` is `[...]` inside `body`: what is between the brackets goes on.
        let at = raw.as_ptr() as usize - body.as_ptr() as usize;
        Ok(PeerItems {
            range: at + 1..at + raw.len() - 1,
            count: items.len(),
            clusters,
            body,
        })
    }

    /// These items if they are all of cluster `id` (a peer speaks for itself only).
    fn all_of(self, id: &str) -> Result<PeerItems, String> {
        match self.clusters.iter().find(|c| *c != id) {
            Some(other) => Err(format!(
                "its answer has items of cluster {other:?}, not of the peer itself"
            )),
            None => Ok(self),
        }
    }

    fn items(&self) -> &[u8] {
        &self.body[self.range.clone()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str) -> Result<PeerItems, String> {
        PeerItems::check(nova_http::Bytes::copy_from_slice(body.as_bytes()))
    }

    #[test]
    fn a_peers_items_pass_on_as_they_came_when_they_are_its_own_objects() {
        let body = r#"{"items": [ {"cluster":"b","item":{"id":"x"}} ,{"item":{"id":"y"},"cluster":"b"}],
            "clusters":[],"partial":false}"#;
        let p = check(body).unwrap().all_of("b").unwrap();
        assert_eq!(p.count, 2);
        assert_eq!(
            std::str::from_utf8(p.items()).unwrap(),
            r#" {"cluster":"b","item":{"id":"x"}} ,{"item":{"id":"y"},"cluster":"b"}"#
        );
        let empty = check(r#"{"items":[],"clusters":[],"partial":false}"#).unwrap();
        assert_eq!((empty.count, empty.items()), (0, &b""[..]));
    }

    #[test]
    fn a_peer_answering_for_another_cluster_or_with_odd_items_is_refused_with_why() {
        let other = r#"{"items":[{"cluster":"b","item":{}},{"cluster":"c","item":{}}]}"#;
        let e = check(other).unwrap().all_of("b").err().unwrap();
        assert!(e.contains("\"c\""), "{e}");
        for (body, why) in [
            (
                r#"{"items":[{"cluster":"b","item":[1]}]}"#,
                "not a JSON object",
            ),
            (
                r#"{"items":[{"cluster":"b","item":{},"x":1}]}"#,
                "not located items",
            ),
            (r#"{"items":[{"item":{}}]}"#, "not located items"),
            (r#"{"items":{}}"#, "not located items"),
            (r#"[1,2]"#, "not a federated list"),
            (
                r#"{"items":[{"cluster":"b","item":{}}"#,
                "not a federated list",
            ),
        ] {
            let e = check(body).err().unwrap_or_else(|| panic!("{body} passed"));
            assert!(e.contains(why), "{body}: {e}");
        }
    }
}
