//! An axum application of its own that mounts switchboard and, from its own
//! handler, notifies a user and broadcasts to a room through the Hub.
//!
//! `cargo run --example embed -- --port 3001`, then:
//!
//! ```sh
//! curl -X POST localhost:3001/orders -H 'content-type: application/json' \
//!      -d '{"buyerId":"alice","item":"book","quantity":2}'
//! ```
//!
//! Sockets of user `alice` get `order:created` (and the handler waits up to
//! 2 s for one of them to acknowledge it); everyone in room `orders` gets
//! `order:new`, and a chat message is posted there as the shop.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};
use switchboard::{Audience, BuildOptions, Config, Hub, HubError, Switchboard, TokenSpec};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3001)]
    port: u16,
    /// HS256 secret for client tokens (at least 32 bytes).
    #[arg(
        long,
        env = "SWITCHBOARD_JWT_SECRET",
        default_value = "embed-example-secret-embed-example!"
    )]
    jwt_secret: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewOrder {
    buyer_id: String,
    item: String,
    quantity: u32,
}

/// The application's own handler: it has no socket; it uses the Hub.
async fn create_order(
    State(hub): State<Hub>,
    Json(order): Json<NewOrder>,
) -> Result<(StatusCode, Json<Value>), (StatusCode, Json<Value>)> {
    let id = format!("ord-{}", ulid::Ulid::new());
    let event = json!({ "orderId": id, "item": order.item, "quantity": order.quantity });
    let fail = |e: HubError| {
        (
            StatusCode::BAD_GATEWAY,
            Json(json!({ "error": e.to_string() })),
        )
    };

    // 1. Tell the buyer, on every tab, and wait for one of them to confirm.
    let confirmed = match hub
        .emit_to_user_with_ack(
            "/",
            &order.buyer_id,
            "order:created",
            &event,
            Duration::from_secs(2),
        )
        .await
    {
        Ok(acks) => Some(acks),
        Err(HubError::NotConnected | HubError::TimedOut(_)) => None, // offline: fine
        Err(e) => return Err(fail(e)),
    };
    // 2. Broadcast to the staff room, except the buyer's own sockets there.
    hub.emit("/", &Audience::rooms(["orders"]), "order:new", &event)
        .await
        .map_err(fail)?;
    // 3. A persisted chat line in that room, as the shop.
    hub.post_message(
        "/",
        "orders",
        json!(format!(
            "{} ordered {} × {}",
            order.buyer_id, order.quantity, order.item
        )),
        Some(("shop".into(), Some("The Shop".into()))),
    )
    .await
    .map_err(fail)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "orderId": id, "buyerConfirmed": confirmed.is_some(), "acks": confirmed })),
    ))
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let config = Config {
        listen: format!("127.0.0.1:{}", args.port),
        jwt_secret: Some(args.jwt_secret.clone()),
        database_url: "memory".into(),
        ..Config::default()
    };
    let sb = Switchboard::build(config, BuildOptions::default())
        .await
        .unwrap_or_else(|e| panic!("switchboard: {e}"));
    // Our routes, with the Hub as their state, beside switchboard's.
    let app = Router::new()
        .route("/orders", post(create_order))
        .with_state(sb.hub.clone())
        .merge(sb.router);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .unwrap_or_else(|e| panic!("cannot listen on port {}: {e}", args.port));
    let token = switchboard::mint_hs256(
        args.jwt_secret.as_bytes(),
        &TokenSpec {
            sub: "alice".into(),
            ttl_secs: 3600,
            ..TokenSpec::default()
        },
    );
    println!("embed example on http://{}", listener.local_addr().unwrap());
    println!("token for alice: {token}");
    axum::serve(listener, app).await.expect("server error");
}
