//! `?scope=federation` on `GET /v1/vms`, `/v1/hosts`, `/v1/alerts` and
//! `/v1/capacity`: this cluster's items and every peer's, asked in parallel as the
//! caller, with which clusters answered.

use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::value::RawValue;

use super::super::error::ApiQuery;
use super::super::{must_be_cluster, ApiError, ApiResult, AppState};
use crate::auth::Caller;
use crate::federation::view::{self, Speaker};
use crate::federation::{self as fed, Presenter};
use crate::model::{now_ms, Alert, ClusterAnswer, FederatedList, Host, Located, ScopeQuery, Vm};
use crate::store::Objects;

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
                let all = ctx.store.list_all::<Vm>().await?;
                Ok(all.into_iter().filter(|v| c.sees(&v.tenant)).collect())
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
        "/v1/hosts" => {
            must_be_cluster(c, false)?;
            let mine = async {
                let all = ctx.store.list_all::<Host>().await?;
                Ok(all
                    .into_iter()
                    .map(|mut h: Host| {
                        h.hostd_token.clear();
                        h
                    })
                    .collect())
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
        "/v1/alerts" => {
            let mine = async {
                let all = ctx.store.list_all::<Alert>().await?;
                Ok(all.into_iter().filter(|a| c.sees(&a.tenant)).collect())
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
        _ => {
            must_be_cluster(c, false)?;
            let mine = async {
                let now_s = now_ms() / 1000;
                let cap =
                    crate::monitoring::capacity::capacity(ctx, 1, 512, 7 * 86_400, now_s).await?;
                Ok(vec![cap])
            };
            gather(st, c, fan_out, timeout, path, mine).await?
        }
    })
}

/// An item of a federated answer: this cluster's, typed, or a peer's JSON object as
/// it came (checked to be one, and passed on without being decoded and encoded
/// again: the caller's client decodes it, once).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Item<T> {
    Mine(T),
    Peer(Box<RawValue>),
}

/// This cluster's items (`mine`, read while the peers are asked) and each peer's own
/// items of the list at `path`, as one federated list. A peer is asked the same federated question as its user (one
/// request, one body: a peer's user sees that cluster only, so it does not fan
/// out); its items are passed on as JSON objects, and its answer's cluster names
/// are replaced by the peer's id (a peer speaks for itself only). A peer whose
/// items are not all JSON objects counts as not answering.
async fn gather<T>(
    st: &AppState,
    c: &Caller,
    fan_out: bool,
    timeout: Duration,
    path: &str,
    mine: impl std::future::Future<Output = crate::error::Result<Vec<T>>>,
) -> ApiResult<Response>
where
    T: serde::Serialize,
{
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
        |cl| async move {
            cl.federated::<Box<RawValue>>(path, None)
                .await
                .map(|l| l.items)
        },
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
    let mut items: Vec<Located<Item<T>>> = mine
        .into_iter()
        .map(|item| Located {
            cluster: me.cluster_id.clone(),
            item: Item::Mine(item),
        })
        .collect();
    for mut a in answers {
        if let Ok(v) = &a.answer {
            if let Some(i) = v.iter().position(|l| !l.item.get().starts_with('{')) {
                a.answer = Err(format!("item {i} of its answer is not a JSON object"));
            }
        }
        let n = a.answer.as_ref().map(|v| v.len() as u64).unwrap_or(0);
        clusters.push(a.status(n));
        if let Ok(v) = a.answer {
            let id = a.peer.cluster_id.clone();
            items.extend(v.into_iter().map(|l| Located {
                cluster: id.clone(),
                item: Item::Peer(l.item),
            }));
        }
    }
    let partial = clusters.iter().any(|c| !c.answered);
    Ok(Json(FederatedList {
        items,
        clusters,
        partial,
    })
    .into_response())
}
