//! API errors, answered as Kubernetes `Status` objects because kubectl branches on their `code`
//! and `reason` (404 turns an apply into a create, 409 Conflict asks the user to retry).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// What went wrong with one API request; each variant maps to the HTTP code and `reason` a real
/// API server would send, so clients take the same branch they would against a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The object (or its namespace) does not exist.
    #[error("{resource} \"{name}\" not found")]
    NotFound {
        /// Group-qualified plural, e.g. `configmaps` or `widgets.example.com`.
        resource: String,
        /// The missing object's name.
        name: String,
    },
    /// A create for a name that is taken.
    #[error("{resource} \"{name}\" already exists")]
    AlreadyExists {
        /// Group-qualified plural.
        resource: String,
        /// The taken name.
        name: String,
    },
    /// Optimistic concurrency failed: the client's resourceVersion is stale.
    #[error(
        "Operation cannot be fulfilled on {resource} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
    )]
    Conflict {
        /// Group-qualified plural.
        resource: String,
        /// The object's name.
        name: String,
    },
    /// A server-side apply would take fields another manager owns (`force=false`).
    #[error("{0}")]
    ApplyConflict(String),
    /// The object fails validation (schema, required names).
    #[error("{kind} \"{name}\" is invalid: {field}: {detail}")]
    Invalid {
        /// Kind, group-qualified for custom resources (`Widget.example.com`).
        kind: String,
        /// The object's name.
        name: String,
        /// JSON path of the offending field, e.g. `spec.replicas`.
        field: String,
        /// What is wrong with it.
        detail: String,
    },
    /// The body's media type is not accepted here (strategic merge on a custom resource).
    #[error("the body of the request was in an unknown format - accepted media types include: {0}")]
    UnsupportedMediaType(String),
    /// The request itself is malformed (bad JSON, bad patch, bad selector).
    #[error("{0}")]
    BadRequest(String),
    /// The verb is not served on this path.
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    /// A watch asked for history older than the server keeps.
    #[error("too old resource version: {0}")]
    Gone(u64),
    /// The bearer token is missing or wrong.
    #[error("Unauthorized")]
    Unauthorized,
    /// RBAC denies the request (see [`super::rbac::forbidden`] for the wording).
    #[error("{message}")]
    Forbidden {
        /// The whole message, as the apiserver words it.
        message: String,
        /// API group of the resource, empty for the core group or a non-resource URL.
        group: String,
        /// Resource plural, empty for a non-resource URL.
        resource: String,
        /// Object name, empty for collections.
        name: String,
    },
}

impl ApiError {
    /// The HTTP status code clients branch on.
    pub fn code(&self) -> StatusCode {
        match self {
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::AlreadyExists { .. }
            | ApiError::Conflict { .. }
            | ApiError::ApplyConflict(_) => StatusCode::CONFLICT,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
        }
    }

    fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict(_) => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::Gone(_) => "Expired",
            ApiError::Unauthorized => "Unauthorized",
            ApiError::Forbidden { .. } => "Forbidden",
        }
    }

    /// The `Status` object a real API server sends for this error.
    pub fn status(&self) -> Value {
        let mut details = json!({});
        match self {
            ApiError::NotFound { resource, name }
            | ApiError::AlreadyExists { resource, name }
            | ApiError::Conflict { resource, name } => {
                let (kind, group) = resource.split_once('.').unwrap_or((resource, ""));
                details = json!({"name": name, "group": group, "kind": kind});
            }
            ApiError::Invalid {
                kind,
                name,
                field,
                detail,
            } => {
                let (k, group) = kind.split_once('.').unwrap_or((kind, ""));
                details = json!({"name": name, "group": group, "kind": k, "causes": [
                    {"reason": "FieldValueInvalid", "message": format!("{field}: {detail}"), "field": field}
                ]});
            }
            ApiError::Forbidden {
                group,
                resource,
                name,
                ..
            } => {
                // Empty fields are left out, as Go's `omitempty` leaves them out.
                for (field, value) in [("group", group), ("kind", resource), ("name", name)] {
                    if !value.is_empty() {
                        details[field] = json!(value);
                    }
                }
            }
            _ => {}
        }
        json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "details": details,
            "code": self.code().as_u16(),
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.code(), axum::Json(self.status())).into_response()
    }
}
