//! JWT verification: a token becomes an [`Identity`], or a short reason why not.
//! No socket types. Keys come from configuration, or from a JWKS URL
//! ([`jwks`]).

pub mod jwks;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, PublicKeyAlgorithm};

/// Who a verified token says the user is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: String,
    pub name: String,
    /// Room patterns the user may join; `None` means any room.
    pub rooms: Option<Vec<String>>,
    /// When set, the only tenant namespace (without its slash) this token opens.
    pub tenant: Option<String>,
    /// The token's `exp` (epoch seconds): the connection ends then.
    pub expires_at: u64,
}

/// Whether a `rooms` claim allows `room_id` (exact match or `prefix*`);
/// no claim allows any room.
pub fn rooms_allow(rooms: Option<&[String]>, room_id: &str) -> bool {
    match rooms {
        None => true,
        Some(patterns) => patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => room_id.starts_with(prefix),
            None => p == room_id,
        }),
    }
}

impl Identity {
    /// Whether the token allows joining `room_id` (exact match or `prefix*`).
    pub fn may_join(&self, room_id: &str) -> bool {
        rooms_allow(self.rooms.as_deref(), room_id)
    }

    /// Whether this identity may open namespace `ns` (e.g. `/` or `/acme`).
    pub fn may_open(&self, ns: &str) -> bool {
        match &self.tenant {
            None => true,
            Some(t) => ns.strip_prefix('/') == Some(t.as_str()),
        }
    }
}

/// The claims switchboard reads and writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

/// Why a token was refused. The display text is what the client reads after
/// `Authentication failed: `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("wrong algorithm")]
    WrongAlgorithm,
    #[error("missing claim {0}")]
    MissingClaim(String),
    #[error("invalid subject")]
    InvalidSubject,
    #[error("wrong tenant")]
    WrongTenant,
    #[error("claim {0} too large")]
    ClaimTooLarge(&'static str),
    #[error("unknown signing key")]
    UnknownKey,
}

/// Where the verification keys come from.
#[derive(Clone)]
enum Keys {
    /// One configured key, of the validation's algorithm.
    Fixed(DecodingKey),
    /// A JWKS URL's keys, picked by the token's `kid`.
    Jwks(std::sync::Arc<jwks::Jwks>),
}

/// Checks tokens against the configured key and algorithm, or the keys of
/// a JWKS URL.
#[derive(Clone)]
pub struct Verifier {
    keys: Keys,
    validation: Validation,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithms", &self.validation.algorithms)
            .finish_non_exhaustive()
    }
}

pub const LEEWAY_SECS: u64 = 5;

impl Verifier {
    /// An HS256 verifier for a shared secret.
    pub fn hs256(secret: &[u8], issuer: Option<&str>, audience: Option<&str>) -> Self {
        Self::new(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
            issuer,
            audience,
        )
    }

    /// A verifier that takes its keys from `jwks` (RS*, PS*, ES256/384,
    /// EdDSA, as each key says).
    pub fn jwks(jwks: std::sync::Arc<jwks::Jwks>, iss: Option<&str>, aud: Option<&str>) -> Self {
        let mut v = Self::new(DecodingKey::from_secret(&[]), Algorithm::RS256, iss, aud);
        v.keys = Keys::Jwks(jwks);
        v
    }

    /// The JWKS the keys come from, if they do.
    pub fn jwks_source(&self) -> Option<&std::sync::Arc<jwks::Jwks>> {
        match &self.keys {
            Keys::Jwks(j) => Some(j),
            Keys::Fixed(_) => None,
        }
    }

    /// A verifier from the configuration; `dev_secret` is used in dev mode.
    pub fn from_config(config: &Config, dev_secret: Option<&str>) -> Result<Self, ConfigError> {
        let iss = config.jwt_issuer.as_deref();
        let aud = config.jwt_audience.as_deref();
        if let Some(url) = &config.jwks_url {
            let j = jwks::Jwks::new(
                url,
                std::time::Duration::from_secs(config.jwks_refresh_secs),
                std::time::Duration::from_secs(config.jwks_min_refresh_secs),
            );
            return Ok(Self::jwks(j, iss, aud));
        }
        if let Some(path) = &config.jwt_public_key {
            let err = |reason: String| ConfigError::PublicKey {
                path: path.display().to_string(),
                reason,
            };
            let pem = std::fs::read(path).map_err(|e| err(e.to_string()))?;
            let (key, alg) = match config.jwt_algorithm {
                Some(PublicKeyAlgorithm::Rs256) => {
                    (DecodingKey::from_rsa_pem(&pem), Algorithm::RS256)
                }
                Some(PublicKeyAlgorithm::Es256) => {
                    (DecodingKey::from_ec_pem(&pem), Algorithm::ES256)
                }
                Some(PublicKeyAlgorithm::EdDsa) => {
                    (DecodingKey::from_ed_pem(&pem), Algorithm::EdDSA)
                }
                None => return Err(ConfigError::MissingAlgorithm),
            };
            let key = key.map_err(|e| err(format!("not a usable PEM public key ({e})")))?;
            return Ok(Self::new(key, alg, iss, aud));
        }
        let secret = config
            .jwt_secret
            .as_deref()
            .or(dev_secret)
            .unwrap_or_default();
        Ok(Self::hs256(secret.as_bytes(), iss, aud))
    }

