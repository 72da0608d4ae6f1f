//! The error contract of every NovaCron API: the body of an error answer, and a
//! request value that is wrong with the field it came from.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A request value that is wrong, and the field it came from (`disks[1].size_mib`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize, ToSchema)]
#[error("{field}: {problem}")]
pub struct FieldError {
    pub field: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same error one level down: `disks[0]` + `size_mib` -> `disks[0].size_mib`.
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_string()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Every error answer: `{"error": "...", "field": "..."}` (`field` only for bad input).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        ErrorBody {
            error: error.into(),
            field: None,
        }
    }

    /// Reads an error answer's body: ours, or whatever text a proxy put there.
    pub fn from_answer(bytes: &[u8]) -> Self {
        serde_json::from_slice(bytes).unwrap_or_else(|_| {
            ErrorBody::new(
                String::from_utf8_lossy(bytes)
                    .trim()
                    .chars()
                    .take(500)
                    .collect::<String>(),
            )
        })
    }
}

impl From<FieldError> for ErrorBody {
    fn from(e: FieldError) -> Self {
        ErrorBody {
            error: e.to_string(),
            field: Some(e.field),
        }
    }
}
