//! How the domain's errors and bad request bodies become answers: the status of each
//! error kind and the contract's `ErrorBody` (`{"error", "field"}`), and the JSON
//! body extractor that names the field a bad body got wrong.

use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use nova_hostd_api::{ErrorBody, FieldError};
use serde::de::DeserializeOwned;

use crate::error::Error;

/// Largest JSON request body.
const MAX_JSON: usize = 1 << 20;

/// The status an error answers with.
pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Invalid(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Conflict(_) | Error::NoCapacity(_) => StatusCode::CONFLICT,
        Error::Vmm(_) | Error::Peer(_) => StatusCode::BAD_GATEWAY,
        Error::Net(_) | Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A handler's error.
pub struct ApiError(pub Error);

impl<E: Into<Error>> From<E> for ApiError {
    fn from(e: E) -> Self {
        ApiError(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self.0);
        if status.is_server_error() {
            tracing::warn!("{}", self.0);
        }
        let body = match self.0 {
            Error::Invalid(f) => ErrorBody::from(f),
            e => ErrorBody::new(e.to_string()),
        };
        (status, Json(body)).into_response()
    }
}

/// A handler's result.
pub type ApiResult<T> = Result<T, ApiError>;

/// A JSON body whose errors name the field (`disks[0].size_mib`, or the unknown one).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned, St: Send + Sync> FromRequest<St> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _: &St) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), MAX_JSON)
            .await
            .map_err(|_| {
                FieldError::new(
                    "body",
                    format!("unreadable or larger than {MAX_JSON} bytes"),
                )
            })?;
        parse_json(&bytes).map(JsonBody).map_err(ApiError::from)
    }
}

/// Parses `bytes` as `T`, naming the failing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, FieldError> {
    // Every request body is an object (serde would also take a struct as an array).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(FieldError::new("body", "must be a JSON object"));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let msg = e.into_inner().to_string();
        // An unknown field's path already ends with its name; a missing field's
        // path is its parent's.
        let field = if let Some(rest) = msg.strip_prefix("missing field `") {
            let name = rest.split('`').next().unwrap_or("");
            if path == "." {
                name.to_string()
            } else {
                format!("{path}.{name}")
            }
        } else if path == "." {
            "body".to_string()
        } else {
            path
        };
        FieldError::new(field, msg)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_hostd_api::{MigrateRequest, VmSpec};

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<VmSpec>(br#"{"name":"a","kernel":"/k","cpus":1}"#).unwrap_err();
        assert_eq!(e.field, "cpus");
        let e =
            parse_json::<VmSpec>(br#"{"name":"a","kernel":"/k","disks":[{"size_mib":1,"x":2}]}"#)
                .unwrap_err();
        assert_eq!(e.field, "disks[0].x");
        let e = parse_json::<VmSpec>(br#"{"name":"a"}"#).unwrap_err();
        assert_eq!(e.field, "kernel");
        let e = parse_json::<VmSpec>(br#"{"name":"a","kernel":"/k","vcpus":-1}"#).unwrap_err();
        assert_eq!(e.field, "vcpus");
        let e = parse_json::<VmSpec>(b"not json").unwrap_err();
        assert_eq!(e.field, "body");
        let e = parse_json::<MigrateRequest>(
            br#"{"to":{"url":"http://x:1","token":"t"},"params":{"mode":"teleport"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.field, "params.mode");
    }

    #[test]
    fn every_error_kind_has_its_status() {
        assert_eq!(status_of(&FieldError::new("a", "b").into()), 400);
        assert_eq!(status_of(&Error::NotFound("x".into())), 404);
        assert_eq!(status_of(&Error::NoCapacity("x".into())), 409);
        assert_eq!(status_of(&Error::Peer("x".into())), 502);
        assert_eq!(status_of(&Error::Net("x".into())), 500);
    }
}
