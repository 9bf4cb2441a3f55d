//! The route table of the backend API under `/api` (its handlers are in
//! `api`), with the fallbacks, and its OpenAPI 3.1 description, built from
//! the handlers' `#[utoipa::path]` attributes and the Rust types they take
//! and give, so it cannot drift from the code. Served at
//! `GET /api/openapi.json` and committed as `docs/openapi.json`;
//! `tests/openapi.rs` fails when the committed file is stale.

use std::sync::LazyLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;

use axum::Router;
use axum::http::StatusCode;
use utoipa_axum::routes;

use super::api::{self, ApiError, ApiKey};
use crate::hub::Hub;

/// What the paths do not say: the title, the key, the shared error answers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "switchboard backend API",
        description = "Lets a backend emit events to Socket.IO clients and SSE streams, post \
            chat messages, read history, and look at presence. Every route but this \
            description needs `Authorization: Bearer <api key>` (`--api-key`). Errors are \
            JSON `{ error, code }`: `error` for people, `code` for programs; besides \
            those each operation lists, an unknown path under `/api` gets `404 not_found` \
            and a method a path does not take `405 method_not_allowed`.",
    ),
    modifiers(&BearerApiKey),
    security(("api_key" = [])),
    components(responses(
        api::refusals::BadRequest,
        api::refusals::Unauthorized,
        api::refusals::UnknownNamespace,
        api::refusals::TooLarge,
        api::refusals::Internal,
        api::refusals::Unavailable,
        api::refusals::DocNotFound,
        api::refusals::StaleVersion,
        api::refusals::DocTooLarge,
        api::refusals::YDocNotFound,
        api::refusals::YRefused,
    )),
    tags(
        (name = "events", description = "Emit events to sockets and SSE streams"),
        (name = "rooms", description = "Chat rooms: messages, history, members"),
        (name = "users", description = "One user's connections"),
        (name = "documents", description = "Collaborative documents: read, and edit as a backend"),
        (name = "meta", description = "This description"),
    )
)]
struct ApiDoc;

/// The `api_key` security scheme the operations name.
struct BearerApiKey;

impl Modify for BearerApiKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The key given to the server with `--api-key` (or `SWITCHBOARD_API_KEY`), \
                 compared in constant time. A server started without one answers `503 \
                 api_disabled`.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// The routes under [`api::PREFIX`] and their description: the keyed ones
/// ([`api::keyed`]), then the unkeyed description itself.
pub fn router(key: ApiKey, max_body: usize) -> OpenApiRouter<Hub> {
    api::keyed(key, max_body)
        .routes(routes!(openapi_json))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
}

/// [`router`] as a plain axum router with its state.
pub fn routes(hub: Hub, key: ApiKey, max_body: usize) -> Router {
    let (router, _description) = router(key, max_body).split_for_parts();
    router
        // A known path with a method it does not take: axum's 405 (with its
        // `Allow` header) but with a JSON body like every other refusal.
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this route",
            )
        })
        .with_state(hub)
}

/// The whole description. The paths come from [`router`], the very
/// router the server runs (the key and body limit given here do not show in
/// the description).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .nest(api::PREFIX, router(ApiKey::Disabled, 0))
        .into_openapi();
    head_too_large(&mut doc);
    doc
}

/// Every operation may get `431` from the HTTP layer before any route sees
/// the request: a request line and headers over 8 KiB (`edge::serve`'s
/// `HTTP1_MAX_BUF`), answered without a body.
fn head_too_large(doc: &mut utoipa::openapi::OpenApi) {
    let response = utoipa::openapi::ResponseBuilder::new()
        .description(format!(
            "The request line and headers are larger than {} bytes (the HTTP layer answers, without a body)",
            crate::edge::serve::HTTP1_MAX_BUF
        ))
        .build();
    for item in doc.paths.paths.values_mut() {
        for op in [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            op.responses
                .responses
                .insert("431".into(), response.clone().into());
        }
    }
}

/// [`document`] as pretty JSON with a final newline: the text of
/// `docs/openapi.json` and of the `GET /api/openapi.json` body.
pub fn pretty_json() -> String {
    let text = document()
        .to_pretty_json()
        .expect("the description serializes");
    // utoipa 5 has no `webhooks`: they go in as the document's last key,
    // indented as the rest (the other keys keep their order).
    let hooks = serde_json::to_string_pretty(&hooks()).expect("hooks serialize");
    let hooks = hooks.replace('\n', "\n  ");
    let body = text.trim_end().strip_suffix('}').expect("a JSON object");
    format!("{},\n  \"webhooks\": {hooks}\n}}\n", body.trim_end())
}

