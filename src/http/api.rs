//! The backend HTTP API (docs/http-api.md): JSON in and out, `Authorization:
//! Bearer <api key>`, errors as `{ error, code }` and never a 500 for bad input.
//!
//! Each handler's `#[utoipa::path]` is its OpenAPI description, and
//! [`router`] registers handlers through `routes!`, which takes the path and
//! method from that same attribute: a route cannot be served undescribed or
//! described at a path it is not served at (see [`super::openapi`]).

mod yjs;

use std::time::Duration;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use refusals::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use subtle::ConstantTimeEq;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::documents::DocError;
use crate::hub::{Audience, Hub, HubError, UserPresence};
use crate::presence::Member;
use crate::realtime::chat::{DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};
use crate::store::{Message, Page, StoreError};

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
        let body = axum::Json(ErrorBody {
            error: self.error,
            code: self.code,
        });
        let mut res = (self.status, body).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, "Bearer".parse().expect("static"));
        }
        res
    }
}

/// The body of every refusal.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    /// For people: what was wrong, in a sentence.
    #[schema(example = "limit must be 1-100")]
    error: String,
    /// For programs: one of a fixed set of codes; each response lists the
    /// codes it may carry.
    #[schema(example = "invalid_payload")]
    code: &'static str,
}

/// The error answers the handlers share, as reusable OpenAPI responses; the
/// doc comments are their descriptions.
pub mod refusals {
    // Never built: the bodies are [`super::ApiError`]s; these only name them.
    #![allow(dead_code)]

    use utoipa::ToResponse;

    use super::ErrorBody;

    /// `invalid_json`: the body is not JSON, or `Content-Type: application/json`
    /// is missing. `invalid_payload`: the JSON, the query or a path segment has
    /// the wrong shape or a value out of range (unknown field, bad room id,
    /// empty or reserved event name, `limit` outside 1-100, ...).
    #[derive(ToResponse)]
    pub struct BadRequest(ErrorBody);

    /// `unauthorized`: no `Authorization: Bearer <api key>` header, or the
    /// wrong key.
    #[derive(ToResponse)]
    #[response(headers(("WWW-Authenticate" = String, description = "Always `Bearer`")))]
    pub struct Unauthorized(ErrorBody);

    /// `unknown_namespace`: the namespace is neither `/` nor one the server was
    /// started with (`--namespace`).
    #[derive(ToResponse)]
    pub struct UnknownNamespace(ErrorBody);

    /// `too_large`: the body is larger than `--max-payload-bytes`.
    #[derive(ToResponse)]
    pub struct TooLarge(ErrorBody);

    /// `internal`: delivery or the message store failed in a way a retry will
    /// not mend; the server log says more.
    #[derive(ToResponse)]
    pub struct Internal(ErrorBody);

    /// `not_found`: no document with this id has been edited in the namespace.
    /// `unknown_namespace`: the namespace is neither `/` nor one the server
    /// was started with.
    #[derive(ToResponse)]
    pub struct DocNotFound(ErrorBody);

    /// `stale_version`: the op's `version` is older than the ops the server
    /// keeps for the document (the latest 1,000): read it again.
    #[derive(ToResponse)]
    pub struct StaleVersion(ErrorBody);

    /// `too_large`: the body is larger than `--max-payload-bytes`, the op's
    /// content larger than `--max-doc-op-bytes`, or the document would grow
    /// beyond `--max-doc-bytes`.
    #[derive(ToResponse)]
    pub struct DocTooLarge(ErrorBody);

    /// `not_found`: nothing was ever stored for this Yjs document.
    #[derive(ToResponse)]
    pub struct YDocNotFound(ErrorBody);

    /// `invalid_update`: the body is not a Yjs update (v1 encoding).
    /// `too_large`: the update is larger than `--yjs-max-update-bytes` or
    /// `--max-payload-bytes`, or the document would grow beyond
    /// `--yjs-max-doc-bytes`.
    #[derive(ToResponse)]
    pub struct YRefused(ErrorBody);

