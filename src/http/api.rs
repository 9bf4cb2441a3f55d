//! The backend HTTP API (docs/http-api.md): JSON in and out, `Authorization:
//! Bearer <api key>`, errors as `{ error, code }` and never a 500 for bad input.

use std::time::Duration;

use axum::Router;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::hub::{Audience, Hub, HubError};
use crate::realtime::chat::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use crate::store::StoreError;

/// An error answer: status, `code` for programs, `error` for people.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub error: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            error: error.into(),
        }
    }

    fn bad(error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_payload", error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = axum::Json(json!({ "error": self.error, "code": self.code }));
        let mut res = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        res
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        let msg = e.to_string();
        match e {
            HubError::UnknownNamespace(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_namespace", msg)
            }
            HubError::Invalid(_) => Self::bad(msg),
            HubError::NotConnected => Self::new(StatusCode::NOT_FOUND, "not_connected", msg),
            HubError::TimedOut(_) => Self::new(StatusCode::GATEWAY_TIMEOUT, "ack_timeout", msg),
            HubError::Store(StoreError::Unavailable(_)) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "message store unavailable",
            ),
            HubError::ClusterUnavailable(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "cluster_unavailable", msg)
            }
            HubError::Store(StoreError::Internal(_)) | HubError::Delivery(_) => {
                tracing::warn!("API internal error: {msg}");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

/// `Json<T>` whose rejections are [`ApiError`]s.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rej) => Err(json_rejection(rej)),
        }
    }
}

fn json_rejection(rej: JsonRejection) -> ApiError {
    let text = rej.body_text();
    match rej {
        JsonRejection::JsonDataError(_) => ApiError::bad(text),
        JsonRejection::JsonSyntaxError(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", text)
        }
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "expected Content-Type: application/json",
        ),
        _ if rej.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "body too large")
        }
        _ => ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", text),
    }
}

/// `Query<T>` whose rejections are [`ApiError`]s.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|e: QueryRejection| ApiError::bad(e.body_text()))
    }
}

/// `Path<T>` whose rejections (e.g. a segment that is not UTF-8 once
/// percent-decoded) are [`ApiError`]s.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError::bad(e.body_text()))
    }
}

/// The API key, or why there is none.
#[derive(Clone)]
pub enum ApiKey {
    Disabled,
    Key(String),
}

/// Checks `Authorization: Bearer <key>` in constant time.
async fn require_key(State(key): State<ApiKey>, req: Request, next: Next) -> Response {
    let ApiKey::Key(key) = key else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "api_disabled",
            "the HTTP API is disabled: start the server with --api-key",
        )
        .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.get(..7)
                .filter(|p| p.eq_ignore_ascii_case("bearer "))
                .map(|_| h[7..].trim())
        });
    match given {
        Some(g) if bool::from(g.as_bytes().ct_eq(key.as_bytes())) => next.run(req).await,
        Some(_) => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong API key").into_response()
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing Authorization: Bearer <api key>",
        )
        .into_response(),
    }
}

#[derive(Deserialize)]
struct NsQuery {
    #[serde(default)]
    namespace: Option<String>,
}