    fn new(key: DecodingKey, alg: Algorithm, iss: Option<&str>, aud: Option<&str>) -> Self {
        // The algorithm comes from configuration only; the token header must match it.
        let mut validation = Validation::new(alg);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_string(), "sub".to_string()]);
        match iss {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match aud {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        Verifier {
            keys: Keys::Fixed(key),
            validation,
        }
    }

    /// Verifies `token` and returns who it names. With a JWKS, a `kid` the
    /// cache does not know is `UnknownKey`: [`Verifier::verify_fresh`]
    /// fetches the set again first.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        match &self.keys {
            Keys::Fixed(key) => self.decode(token, key, &self.validation),
            Keys::Jwks(j) => {
                let kid = Self::kid(token)?;
                let k = j.cached(&kid).ok_or(AuthError::UnknownKey)?;
                self.decode_with(token, &k)
            }
        }
    }

    /// As [`Verifier::verify`], and with a JWKS, a `kid` it does not know
    /// sends for the key set again (at most once per `--jwks-min-refresh-secs`).
    pub async fn verify_fresh(&self, token: &str) -> Result<Identity, AuthError> {
        match (self.verify(token), &self.keys) {
            (Err(AuthError::UnknownKey), Keys::Jwks(j)) => {
                let kid = Self::kid(token.trim())?;
                let k = j.key(&kid).await.ok_or(AuthError::UnknownKey)?;
                self.decode_with(token.trim(), &k)
            }
            (result, _) => result,
        }
    }

    /// The token header's `kid`.
    fn kid(token: &str) -> Result<String, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        match header.kid {
            Some(kid) if !kid.is_empty() && kid.len() <= 256 => Ok(kid),
            _ => Err(AuthError::UnknownKey),
        }
    }

    fn decode_with(&self, token: &str, k: &jwks::Key) -> Result<Identity, AuthError> {
        let mut validation = self.validation.clone();
        validation.algorithms = vec![k.alg];
        self.decode(token, &k.key, &validation)
    }

    fn decode(
        &self,
        token: &str,
        key: &DecodingKey,
        validation: &Validation,
    ) -> Result<Identity, AuthError> {
        let data =
            jsonwebtoken::decode::<Claims>(token, key, validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAudience => AuthError::WrongAudience,
                ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
                ErrorKind::MissingRequiredClaim(c) => AuthError::MissingClaim(c.clone()),
                _ => AuthError::Malformed,
            })?;
        let c = data.claims;
        let sub_len = c.sub.chars().count();
        if sub_len == 0 || sub_len > 128 {
            return Err(AuthError::InvalidSubject);
        }
        let name = c.name.filter(|n| !n.is_empty()).unwrap_or(c.sub.clone());
        check_claim_sizes(&name, c.rooms.as_deref(), c.tenant.as_deref())?;
        Ok(Identity {
            user_id: c.sub,
            name,
            rooms: c.rooms,
            tenant: c.tenant,
            expires_at: c.exp,
        })
    }
}

/// Most room patterns a `rooms` claim may list.
pub const MAX_ROOM_PATTERNS: usize = 256;

/// Bounds the claims that are copied into every message and session: a
/// display name of at most 128 characters, at most 256 room patterns of at
/// most 128 characters, a tenant of at most 128.
fn check_claim_sizes(
    name: &str,
    rooms: Option<&[String]>,
    tenant: Option<&str>,
) -> Result<(), AuthError> {
    let max = crate::config::MAX_NAME_CHARS;
    if name.chars().count() > max {
        return Err(AuthError::ClaimTooLarge("name"));
    }
    if let Some(rooms) = rooms
        && (rooms.len() > MAX_ROOM_PATTERNS || rooms.iter().any(|r| r.chars().count() > max))
    {
        return Err(AuthError::ClaimTooLarge("rooms"));
    }
    if tenant.is_some_and(|t| t.chars().count() > max) {
        return Err(AuthError::ClaimTooLarge("tenant"));
    }
    Ok(())
}

