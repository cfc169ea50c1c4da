//! The one place where failures become HTTP answers: `{"error": {"code", "message"}}` with
//! the right status. Internal details are logged, never sent to the client.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use opsloop_store::StoreError;
use serde::Serialize;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// A stable machine-readable code, e.g. `not_found`, `forbidden`, `invalid_body`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into() }
    }
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "authentication required: send `Authorization: Bearer <token>` or sign in",
        )
    }
    /// A bearer token was sent and refused: saying "authentication required" would send the
    /// user looking for a missing header.
    pub fn rejected_token() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this token was rejected (revoked, expired or unknown): create a new one with `opsloop admin token create`",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_value", message)
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; the server log has details")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound { what } => ApiError::not_found(what),
            StoreError::Conflict(message) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            StoreError::LastOwner => {
                ApiError::new(StatusCode::CONFLICT, "last_owner", StoreError::LastOwner.to_string())
            }
            other => {
                tracing::error!(error = %other, "store failure");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::state::Unavailable> for ApiError {
    fn from(error: crate::state::Unavailable) -> Self {
        tracing::error!(%error, "a part of the server is not available");
        ApiError::internal()
    }
}

impl From<crate::deploy::DeployError> for ApiError {
    fn from(error: crate::deploy::DeployError) -> Self {
        use crate::deploy::DeployError;
        match error {
            DeployError::Invalid(message) => ApiError::invalid(message),
            DeployError::Forbidden(message) => ApiError::forbidden(message),
            DeployError::NotFound { what } => ApiError::not_found(what),
            DeployError::ReleaseUnavailable(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "release_unavailable", message)
            }
            DeployError::Frozen(message) => ApiError::new(StatusCode::CONFLICT, "frozen", message),
            DeployError::NotWaiting(message) => ApiError::new(StatusCode::CONFLICT, "not_waiting", message),
            DeployError::Store(error) => error.into(),
            DeployError::Unavailable(error) => error.into(),
            DeployError::OnStop(error) => error.into(),
            DeployError::Internal(message) => {
                tracing::error!(error = %message, "a deployment failed inside opsloop");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::alerting::AlertingError> for ApiError {
    fn from(error: crate::alerting::AlertingError) -> Self {
        use crate::alerting::AlertingError;
        match error {
            AlertingError::Invalid(message) => ApiError::invalid(message),
            AlertingError::Forbidden(message) => ApiError::forbidden(message),
            AlertingError::NotFound { what } => ApiError::not_found(what),
            AlertingError::NotFoundNamed(message) => ApiError::new(StatusCode::NOT_FOUND, "not_found", message),
            AlertingError::WrongStatus(message) => ApiError::new(StatusCode::CONFLICT, "wrong_status", message),
            AlertingError::Store(error) => error.into(),
        }
    }
}

impl From<crate::ci::CiError> for ApiError {
    fn from(error: crate::ci::CiError) -> Self {
        use crate::ci::CiError;
        match error {
            CiError::NotFound { what } => ApiError::not_found(what),
            CiError::WrongStatus(message) => ApiError::new(StatusCode::CONFLICT, "wrong_status", message),
            CiError::PipelineRunning(message) => ApiError::new(StatusCode::CONFLICT, "pipeline_running", message),
            CiError::Store(error) => error.into(),
            CiError::Unavailable(error) => error.into(),
            CiError::Internal(message) => {
                tracing::error!(error = %message, "a pipeline request failed inside opsloop");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::accounts::AccountError> for ApiError {
    fn from(error: crate::accounts::AccountError) -> Self {
        use crate::accounts::AccountError;
        match error {
            AccountError::Invalid(message) => ApiError::invalid(message),
            AccountError::Forbidden(message) => ApiError::forbidden(message),
            AccountError::Name(error) => error.into(),
            AccountError::WeakPassword(error) => error.into(),
            AccountError::Store(error) => error.into(),
            AccountError::Credentials(error) => {
                tracing::error!(%error, "credential generation failed");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::agents::AgentError> for ApiError {
    fn from(error: crate::agents::AgentError) -> Self {
        use crate::agents::AgentError;
        match error {
            AgentError::Invalid(message) => ApiError::invalid(message),
            AgentError::Gone => ApiError::new(StatusCode::GONE, "job_gone", AgentError::Gone.to_string()),
            AgentError::NotFound { what } => ApiError::not_found(what),
            AgentError::Store(error) => error.into(),
            AgentError::Unavailable(error) => error.into(),
            AgentError::Internal(message) => {
                tracing::error!(error = %message, "an agent request failed inside opsloop");
                ApiError::internal()
            }
        }
    }
}

impl From<crate::views::InvalidField> for ApiError {
    fn from(error: crate::views::InvalidField) -> Self {
        ApiError::invalid(error.to_string())
    }
}

impl From<crate::auth::credentials::WeakPassword> for ApiError {
    fn from(error: crate::auth::credentials::WeakPassword) -> Self {
        ApiError::invalid(error.to_string())
    }
}

impl From<crate::schedules::ScheduleError> for ApiError {
    fn from(error: crate::schedules::ScheduleError) -> Self {
        ApiError::invalid(error.to_string())
    }
}

impl From<opsloop_core::NameError> for ApiError {
    fn from(error: opsloop_core::NameError) -> Self {
        ApiError::invalid(error.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let (code, status) = match &rejection {
            JsonRejection::JsonDataError(_) => ("invalid_body", StatusCode::UNPROCESSABLE_ENTITY),
            JsonRejection::JsonSyntaxError(_) => ("malformed_json", StatusCode::BAD_REQUEST),
            JsonRejection::MissingJsonContentType(_) => ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            _ if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ("body_too_large", StatusCode::PAYLOAD_TOO_LARGE)
            }
            _ => ("bad_request", rejection.status()),
        };
        ApiError::new(status, code, rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", rejection.body_text())
    }
}

/// `Json<T>` whose rejections answer in the API's error format.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// `Query<T>` whose rejections answer in the API's error format.
#[derive(Debug, Clone, Copy, Default, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Path<T>` whose rejections answer in the API's error format.
#[derive(Debug, Clone, Copy, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);
