//! The API's answers to what went wrong: `{"error": "...", "field": "..."}` with a
//! status that says what kind of wrong (domain errors mapped here, and only here), and
//! the extractors whose failures answer the same way: a JSON body whose errors name
//! the field, `If-Match`, query strings.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nova_http::{ErrorBody, FieldError};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::Error;
use crate::model::IF_MATCH;
use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub error: String,
    pub field: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            field: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, format!("{what} not found"))
    }
    pub fn forbidden(why: &str) -> Self {
        Self::new(StatusCode::FORBIDDEN, why)
    }
    /// Names the field an error is about.
    pub fn with_field(mut self, f: &str) -> Self {
        self.field = Some(f.into());
        self
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: e.to_string(),
            field: Some(e.field),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Error::from(e).into()
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(what) => ApiError::not_found(what),
            Error::Invalid(f) => f.into(),
            Error::Conflict { message, field } => ApiError {
                status: StatusCode::CONFLICT,
                error: message,
                field,
            },
            Error::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, why),
            Error::Unauthorized(why) => ApiError::new(StatusCode::UNAUTHORIZED, why),
            Error::Stale { .. } => {
                ApiError::new(StatusCode::PRECONDITION_FAILED, e.to_string()).with_field(IF_MATCH)
            }
            Error::Store(StoreError::Conflict(_)) => {
                ApiError::new(StatusCode::CONFLICT, e.to_string())
            }
            Error::Store(StoreError::NotFound(_)) => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            Error::Store(_) => {
                tracing::error!("store: {e}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            Error::Hostd(ref h) if h.is_not_found() => {
                ApiError::new(StatusCode::NOT_FOUND, e.to_string())
            }
            Error::Hostd(_) => ApiError::new(StatusCode::BAD_GATEWAY, e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.error,
            field: self.field,
        };
        (self.status, Json(body)).into_response()
    }
}

/// Handler result.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose errors name the field (`spec.vcpus: invalid type ...`); an empty
/// body reads as `{}` where `T` allows it.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body, an object; the error names the field (`spec.vcpus: invalid
/// type ...`).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would read a struct from an array too; every body here is an object.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(nova_http::FieldError::new("body", "must be a JSON object").into());
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let inner = e.inner().to_string();
        let mut field = e.path().to_string();
        // "missing field `name`": the field is in the message, its parent in the path.
        // (The path of an unknown field already ends with it.)
        if let Some(name) = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            field = if field == "." {
                name.to_string()
            } else {
                format!("{field}.{name}")
            };
        }
        if field == "." {
            field = "body".into();
        }
        ApiError {
            status: StatusCode::BAD_REQUEST,
            error: format!("{field}: {inner}"),
            field: Some(field),
        }
    })
}

/// A body that may be empty (then `T::default()`).
pub fn parse_optional_json<T: DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_json(bytes)
    }
}

/// A query string whose errors name the parameter (`limit: invalid digit ...`).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let q = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(q.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let inner = e.inner().to_string();
                let mut field = e.path().to_string();
                // An unknown parameter is named in the message, not the path.
                if let Some(name) = inner
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                {
                    field = name.to_string();
                }
                if field == "." {
                    field = "query".into();
                }
                ApiError::new(StatusCode::BAD_REQUEST, format!("{field}: {inner}"))
                    .with_field(&field)
            })
    }
}

/// `If-Match: "<revision>"` (or bare digits; `*` is no condition).
pub struct IfMatch(pub Option<u64>);

impl<S: Send + Sync> FromRequestParts<S> for IfMatch {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(v) = parts.headers.get(IF_MATCH) else {
            return Ok(IfMatch(None));
        };
        let bad = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "If-Match: must be the object's revision (\"12\")",
            )
            .with_field(IF_MATCH)
        };
        let s = v.to_str().map_err(|_| bad())?.trim();
        if s == "*" {
            return Ok(IfMatch(None));
        }
        let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
        s.parse::<u64>()
            .map(|r| IfMatch(Some(r)))
            .map_err(|_| bad())
    }
}

/// JSON with a status, and the object's revision as its `ETag`.
pub fn answer<T: Serialize>(status: StatusCode, revision: Option<u64>, v: T) -> Response {
    let mut r = (status, Json(v)).into_response();
    if let Some(rev) = revision.filter(|&r| r > 0) {
        if let Ok(h) = format!("\"{rev}\"").parse() {
            r.headers_mut().insert(axum::http::header::ETAG, h);
        }
    }
    r
}