    /// `api_disabled`: the server was started without `--api-key`.
    /// `unavailable`: the message store does not answer. `cluster_unavailable`:
    /// other nodes are out of reach (an emit was delivered on this node only).
    #[derive(ToResponse)]
    pub struct Unavailable(ErrorBody);
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
            HubError::NoDocument(_) => Self::new(StatusCode::NOT_FOUND, "not_found", msg),
            HubError::Doc(d) => match d {
                DocError::Invalid(_) => Self::bad(msg),
                DocError::TooLarge(_) => Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg),
                DocError::RateLimited(_) => {
                    Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", msg)
                }
                DocError::Stale { .. } => Self::new(StatusCode::CONFLICT, "stale_version", msg),
                DocError::Unavailable => Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "document store unavailable",
                ),
                DocError::Full => Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", msg),
                DocError::Internal => Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                ),
            },
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct NsQuery {
    /// The Socket.IO namespace, default `/`. Where the body has a
    /// `namespace` too, the two must agree.
    #[serde(default)]
    #[param(example = "/")]
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

// Ids and names as the Hub checks them, as named schemas. The handlers take
// plain strings; fields and parameters name these with `value_type`. Written
// by hand because the derive takes no length limits on a newtype.

/// A user id (the JWT `sub`), as `crate::realtime::messages::check_user_id`
/// checks it.
struct UserId;

impl PartialSchema for UserId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("A user id (the JWT `sub`): 1-128 characters."))
            .min_length(Some(1))
            .max_length(Some(128))
            .examples(["alice"])
            .into()
    }
}

impl ToSchema for UserId {}

/// A room id, as `crate::realtime::reply::room_id` checks it.
struct RoomId;

impl PartialSchema for RoomId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "A room id: 1-128 characters from A-Z a-z 0-9 _ . : @ -",
            ))
            .pattern(Some("^[A-Za-z0-9_.:@-]{1,128}$"))
            .examples(["general"])
            .into()
    }
}

impl ToSchema for RoomId {}

/// An event name, as [`crate::names::check_event_name`] checks it.
struct EventName;

impl PartialSchema for EventName {
    fn schema() -> RefOr<Schema> {
        use crate::names::{MAX_EVENT_NAME_CHARS, RESERVED_EVENTS};
        let reserved = RESERVED_EVENTS.join("`, `");
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(format!(
                "An event name: 1-{MAX_EVENT_NAME_CHARS} characters, no control \
                 characters, and not one Socket.IO reserves (`{reserved}`)."
            )))
            .min_length(Some(1))
            .max_length(Some(MAX_EVENT_NAME_CHARS))
            // Rust's `char::is_control`: the Unicode Cc category.
            .pattern(Some(r"^[^\u0000-\u001F\u007F-\u009F]*$"))
            .examples(["notification"])
            .into()
    }
}

impl ToSchema for EventName {}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
struct UserPath {
    #[param(value_type = UserId)]
    user_id: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
struct RoomPath {
    #[param(value_type = RoomId)]
    room_id: String,
}

/// `202`: the event was handed to delivery (whether anyone was there to
/// receive it is not known).
#[derive(Serialize, ToSchema)]
pub struct Accepted {
    /// Always `true`.
    accepted: bool,
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(Accepted { accepted: true }),
    )
        .into_response()
}

/// An event to emit to sockets in one namespace.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({ "event": "notification", "data": { "text": "Deploy done" }, "rooms": ["general"] }))]
struct EmitBody {
    #[schema(value_type = EventName)]
    event: String,
    /// Any JSON: the event's argument. Default `null`.
    #[serde(default)]
    data: Value,
    /// Rooms to emit to (their members' sockets). With neither `rooms` nor
    /// `users`, every socket of the namespace.
    #[serde(default)]
    #[schema(value_type = Vec<RoomId>)]
    rooms: Vec<String>,
    /// Users to emit to (every socket and SSE stream of each).
    #[serde(default)]
    #[schema(value_type = Vec<UserId>)]
    users: Vec<String>,
    /// Rooms whose members are left out.
    #[serde(default)]
    #[schema(value_type = Vec<RoomId>)]
    except: Vec<String>,
    /// The namespace, default `/` (or the `namespace` query parameter).
    #[serde(default)]
    namespace: Option<String>,
}