/// The calls switchboard makes to the backend (OpenAPI 3.1 `webhooks`):
/// webhook events and the hooks of docs/http-api.md.
fn hooks() -> serde_json::Value {
    use serde_json::json;
    let verdict = |replace: bool| {
        let mut props = json!({
            "allow": { "type": "boolean" },
            "code": { "type": "string", "description": "with allow: false; the client's ack carries it (1-64 of [a-z0-9_.-], else forbidden)" },
            "message": { "type": "string", "description": "with allow: false; the ack's error (at most 256 characters)" }
        });
        if replace {
            props["content"] = json!({ "type": "string", "description": "with allow: true: stored and sent instead of the client's content" });
        }
        json!({ "type": "object", "required": ["allow"], "properties": props })
    };
    let signed = json!([{
        "name": "X-Switchboard-Signature", "in": "header", "required": false,
        "description": "With --webhook-secret: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.<body>\")>",
        "schema": { "type": "string" }
    }]);
    let post = |summary: &str, request: serde_json::Value, answer: serde_json::Value| {
        json!({ "post": {
            "summary": summary,
            "parameters": signed,
            "requestBody": { "required": true, "content": { "application/json": { "schema": request } } },
            "responses": { "200": {
                "description": "Any 2xx with this body; anything else, a timeout (--hook-timeout-ms) or more than 64 KiB counts as no answer",
                "content": { "application/json": { "schema": answer } }
            } }
        } })
    };
    let s = |t: &str| json!({ "type": t });
    let event = json!({
        "type": "object", "required": ["id", "type", "time", "data"],
        "properties": {
            "id": { "type": "string", "description": "a ULID, stable across retries: deduplicate on it" },
            "type": { "type": "string", "enum": crate::config::WEBHOOK_TYPES },
            "time": { "type": "integer", "description": "epoch milliseconds" },
            "data": { "type": "object", "description": "message.created: the stored message with namespace; member.*: { namespace, roomId, userId }; room.*: { namespace, roomId }; user.*: { namespace, userId }; document.changed: { namespace, docId, version }" }
        }
    });
    json!({
        "events": {
            "post": {
                "summary": "--webhook-url: what happened, in order, at least once",
                "parameters": signed,
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["events"],
                    "properties": { "events": { "type": "array", "items": event } }
                } } } },
                "responses": {
                    "2XX": { "description": "Taken: the events are removed from the outbox" },
                    "default": { "description": "Anything else, or no answer within --webhook-timeout-ms: sent again after a backoff" }
                }
            }
        },
        "joinHook": post(
            "--join-hook-url: may this user join this room?",
            json!({ "type": "object", "required": ["namespace", "userId", "roomId"],
                    "properties": { "namespace": s("string"), "userId": s("string"), "roomId": s("string") } }),
            verdict(false)
        ),
        "publishHook": post(
            "--publish-hook-url: may this message be stored, as it is or changed?",
            json!({ "type": "object", "required": ["namespace", "userId", "content"],
                    "properties": { "namespace": s("string"), "userId": s("string"), "roomId": s("string"),
                                    "toUser": s("string"), "content": s("string") } }),
            verdict(true)
        ),
        "rpcHook": post(
            "--rpc-hook-url: answer a client event under --rpc-prefix",
            json!({ "type": "object", "required": ["namespace", "userId", "event", "data"],
                    "properties": { "namespace": s("string"), "userId": s("string"), "event": s("string"), "data": {} } }),
            json!({ "type": "object", "properties": {
                "result": { "description": "the ack's result" },
                "error": { "type": "object", "properties": { "code": s("string"), "message": s("string") } }
            } })
        )
    })
}

static PRETTY_JSON: LazyLock<String> = LazyLock::new(pretty_json);

/// This description, as JSON.
///
/// Served without the API key: it holds nothing secret (it is made from the
/// source), and tools (client generators, schemathesis, a newcomer with
/// curl) can read what the API wants before they hold a key, even from a
/// server started without one.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "meta",
    security(()),
    responses((status = 200, description = "This OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        PRETTY_JSON.as_str(),
    )
}
