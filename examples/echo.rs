//! A server that behaves as the Socket.IO protocol reference server, for
//! checking wire compatibility with any client:
//!
//! * namespaces `/` and `/custom`; on every connection it emits `auth` with the
//!   handshake auth payload;
//! * on `/`, `message` is echoed back as `message-back` with all of its
//!   arguments (binary included), and `message-with-ack` is acknowledged with
//!   the same arguments;
//! * pingInterval 300 ms, pingTimeout 200 ms, maxPayload 1000000, connect
//!   timeout 1000 ms, any CORS origin.
//!
//! `cargo run --example echo -- --port 3000`

use std::fmt;
use std::time::Duration;

use clap::Parser;
use serde::de::{MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, Data, SocketRef, TryData};
use socketioxide::handler::ConnectHandler;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 3000)]
    port: u16,
}

/// Any argument a client can send, binary parts included.
#[derive(Debug, Clone)]
enum Arg {
    Null,
    Bool(bool),
    I64(i64),
    U64(u64),
    F64(f64),
    Str(String),
    Bytes(Vec<u8>),
    Seq(Vec<Arg>),
    Map(Vec<(String, Arg)>),
}

/// All the arguments of an event. It (de)serializes as a tuple, which is how
/// socketioxide knows to spread it over several arguments.
#[derive(Debug, Clone)]
struct AllArgs(Vec<Arg>);

impl Serialize for Arg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Arg::Null => s.serialize_unit(),
            Arg::Bool(b) => s.serialize_bool(*b),
            Arg::I64(n) => s.serialize_i64(*n),
            Arg::U64(n) => s.serialize_u64(*n),
            Arg::F64(n) => s.serialize_f64(*n),
            Arg::Str(v) => s.serialize_str(v),
            Arg::Bytes(b) => s.serialize_bytes(b),
            Arg::Seq(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Arg::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

struct ArgVisitor;

impl<'de> Visitor<'de> for ArgVisitor {
    type Value = Arg;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any value")
    }
    fn visit_unit<E>(self) -> Result<Arg, E> {
        Ok(Arg::Null)
    }
    fn visit_none<E>(self) -> Result<Arg, E> {
        Ok(Arg::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Arg, E> {
        Ok(Arg::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Arg, E> {
        Ok(Arg::I64(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Arg, E> {
        Ok(Arg::U64(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Arg, E> {
        Ok(Arg::F64(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Arg, E> {
        Ok(Arg::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Arg, E> {
        Ok(Arg::Str(v))
    }
    fn visit_bytes<E>(self, v: &[u8]) -> Result<Arg, E> {
        Ok(Arg::Bytes(v.to_vec()))
    }
    fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Arg, E> {
        Ok(Arg::Bytes(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Arg, A::Error> {
        let mut items = Vec::new();
        while let Some(i) = seq.next_element()? {
            items.push(i);
        }
        Ok(Arg::Seq(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Arg, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry()? {
            entries.push((k, v));
        }
        Ok(Arg::Map(entries))
    }
}

impl<'de> Deserialize<'de> for Arg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Arg, D::Error> {
        d.deserialize_any(ArgVisitor)
    }
}

impl Serialize for AllArgs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut t = s.serialize_tuple(self.0.len())?;
        for a in &self.0 {
            t.serialize_element(a)?;
        }
        t.end()
    }
}

impl<'de> Deserialize<'de> for AllArgs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<AllArgs, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AllArgs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("event arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AllArgs, A::Error> {
                let mut items = Vec::new();
                while let Some(i) = seq.next_element()? {
                    items.push(i);
                }
                Ok(AllArgs(items))
            }
        }
        // Any length: serde_json reads a tuple as a sequence of what is there.
        d.deserialize_tuple(usize::MAX, V)
    }
}

/// Registers the handlers before the CONNECT packet goes out, so events sent
/// right after connecting are never missed.
async fn setup(s: SocketRef) -> Result<(), std::convert::Infallible> {
    if s.ns() == "/" {
        s.on(
            "message",
            async |s: SocketRef, Data(args): Data<AllArgs>| {
                let _ = s.emit("message-back", &args);
            },
        );
        s.on(
            "message-with-ack",
            async |Data(args): Data<AllArgs>, ack: AckSender| {
                let _ = ack.send(&args);
            },
        );
    }
    Ok(())
}

async fn connected(s: SocketRef, TryData(auth): TryData<serde_json::Value>) {
    let auth = auth.unwrap_or_else(|_| serde_json::json!({}));
    let _ = s.emit("auth", &auth);
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (layer, io) = SocketIo::builder()
        .ping_interval(Duration::from_millis(300))
        .ping_timeout(Duration::from_millis(200))
        .max_payload(1_000_000)
        .connect_timeout(Duration::from_millis(1000))
        .build_layer();
    io.ns("/", connected.with(setup));
    io.ns("/custom", connected.with(setup));
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_credentials(true)
        .allow_headers(AllowHeaders::mirror_request());
    let app = axum::Router::new().layer(layer).layer(cors);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("cannot listen on {addr}: {e}"));
    println!("echo server on http://{addr}");
    axum::serve(listener, app).await.expect("server error");
}