/// Emits an event to rooms, users, or a whole namespace.
#[utoipa::path(
    post,
    path = "/emit",
    tag = "events",
    params(NsQuery),
    request_body = EmitBody,
    responses(
        (status = 202, body = Accepted, description = "Handed to delivery"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = UnknownNamespace),
        (status = 413, response = TooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
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
    Ok(accepted())
}

/// An event to emit to every socket of one user.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({ "event": "notification", "data": { "text": "You have mail" } }))]
struct UserEmitBody {
    #[schema(value_type = EventName)]
    event: String,
    /// Any JSON: the event's argument. Default `null`.
    #[serde(default)]
    data: Value,
    /// Wait this long (1-60000 ms) for the user's sockets to acknowledge,
    /// and answer `200` with their replies. Without it, `202` at once.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 60000)]
    ack_timeout_ms: Option<u64>,
    /// The namespace, default `/` (or the `namespace` query parameter).
    #[serde(default)]
    namespace: Option<String>,
}

pub const MAX_ACK_TIMEOUT_MS: u64 = 60_000;

/// `200`: what the user's sockets acknowledged with.
#[derive(Serialize, ToSchema)]
pub struct AckReplies {
    /// One reply per socket that answered in time (any JSON each).
    acks: Vec<Value>,
}

/// Emits an event to every socket of one user, optionally waiting for acks.
#[utoipa::path(
    post,
    path = "/users/{userId}/emit",
    tag = "events",
    params(UserPath, NsQuery),
    request_body = UserEmitBody,
    responses(
        (status = 200, body = AckReplies, description = "With `ackTimeoutMs`: at least one socket acknowledged"),
        (status = 202, body = Accepted, description = "Without `ackTimeoutMs`: handed to delivery"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, body = ErrorBody, description = "`unknown_namespace`: see the other routes. \
            `not_connected` (with `ackTimeoutMs` only): the user has no socket in the namespace."),
        (status = 413, response = TooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
        (status = 504, body = ErrorBody, description = "`ack_timeout` (with `ackTimeoutMs` only): no socket acknowledged in time."),
    )
)]
async fn emit_to_user(
    State(hub): State<Hub>,
    ApiPath(UserPath { user_id: user }): ApiPath<UserPath>,
    ApiQuery(q): ApiQuery<NsQuery>,
    ApiJson(b): ApiJson<UserEmitBody>,
) -> Result<Response, ApiError> {
    let ns = namespace(b.namespace, q.namespace)?;
    match b.ack_timeout_ms {
        None => {
            hub.emit(&ns, &Audience::users([user]), &b.event, &b.data)
                .await?;
            Ok(accepted())
        }
        Some(ms) if ms == 0 || ms > MAX_ACK_TIMEOUT_MS => Err(ApiError::bad(format!(
            "ackTimeoutMs must be 1-{MAX_ACK_TIMEOUT_MS}"
        ))),
        Some(ms) => {
            let acks = hub
                .emit_to_user_with_ack(&ns, &user, &b.event, &b.data, Duration::from_millis(ms))
                .await?;
            Ok(axum::Json(AckReplies { acks }).into_response())
        }
    }
}

/// A chat message to store in a room and broadcast as `chat:message`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[schema(example = json!({ "content": "Hello, room", "senderId": "alice", "senderName": "Alice" }))]
struct PostMessageBody {
    /// The text: not blank, at most `--max-message-chars` characters.
    #[schema(value_type = String, pattern = r"\S", example = "Hello, room")]
    content: Value,
    /// Post as this user; without it, as `system`.
    #[serde(default)]
    #[schema(value_type = Option<UserId>)]
    sender_id: Option<String>,
    /// The sender's display name, default `senderId`; needs `senderId`.
    #[serde(default)]
    sender_name: Option<String>,
    /// The namespace, default `/` (or the `namespace` query parameter).
    #[serde(default)]
    namespace: Option<String>,
}

