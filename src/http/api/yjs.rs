//! `/api/yjs/{docId}`: a backend reads a Yjs document (its state as one
//! update, or the text of a `Y.Text`) and applies an update to it, which
//! reaches the document's clients like a client's (docs/http-api.md).

use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::refusals::{BadRequest, Internal, Unauthorized, Unavailable, YDocNotFound, YRefused};
use super::{ApiError, ApiPath, ApiQuery, RoomId};
use crate::hub::Hub;
use crate::realtime::yjs::{Origin, catch_up, deliver, doc_key};
use crate::yjs::{Kind, YError};

#[derive(Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Path, rename_all = "camelCase")]
pub(super) struct YDocPath {
    /// A document name: what the providers connect to (the room id rules).
    #[param(value_type = RoomId)]
    doc_id: String,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct YReadQuery {
    /// The tenant whose document it is (tokens with a `tenant` claim open
    /// that tenant's documents); default none.
    #[serde(default)]
    tenant: Option<String>,
    /// Answer the text of the `Y.Text` of this name, as JSON, instead of
    /// the state.
    #[serde(default)]
    text: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct YWriteQuery {
    /// The tenant whose document it is; default none.
    #[serde(default)]
    tenant: Option<String>,
}

/// `200` with `?text=`: the text of one `Y.Text`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct YText {
    #[schema(value_type = RoomId)]
    doc_id: String,
    /// The `Y.Text`'s name.
    name: String,
    /// Its text (empty if the document has none of that name).
    text: String,
}

/// `200`: what the update did.
#[derive(Serialize, ToSchema)]
pub struct YApplied {
    /// False when the document had all of it already (nothing stored).
    applied: bool,
}

fn checked(doc_id: &str, tenant: Option<&str>) -> Result<(), ApiError> {
    if !crate::names::valid_room_id(doc_id) {
        return Err(ApiError::bad(
            "invalid document name: 1-128 characters of A-Z a-z 0-9 _ . : @ -",
        ));
    }
    if tenant.is_some_and(|t| !crate::names::valid_room_id(t)) {
        return Err(ApiError::bad("invalid tenant"));
    }
    Ok(())
}

impl From<YError> for ApiError {
    fn from(e: YError) -> Self {
        let msg = e.to_string();
        match e {
            YError::Malformed(_) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_update", msg),
            YError::UpdateTooLarge(_) | YError::DocTooLarge(_) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", msg)
            }
            YError::Busy => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", msg),
            YError::Store(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "document store unavailable",
            ),
        }
    }
}

/// A Yjs document: its whole state as one update (v1, what
/// `Y.applyUpdate` takes), or with `?text=<name>` the text of that
/// `Y.Text` as JSON.
#[utoipa::path(
    get,
    path = "/yjs/{docId}",
    tag = "documents",
    params(YDocPath, YReadQuery),
    responses(
        (status = 200, content(
            (Vec<u8> = "application/octet-stream"),
            (YText = "application/json"),
        ), description = "The state (or, with `text`, the text)"),
        (status = 400, response = BadRequest),
        (status = 401, response = Unauthorized),
        (status = 404, response = YDocNotFound),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn get_ydoc(
    State(hub): State<Hub>,
    ApiPath(YDocPath { doc_id }): ApiPath<YDocPath>,
    ApiQuery(q): ApiQuery<YReadQuery>,
) -> Result<Response, ApiError> {
    checked(&doc_id, q.tenant.as_deref())?;
    let ctx = hub.ctx().clone();
    let held = ctx
        .ydocs
        .open_held(&doc_key(q.tenant.as_deref(), &doc_id))
        .await?;
    let doc = &held.doc;
    // With several nodes, what the others stored since this copy's last seq.
    crate::on_io!(hub.io(), io => catch_up(io, &ctx, doc, false).await);
    let read = (
        doc.is_empty(),
        match &q.text {
            Some(name) => Err(doc.text(name)),
            None => Ok(doc.state_as_update()),
        },
    );
    drop(held);
    match read {
        (true, _) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such document",
        )),
        (false, Ok(state)) => Ok((
            [(header::CONTENT_TYPE, "application/octet-stream")],
            Body::from(state),
        )
            .into_response()),
        (false, Err(text)) => Ok(axum::Json(YText {
            doc_id,
            name: q.text.unwrap_or_default(),
            text,
        })
        .into_response()),
    }
}

/// Applies a Yjs update (v1, the body as sent by `Y.encodeStateAsUpdate`
/// or a doc's `update` event) as a backend: checked and stored like a
/// client's, then sent to the document's clients on every node, over both
/// providers.
#[utoipa::path(
    post,
    path = "/yjs/{docId}/updates",
    tag = "documents",
    params(YDocPath, YWriteQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 200, body = YApplied, description = "Stored and sent"),
        (status = 400, response = YRefused),
        (status = 401, response = Unauthorized),
        (status = 413, response = YRefused),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn post_yupdate(
    State(hub): State<Hub>,
    ApiPath(YDocPath { doc_id }): ApiPath<YDocPath>,
    ApiQuery(q): ApiQuery<YWriteQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    checked(&doc_id, q.tenant.as_deref())?;
    let ctx = hub.ctx().clone();
    let limit = ctx
        .ydocs
        .limits()
        .max_update_bytes
        .min(ctx.config.max_payload_bytes as usize);
    let update = axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if !too_large {
            return ApiError::new(StatusCode::BAD_REQUEST, "invalid_payload", e.to_string());
        }
        crate::metrics::limit_hit("yjs_max_update_bytes");
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            YError::UpdateTooLarge(limit).to_string(),
        )
    })?;
    let key = doc_key(q.tenant.as_deref(), &doc_id);
    // Its own task: a caller that hangs up does not stop an update half
    // way (applied but not stored, or stored but not sent).
    let applied = tokio::spawn(async move {
        let held = ctx.ydocs.open_held(&key).await?;
        let applied = ctx.ydocs.apply(&held.doc, &update).await?;
        if let Some(seq) = applied {
            crate::on_io!(hub.io(), io => {
                let doc = &held.doc;
                deliver(io, &ctx.ydocs, doc, Kind::Update, seq, update, Origin::Backend).await
            });
        }
        Ok::<_, YError>(applied.is_some())
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(axum::Json(YApplied { applied }).into_response())
}
