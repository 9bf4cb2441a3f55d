//! The JWT connect middleware: every way a token is found, and every refusal.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use switchboard::auth::{Claims, now_secs};
use switchboard::config::PublicKeyAlgorithm;

use crate::*;

fn claims(sub: &str) -> Claims {
    Claims {
        sub: sub.into(),
        name: None,
        exp: now_secs() + 600,
        iat: Some(now_secs()),
        nbf: None,
        iss: None,
        aud: None,
        rooms: None,
        tenant: None,
    }
}

fn sign(c: &Claims, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

async fn refused(server: &Server, ns: &str, token: &str) -> String {
    match Client::connect(server.addr, ns, Some(json!({ "token": token }))).await {
        Ok(_) => panic!("token accepted on {ns}: {token}"),
        Err(e) => e.message().to_string(),
    }
}

#[tokio::test]
async fn token_in_auth_header_and_query() {
    let s = server().await;
    let base = format!("ws://{}/socket.io/?EIO=4&transport=websocket", s.addr);
    Client::connect(s.addr, "/", Some(json!({ "token": token("alice") })))
        .await
        .expect("auth.token");
    Client::connect_with(&base, Some(&token("alice")), "/", None)
        .await
        .expect("Authorization header");
    Client::connect_url(&format!("{base}&token={}", token("alice")), "/", None)
        .await
        .expect("token query parameter");
}

#[tokio::test]
async fn refusals_name_their_reason() {
    let s = server().await;
    let missing = Client::connect(s.addr, "/", None).await.err().unwrap();
    assert_eq!(missing.message(), "Authentication failed: missing token");
    let missing = Client::connect(s.addr, "/", Some(json!({ "token": 42 })))
        .await
        .err()
        .unwrap();
    assert_eq!(missing.message(), "Authentication failed: missing token");

    assert_eq!(
        refused(&s, "/", "not-a-jwt").await,
        "Authentication failed: malformed token"
    );

    let mut expired = claims("alice");
    expired.exp = now_secs() - 3600;
    assert_eq!(
        refused(&s, "/", &sign(&expired, SECRET)).await,
        "Authentication failed: token expired"
    );

    let mut early = claims("alice");
    early.nbf = Some(now_secs() + 3600);
    assert_eq!(
        refused(&s, "/", &sign(&early, SECRET)).await,
        "Authentication failed: token not yet valid"
    );

    let other_key = sign(&claims("alice"), "another-secret-another-secret-another");
    assert_eq!(
        refused(&s, "/", &other_key).await,
        "Authentication failed: bad signature"
    );

    let long_sub = sign(&claims(&"x".repeat(129)), SECRET);
    assert_eq!(
        refused(&s, "/", &long_sub).await,
        "Authentication failed: invalid subject"
    );
    let empty_sub = sign(&claims(""), SECRET);
    assert_eq!(
        refused(&s, "/", &empty_sub).await,
        "Authentication failed: invalid subject"
    );
}

#[tokio::test]
async fn alg_none_is_refused() {
    let s = server().await;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = b64.encode(serde_json::to_vec(&claims("mallory")).unwrap());
    for token in [format!("{header}.{body}."), format!("{header}.{body}")] {
        let msg = refused(&s, "/", &token).await;
        assert!(msg.starts_with("Authentication failed: "), "{msg}");
    }
    // A token signed with another algorithm than the configured one.
    let hs384 = jsonwebtoken::encode(
        &Header::new(Algorithm::HS384),
        &claims("mallory"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        refused(&s, "/", &hs384).await,
        "Authentication failed: wrong algorithm"
    );
}

#[tokio::test]
async fn issuer_and_audience_when_configured() {
    let s = server_with(|c| {
        c.jwt_issuer = Some("https://auth.example".into());
        c.jwt_audience = Some("chat".into());
    })
    .await;
    let mut good = claims("alice");
    good.iss = Some("https://auth.example".into());
    good.aud = Some("chat".into());
    Client::connect(s.addr, "/", Some(json!({ "token": sign(&good, SECRET) })))
        .await
        .expect("right issuer and audience");

    let mut wrong_iss = claims("alice");
    wrong_iss.iss = Some("https://evil.example".into());
    wrong_iss.aud = Some("chat".into());
    assert_eq!(
        refused(&s, "/", &sign(&wrong_iss, SECRET)).await,
        "Authentication failed: wrong issuer"
    );
    let mut wrong_aud = claims("alice");
    wrong_aud.iss = Some("https://auth.example".into());
    wrong_aud.aud = Some("billing".into());
    assert_eq!(
        refused(&s, "/", &sign(&wrong_aud, SECRET)).await,
        "Authentication failed: wrong audience"
    );
    let no_iss = claims("alice");
    let msg = refused(&s, "/", &sign(&no_iss, SECRET)).await;
    assert!(
        msg.starts_with("Authentication failed: missing claim"),
        "{msg}"
    );
}

#[tokio::test]
async fn tenant_token_opens_only_its_namespace() {
    let s = server().await;
    let acme = token_with(TokenSpec {
        sub: "alice".into(),
        ttl_secs: 600,
        tenant: Some("acme".into()),
        ..TokenSpec::default()
    });
    Client::connect(s.addr, "/acme", Some(json!({ "token": acme })))
        .await
        .expect("own tenant");
    assert_eq!(
        refused(&s, "/globex", &acme).await,
        "Authentication failed: wrong tenant"
    );
    assert_eq!(
        refused(&s, "/", &acme).await,
        "Authentication failed: wrong tenant"
    );
    // A token without a tenant opens any configured namespace.
    Client::connect(s.addr, "/globex", Some(json!({ "token": token("bob") })))
        .await
        .expect("no tenant claim");
    assert_eq!(
        refused(&s, "/nowhere", &token("bob")).await,
        "Invalid namespace"
    );
}

async fn public_key_server(alg: PublicKeyAlgorithm, public: &str) -> Server {
    let path = format!("{}/tests/fixtures/{public}", env!("CARGO_MANIFEST_DIR"));
    server_with(move |c| {
        c.jwt_secret = None;
        c.jwt_public_key = Some(path.into());
        c.jwt_algorithm = Some(alg);
    })
    .await
}

#[tokio::test]
async fn public_key_algorithms() {
    let dir = format!("{}/tests/fixtures", env!("CARGO_MANIFEST_DIR"));
    let read = |f: &str| std::fs::read(format!("{dir}/{f}")).unwrap();
    let cases = [
        (
            PublicKeyAlgorithm::Rs256,
            "rsa_public.pem",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(&read("rsa_private.pem")).unwrap(),
        ),
        (
            PublicKeyAlgorithm::Es256,
            "ec_public.pem",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(&read("ec_private.pem")).unwrap(),
        ),
        (
            PublicKeyAlgorithm::EdDsa,
            "ed_public.pem",
            Algorithm::EdDSA,
            EncodingKey::from_ed_pem(&read("ed_private.pem")).unwrap(),
        ),
    ];
    for (alg, public, jwt_alg, key) in cases {
        let s = public_key_server(alg, public).await;
        let good = jsonwebtoken::encode(&Header::new(jwt_alg), &claims("alice"), &key).unwrap();
        Client::connect(s.addr, "/", Some(json!({ "token": good })))
            .await
            .unwrap_or_else(|e| panic!("{alg:?}: {e:?}"));
        // An HS256 token "signed" with the public key must not pass (key confusion).
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims("mallory"),
            &EncodingKey::from_secret(&read(public)),
        )
        .unwrap();
        assert_eq!(
            refused(&s, "/", &confused).await,
            "Authentication failed: wrong algorithm",
            "{alg:?}"
        );
    }
}

#[tokio::test]
async fn private_user_room_is_unreachable_from_clients() {
    let s = server().await;
    let bob = s.user("bob").await;
    let mut alice = s.user("alice").await;
    // Allowed as a client room id, but it maps to `room:user:bob`.
    let a = alice.ack("room:join", json!("user:bob")).await;
    assert_eq!(a["success"], true);
    // What the backend addresses to bob (his private room `user:bob`).
    s.hub
        .emit(
            "/",
            &switchboard::Audience::users(["bob"]),
            "secret",
            &json!({ "for": "bob" }),
        )
        .await
        .unwrap();
    assert_eq!(bob.recv("secret").await["for"], "bob");
    alice
        .expect_none("secret", std::time::Duration::from_millis(300))
        .await;
}
