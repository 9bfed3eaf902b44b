//! The one error type of the HTTP API: a status and a message, rendered as
//! `{"error": "...", "code": <status>}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;

use crate::command::Rejection;
use crate::hub::SubscribeError;
use crate::node::cluster::AdminError;
use crate::node::WriteError;
use crate::service::ServiceError;
use crate::store::StoreError;

/// An error answer. 4xx is the client's input, 5xx the cluster.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// What went wrong and why, for a human.
    pub message: String,
}

impl ApiError {
    /// 400 with `message`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// 401 with `message`: no key, or an unknown one.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, message: message.into() }
    }

    /// 403 with `message`: a known key without the permission.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self { status: StatusCode::FORBIDDEN, message: message.into() }
    }

    /// 409 with `message`: the request conflicts with the state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self { status: StatusCode::CONFLICT, message: message.into() }
    }

    /// 404 with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { status: StatusCode::NOT_FOUND, message: message.into() }
    }

    /// 413 with `message`.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self { status: StatusCode::PAYLOAD_TOO_LARGE, message: message.into() }
    }

    /// 503 with `message`: the cluster cannot serve this right now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self { status: StatusCode::SERVICE_UNAVAILABLE, message: message.into() }
    }

    /// 500 with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }
}

impl ApiError {
    /// A short name of the status, for frames that carry it as a code.
    pub fn code(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "bad_request",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "not_found",
            StatusCode::CONFLICT => "conflict",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            StatusCode::GATEWAY_TIMEOUT => "timeout",
            s if s.is_client_error() => "rejected",
            _ => "internal",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.message, "code": self.status.as_u16() });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        Self::unavailable(e.to_string())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!("storage error: {e}");
        Self::internal(e.to_string())
    }
}

impl From<Rejection> for ApiError {
    fn from(e: Rejection) -> Self {
        let status = match e {
            Rejection::RoomExists(_) => StatusCode::CONFLICT,
            Rejection::RoomNotFound(_) | Rejection::ConsumerNotFound(..) => StatusCode::NOT_FOUND,
        };
        Self { status, message: e.to_string() }
    }
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let status = match e {
            AdminError::NotLeader(_) | AdminError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        Self { status, message: e.to_string() }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Rejected(rejection) => rejection.into(),
            ServiceError::Write(e) => e.into(),
            ServiceError::Store(e) => e.into(),
            ServiceError::Subscribe(e) => e.into(),
            ServiceError::Unexpected { .. } => {
                tracing::error!("{e}");
                Self::internal(e.to_string())
            }
        }
    }
}

impl From<SubscribeError> for ApiError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::TooMany(_) => Self::unavailable(e.to_string()),
            SubscribeError::Store(e) => e.into(),
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request(format!("invalid query: {}", e.body_text()))
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        Self { status: e.status(), message: format!("cannot read body: {}", e.body_text()) }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::bad_request(format!("invalid path: {}", e.body_text()))
    }
}

impl From<WebSocketUpgradeRejection> for ApiError {
    fn from(e: WebSocketUpgradeRejection) -> Self {
        Self { status: e.status(), message: format!("not a WebSocket upgrade: {}", e.body_text()) }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;

    use super::*;

    async fn answer(error: ApiError) -> (StatusCode, Option<String>, serde_json::Value) {
        let response = error.into_response();
        let status = response.status();
        let retry = response.headers().get(header::RETRY_AFTER).map(|v| v.to_str().unwrap_or("").to_owned());
        let body = to_bytes(response.into_body(), 1 << 16).await.unwrap_or_default();
        (status, retry, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[tokio::test]
    async fn errors_render_as_json_with_their_code() {
        let (status, retry, body) = answer(ApiError::not_found("room 'x' does not exist")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(retry, None);
        assert_eq!(body, serde_json::json!({ "error": "room 'x' does not exist", "code": 404 }));
    }

    #[tokio::test]
    async fn every_503_says_when_to_retry() {
        let (status, retry, body) = answer(ApiError::unavailable("no leader")).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(retry.as_deref(), Some("1"));
        assert_eq!(body["code"], 503);
    }

    #[test]
    fn rejections_map_to_conflict_and_not_found() {
        assert_eq!(ApiError::from(Rejection::RoomExists("a".into())).status, StatusCode::CONFLICT);
        assert_eq!(ApiError::from(Rejection::RoomNotFound("a".into())).status, StatusCode::NOT_FOUND);
        let rejected = ApiError::from(ServiceError::Rejected(Rejection::RoomNotFound("a".into())));
        assert_eq!((rejected.status, rejected.message.as_str()), (StatusCode::NOT_FOUND, "room 'a' does not exist"));
    }

    #[test]
    fn a_full_node_is_unavailable_not_an_error() {
        let error = ApiError::from(SubscribeError::TooMany(10));
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(error.message.contains("10 subscribers"), "{}", error.message);
    }
}