/// The namespace from the body or the query (they must agree), default `/`.
fn namespace(body: Option<String>, query: Option<String>) -> Result<String, ApiError> {
    match (body, query) {
        (Some(b), Some(q)) if b != q => Err(ApiError::bad(
            "namespace differs between the body and the query",
        )),
        (Some(n), _) | (None, Some(n)) => Ok(n),
        (None, None) => Ok("/".into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    namespace: Option<String>,
}

async fn emit(
    State(hub): State<Hub>,
    ApiQuery(q): ApiQuery<NsQuery>,
    ApiJson(b): ApiJson<EmitBody>,
) -> Result<Response, ApiError> {
    let ns = namespace(b.namespace, q.namespace)?;
    let audience = Audience {
        rooms: b.rooms,
        users: b.users,
        except: b.except,
    };
    hub.emit(&ns, &audience, &b.event, &b.data).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(json!({ "accepted": true })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct UserEmitBody {
    event: String,
    #[serde(default)]
    data: Value,
    #[serde(default)]
    ack_timeout_ms: Option<u64>,
    #[serde(default)]
    namespace: Option<String>,
}

pub const MAX_ACK_TIMEOUT_MS: u64 = 60_000;

async fn emit_to_user(
    State(hub): State<Hub>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<NsQuery>,
    ApiJson(b): ApiJson<UserEmitBody>,
) -> Result<Response, ApiError> {
    let ns = namespace(b.namespace, q.namespace)?;
    match b.ack_timeout_ms {
        None => {
            hub.emit(&ns, &Audience::users([user]), &b.event, &b.data)
                .await?;
            Ok((
                StatusCode::ACCEPTED,
                axum::Json(json!({ "accepted": true })),
            )
                .into_response())
        }
        Some(ms) if ms == 0 || ms > MAX_ACK_TIMEOUT_MS => Err(ApiError::bad(format!(
            "ackTimeoutMs must be 1-{MAX_ACK_TIMEOUT_MS}"
        ))),
        Some(ms) => {
            let acks = hub
                .emit_to_user_with_ack(&ns, &user, &b.event, &b.data, Duration::from_millis(ms))
                .await?;
            Ok(axum::Json(json!({ "acks": acks })).into_response())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PostMessageBody {
    content: Value,
    #[serde(default)]
    sender_id: Option<String>,
    #[serde(default)]
    sender_name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

async fn post_message(
    State(hub): State<Hub>,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<NsQuery>,
    ApiJson(b): ApiJson<PostMessageBody>,
) -> Result<Response, ApiError> {
    let ns = namespace(b.namespace, q.namespace)?;
    if b.sender_name.is_some() && b.sender_id.is_none() {
        return Err(ApiError::bad("senderName needs senderId"));
    }
    let sender = b.sender_id.map(|id| (id, b.sender_name));
    let m = hub.post_message(&ns, &room, b.content, sender).await?;
    Ok((StatusCode::CREATED, axum::Json(m)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    limit: Option<u64>,
    #[serde(default)]
    namespace: Option<String>,
}

async fn history(
    State(hub): State<Hub>,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::bad("limit must be 1-100"));
    }
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let messages = hub.history(&ns, &room, q.before, limit as usize).await?;
    Ok(axum::Json(json!({ "messages": messages })).into_response())
}

async fn members(
    State(hub): State<Hub>,
    ApiPath(room): ApiPath<String>,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Response, ApiError> {
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let members = hub.room_members(&ns, &room).await?;
    Ok(axum::Json(json!({ "members": members })).into_response())
}

async fn presence(
    State(hub): State<Hub>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Response, ApiError> {
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let p = hub.user_presence(&ns, &user).await?;
    Ok(axum::Json(p).into_response())
}

async fn disconnect(
    State(hub): State<Hub>,
    ApiPath(user): ApiPath<String>,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Response, ApiError> {
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let (sockets, streams) = hub.disconnect_user(&ns, &user).await?;
    Ok(axum::Json(json!({ "disconnected": sockets, "streams": streams })).into_response())
}

/// The routes under `/api`, behind the key check and a body limit.
pub fn routes(hub: Hub, key: ApiKey, max_body: usize) -> Router {
    Router::new()
        .route("/emit", post(emit))
        .route("/users/{user_id}/emit", post(emit_to_user))
        .route("/users/{user_id}/presence", get(presence))
        .route("/users/{user_id}/disconnect", post(disconnect))
        .route("/rooms/{room_id}/messages", post(post_message).get(history))
        .route("/rooms/{room_id}/members", get(members))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .route_layer(middleware::from_fn_with_state(key, require_key))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .with_state(hub)
}