/// Picks the token from, in order: the handshake `auth.token`, an
/// `Authorization: Bearer` header, the `token` query parameter.
pub fn find_token<'a>(
    auth: Option<&'a serde_json::Value>,
    authorization: Option<&'a str>,
    query: Option<&'a str>,
) -> Option<std::borrow::Cow<'a, str>> {
    if let Some(t) = auth.and_then(|a| a.get("token")).and_then(|t| t.as_str()) {
        return Some(t.into());
    }
    if let Some(h) = authorization {
        let h = h.trim();
        // `get`: the header may be cut inside a multi-byte character.
        if let (Some(scheme), Some(rest)) = (h.get(..7), h.get(7..))
            && !rest.is_empty()
            && scheme.eq_ignore_ascii_case("bearer ")
        {
            return Some(rest.trim().into());
        }
    }
    query.and_then(|q| {
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (k == "token").then(|| percent_decode(v))
        })
    })
}

/// Decodes `%XX` escapes (JWTs are URL-safe, but clients may still encode them).
pub(crate) fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') && !s.contains('+') {
        return s.into();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What goes into a minted token.
#[derive(Debug, Default, Clone)]
pub struct TokenSpec {
    pub sub: String,
    pub name: Option<String>,
    pub ttl_secs: u64,
    pub rooms: Option<Vec<String>>,
    pub tenant: Option<String>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

/// Mints an HS256 token (the `token` subcommand, dev mode, tests).
pub fn mint_hs256(secret: &[u8], spec: &TokenSpec) -> String {
    let now = now_secs();
    let claims = Claims {
        sub: spec.sub.clone(),
        name: spec.name.clone(),
        exp: now + spec.ttl_secs,
        iat: Some(now),
        nbf: None,
        iss: spec.issuer.clone(),
        aud: spec.audience.clone(),
        rooms: spec.rooms.clone(),
        tenant: spec.tenant.clone(),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 encoding of plain claims cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn percent_decoding_of_hostile_query_values() {
        // Pre-authentication input: a cut-off escape is kept as it came.
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("ab%4"), "ab%4");
        assert_eq!(percent_decode("ab%"), "ab%");
        assert_eq!(percent_decode("%zz1"), "%zz1");
        assert_eq!(percent_decode("%41%62+c"), "Ab c");
        assert_eq!(percent_decode("x%4"), "x%4");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
        assert_eq!(
            percent_decode("%ff"),
            "\u{fffd}",
            "invalid UTF-8 is replaced"
        );
        let q = Some("a=1&token=ab%4");
        assert_eq!(find_token(None, None, q).as_deref(), Some("ab%4"));
    }

    #[test]
    fn claim_sizes_are_bounded_at_the_edge() {
        let max = crate::config::MAX_NAME_CHARS;
        let long = "r".repeat(max + 1);
        let edge = "r".repeat(max);
        let ok = |name: &str, rooms: Option<Vec<String>>, tenant: Option<&str>| {
            check_claim_sizes(name, rooms.as_deref(), tenant)
        };
        assert!(ok(&edge, Some(vec![edge.clone()]), Some(&edge)).is_ok());
        assert!(matches!(
            ok(&long, None, None),
            Err(AuthError::ClaimTooLarge("name"))
        ));
        assert!(matches!(
            ok("n", Some(vec![long.clone()]), None),
            Err(AuthError::ClaimTooLarge("rooms"))
        ));
        let many = vec!["r".to_string(); MAX_ROOM_PATTERNS + 1];
        assert!(matches!(
            ok("n", Some(many), None),
            Err(AuthError::ClaimTooLarge("rooms"))
        ));
        assert!(ok("n", Some(vec!["r".to_string(); MAX_ROOM_PATTERNS]), None).is_ok());
        assert!(matches!(
            ok("n", None, Some(&long)),
            Err(AuthError::ClaimTooLarge("tenant"))
        ));
    }

    fn spec(sub: &str) -> TokenSpec {
        TokenSpec {
            sub: sub.into(),
            ttl_secs: 60,
            ..TokenSpec::default()
        }
    }

    #[test]
    fn round_trip() {
        let v = Verifier::hs256(SECRET, None, None);
        let before = now_secs();
        let id = v.verify(&mint_hs256(SECRET, &spec("alice"))).unwrap();
        assert_eq!(id.user_id, "alice");
        assert_eq!(id.name, "alice");
        // `ttl_secs` from now: dev-mode and `token` lifetimes are what they say.
        assert!((before + 60..=now_secs() + 60).contains(&id.expires_at));
    }

    #[test]
    fn refusals() {
        let v = Verifier::hs256(SECRET, Some("me"), Some("chat"));
        assert_eq!(v.verify(""), Err(AuthError::Missing));
        assert_eq!(v.verify("abc.def"), Err(AuthError::Malformed));
        let other = mint_hs256(
            b"another-secret-another-secret-xx",
            &TokenSpec {
                issuer: Some("me".into()),
                audience: Some("chat".into()),
                ..spec("a")
            },
        );
        assert_eq!(v.verify(&other), Err(AuthError::BadSignature));
        let wrong_iss = mint_hs256(
            SECRET,
            &TokenSpec {
                issuer: Some("you".into()),
                audience: Some("chat".into()),
                ..spec("a")
            },
        );
        assert_eq!(v.verify(&wrong_iss), Err(AuthError::WrongIssuer));
        let wrong_aud = mint_hs256(
            SECRET,
            &TokenSpec {
                issuer: Some("me".into()),
                audience: Some("other".into()),
                ..spec("a")
            },
        );
        assert_eq!(v.verify(&wrong_aud), Err(AuthError::WrongAudience));
    }

    #[test]
    fn room_patterns() {
        let id = Identity {
            user_id: "a".into(),
            name: "a".into(),
            rooms: Some(vec!["team-*".into(), "general".into()]),
            tenant: None,
            expires_at: 0,
        };
        assert!(id.may_join("team-red"));
        assert!(id.may_join("general"));
        assert!(!id.may_join("generalx"));
        assert!(!id.may_join("random"));
    }

    #[test]
    fn token_sources_in_order() {
        let auth = serde_json::json!({ "token": "A" });
        assert_eq!(
            find_token(Some(&auth), Some("Bearer B"), Some("token=C")).as_deref(),
            Some("A")
        );
        assert_eq!(
            find_token(None, Some("bearer B"), Some("token=C")).as_deref(),
            Some("B")
        );
        assert_eq!(
            find_token(None, None, Some("EIO=4&token=C%2Ed")).as_deref(),
            Some("C.d")
        );
        assert_eq!(find_token(None, Some("Basic x"), Some("EIO=4")), None);
        // Found by tests/fuzz.rs: a cut inside a character panicked.
        assert_eq!(find_token(None, Some("bearer\u{e9}x"), None), None);
    }

    /// A token with exactly these claims, signed with `SECRET` and `alg`.
    fn signed(claims: serde_json::Value, alg: Algorithm) -> String {
        jsonwebtoken::encode(
            &Header::new(alg),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn each_refusal_says_why() {
        let v = Verifier::hs256(SECRET, None, None);
        let now = now_secs();
        let late = now - LEEWAY_SECS - 60;
        let expired = signed(
            serde_json::json!({ "sub": "a", "exp": late }),
            Algorithm::HS256,
        );
        assert_eq!(v.verify(&expired), Err(AuthError::Expired));
        let early = serde_json::json!({ "sub": "a", "exp": now + 600, "nbf": now + 300 });
        assert_eq!(
            v.verify(&signed(early, Algorithm::HS256)),
            Err(AuthError::NotYetValid)
        );
        let other_alg = signed(
            serde_json::json!({ "sub": "a", "exp": now + 600 }),
            Algorithm::HS384,
        );
        assert_eq!(v.verify(&other_alg), Err(AuthError::WrongAlgorithm));
        // A server with --jwt-audience needs the claim, not only a match.
        let with_aud = Verifier::hs256(SECRET, None, Some("chat"));
        let no_aud = signed(
            serde_json::json!({ "sub": "a", "exp": now + 600 }),
            Algorithm::HS256,
        );
        assert_eq!(
            with_aud.verify(&no_aud),
            Err(AuthError::MissingClaim("aud".into()))
        );
    }

    #[test]
    fn the_subject_is_1_to_128_characters_and_names_default_to_it() {
        let v = Verifier::hs256(SECRET, None, None);
        let exp = now_secs() + 600;
        let with = |sub: &str, name: &str| {
            v.verify(&signed(
                serde_json::json!({ "sub": sub, "name": name, "exp": exp }),
                Algorithm::HS256,
            ))
        };
        assert_eq!(with("", "n"), Err(AuthError::InvalidSubject));
        assert_eq!(with(&"é".repeat(129), "n"), Err(AuthError::InvalidSubject));
        assert_eq!(
            with(&"é".repeat(128), "n").unwrap().user_id,
            "é".repeat(128)
        );
        assert_eq!(with("bob", "").unwrap().name, "bob");
        assert_eq!(with("bob", "Bob").unwrap().name, "Bob");
    }

    #[test]
    fn a_tenant_token_opens_its_own_namespace_only() {
        let mut id = Identity {
            user_id: "a".into(),
            name: "a".into(),
            rooms: None,
            tenant: None,
            expires_at: 0,
        };
        assert!(id.may_open("/") && id.may_open("/acme"));
        id.tenant = Some("acme".into());
        assert!(id.may_open("/acme"));
        assert!(!id.may_open("/"));
        assert!(!id.may_open("/acme2"));
        assert!(!id.may_open("acme"));
    }

    #[test]
    fn plus_signs_alone_are_decoded_too() {
        assert_eq!(percent_decode("a+b"), "a b");
        assert_eq!(percent_decode("plain"), "plain");
    }
}