/// Stores a message in a room's history and broadcasts it to the room.
#[utoipa::path(
    post,
    path = "/rooms/{roomId}/messages",
    tag = "rooms",
    params(RoomPath, NsQuery),
    request_body = PostMessageBody,
    responses(
        (status = 201, body = Message, description = "The message as stored and broadcast"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = UnknownNamespace),
        (status = 413, response = TooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn post_message(
    State(hub): State<Hub>,
    ApiPath(RoomPath { room_id: room }): ApiPath<RoomPath>,
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

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    /// Only messages with a `seq` below this one (the page before).
    #[serde(default)]
    before: Option<u64>,
    /// Only messages with a `seq` above this one, oldest first (catching up
    /// from the last one a client holds). Not with `before`.
    #[serde(default)]
    after: Option<u64>,
    /// How many messages, 1-100; default 50.
    #[serde(default)]
    #[param(minimum = 1, maximum = 100, example = 20)]
    limit: Option<u64>,
    /// The Socket.IO namespace, default `/`.
    #[serde(default)]
    #[param(example = "/")]
    namespace: Option<String>,
}

/// `200`: a page of a room's history.
#[derive(Serialize, ToSchema)]
pub struct History {
    /// Oldest first.
    messages: Vec<Message>,
}

/// A page of a room's history: the latest `limit` messages, or the
/// `limit` before `before`; oldest first.
#[utoipa::path(
    get,
    path = "/rooms/{roomId}/messages",
    tag = "rooms",
    params(RoomPath, HistoryQuery),
    responses(
        (status = 200, body = History, description = "The page"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = UnknownNamespace),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn history(
    State(hub): State<Hub>,
    ApiPath(RoomPath { room_id: room }): ApiPath<RoomPath>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(DEFAULT_HISTORY_LIMIT);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::bad("limit must be 1-100"));
    }
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let page = Page::from_bounds(q.before, q.after).map_err(ApiError::bad)?;
    let messages = hub.history(&ns, &room, page, limit as usize).await?;
    Ok(axum::Json(History { messages }).into_response())
}

/// `200`: who is in a room.
#[derive(Serialize, ToSchema)]
pub struct Members {
    /// One entry per user, however many sockets they have in the room.
    members: Vec<Member>,
}

/// The members of a room (on every node of a cluster).
#[utoipa::path(
    get,
    path = "/rooms/{roomId}/members",
    tag = "rooms",
    params(RoomPath, NsQuery),
    responses(
        (status = 200, body = Members, description = "The room's members"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = UnknownNamespace),
        (status = 503, response = Unavailable),
    )
)]
async fn members(
    State(hub): State<Hub>,
    ApiPath(RoomPath { room_id: room }): ApiPath<RoomPath>,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Response, ApiError> {
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let members = hub.room_members(&ns, &room).await?;
    Ok(axum::Json(Members { members }).into_response())
}

/// Whether a user is connected, and with how many sockets.
#[utoipa::path(
    get,
    path = "/users/{userId}/presence",
    tag = "users",
    params(UserPath, NsQuery),
    responses(
        (status = 200, body = UserPresence, description = "The user's presence"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = UnknownNamespace),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn presence(
    State(hub): State<Hub>,
    ApiPath(UserPath { user_id: user }): ApiPath<UserPath>,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Response, ApiError> {
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let p = hub.user_presence(&ns, &user).await?;
    Ok(axum::Json(p).into_response())
}

/// `200`: what was ended.
#[derive(Serialize, ToSchema)]
pub struct Disconnected {
    /// Sockets disconnected, on every node.
    disconnected: usize,
    /// SSE streams ended, on this node.
    streams: usize,
}

/// Disconnects every socket of a user and ends their SSE streams. The
/// clients are told, and do not reconnect by themselves.
#[utoipa::path(
    post,
    path = "/users/{userId}/disconnect",
    tag = "users",
    params(UserPath, NsQuery),
    responses(
        (status = 200, body = Disconnected, description = "What was ended"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = UnknownNamespace),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn disconnect(
    State(hub): State<Hub>,
    ApiPath(UserPath { user_id: user }): ApiPath<UserPath>,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Response, ApiError> {
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let (sockets, streams) = hub.disconnect_user(&ns, &user).await?;
    Ok(axum::Json(Disconnected {
        disconnected: sockets,
        streams,
    })
    .into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
struct DocPath {
    /// A document id: the room id rules.
    #[param(value_type = RoomId)]
    doc_id: String,
}

/// `200`: a document as it stands.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    #[schema(value_type = RoomId)]
    doc_id: String,
    /// The text.
    content: String,
    /// The version of the last op applied (1, 2, 3, ... without gaps).
    #[schema(minimum = 1)]
    version: u64,
}

/// A document's text and version.
#[utoipa::path(
    get,
    path = "/docs/{docId}",
    tag = "documents",
    params(DocPath, NsQuery),
    responses(
        (status = 200, body = Document, description = "The document"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = DocNotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn get_doc(
    State(hub): State<Hub>,
    ApiPath(DocPath { doc_id }): ApiPath<DocPath>,
    ApiQuery(q): ApiQuery<NsQuery>,
) -> Result<Response, ApiError> {
    let ns = q.namespace.unwrap_or_else(|| "/".into());
    let (content, version) = hub.read_doc(&ns, &doc_id).await?;
    Ok(axum::Json(Document {
        doc_id,
        content,
        version,
    })
    .into_response())
}

/// `insert` or `delete`.
#[derive(Deserialize, Serialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum DocOpType {
    Insert,
    Delete,
}

/// An op on a document, made on `version` (docs/protocol.md §15).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DocOpBody {
    /// The version the op was made on (0 for a new document).
    version: u64,
    #[serde(rename = "type")]
    kind: DocOpType,
    /// In Unicode scalar values (code points), within the text at `version`.
    position: u64,
    /// The text to insert (an insert needs it, non-empty).
    #[serde(default)]
    content: Option<String>,
    /// How many characters to delete (a delete needs it, at least 1).
    #[serde(default)]
    #[schema(minimum = 1)]
    length: Option<u64>,
    /// Relayed as the op's `userId`; default `system`.
    #[serde(default)]
    #[schema(value_type = Option<UserId>)]
    user_id: Option<String>,
    /// Makes a retry safe: an `opId` already accepted from the same
    /// `userId` is answered with its version and not applied again.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    op_id: Option<String>,
    /// The namespace, default `/` (or the `namespace` query parameter).
    #[serde(default)]
    namespace: Option<String>,
}

/// `200`: where the op landed.
#[derive(Serialize, ToSchema)]
pub struct DocOpApplied {
    /// The op's version.
    #[schema(minimum = 1)]
    version: u64,
}

/// Applies an op to a document as a backend: transformed against the ops
/// since its `version` like a client's, stored, and relayed to the
/// document's sockets as `doc:operation`.
#[utoipa::path(
    post,
    path = "/docs/{docId}/operations",
    tag = "documents",
    params(DocPath, NsQuery),
    request_body = DocOpBody,
    responses(
        (status = 200, body = DocOpApplied, description = "The op's version"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = UnknownNamespace),
        (status = 409, response = StaleVersion),
        (status = 413, response = DocTooLarge),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn post_doc_op(
    State(hub): State<Hub>,
    ApiPath(DocPath { doc_id }): ApiPath<DocPath>,
    ApiQuery(q): ApiQuery<NsQuery>,
    ApiJson(b): ApiJson<DocOpBody>,
) -> Result<Response, ApiError> {
    let ns = namespace(b.namespace, q.namespace)?;
    let mut op = serde_json::json!({
        "version": b.version,
        "type": b.kind,
        "position": b.position,
        "content": b.content,
        "length": b.length,
        "opId": b.op_id,
    });
    if let Some(o) = op.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let user = b.user_id.unwrap_or_else(|| "system".into());
    let version = hub.apply_doc_op(&ns, &doc_id, &op, &user).await?;
    Ok(axum::Json(DocOpApplied { version }).into_response())
}

/// Where the API is nested; the description's paths carry it.
pub const PREFIX: &str = "/api";

/// The keyed routes under [`PREFIX`] and their description, behind the key
/// check and a body limit. `super::openapi` adds the unkeyed description and
/// the fallbacks, and serves the whole.
pub fn keyed(key: ApiKey, max_body: usize) -> OpenApiRouter<Hub> {
    OpenApiRouter::new()
        .routes(routes!(emit))
        .routes(routes!(emit_to_user))
        .routes(routes!(presence))
        .routes(routes!(disconnect))
        .routes(routes!(post_message, history))
        .routes(routes!(members))
        .routes(routes!(get_doc))
        .routes(routes!(post_doc_op))
        .routes(routes!(yjs::get_ydoc))
        .routes(routes!(yjs::post_yupdate))
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        // A route_layer covers the routes added before it only.
        .route_layer(middleware::from_fn_with_state(key, require_key))
}
