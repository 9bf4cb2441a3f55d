//! Keys from a JWKS URL (`--jwks-url`): an identity provider's published
//! key set (Auth0, Keycloak, Cognito, Firebase, Clerk, ...), picked by the
//! token's `kid`, cached, and refreshed on a schedule and when a token names
//! a `kid` the cache does not know, at most once per `min_refresh`, so that
//! forged `kid`s cannot make the server hammer the provider. While the
//! provider is down the cached keys keep working; `/readyz` and
//! `switchboard_jwks_refreshes_total` show it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};

/// Largest key set read (a provider's has a handful of keys).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;
/// Most keys kept from one set.
pub const MAX_KEYS: usize = 64;

/// A usable verification key.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub alg: Algorithm,
}

/// The algorithm a JWK is for: its `alg`, else what its type and curve say.
/// Symmetric keys and encryption keys are never used.
fn algorithm(jwk: &Jwk) -> Option<Algorithm> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return None;
    }
    let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (_, AlgorithmParameters::OctetKey(_)) => return None,
        (Some(a), _) => match a {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            KeyAlgorithm::ES256 => Algorithm::ES256,
            KeyAlgorithm::ES384 => Algorithm::ES384,
            KeyAlgorithm::EdDSA => Algorithm::EdDSA,
            _ => return None,
        },
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
    };
    Some(alg)
}

/// The keys of a JWKS document, by `kid`: keys without a `kid`, of other
/// uses, symmetric or unreadable are left out (one bad key does not spoil
/// the set). `None` when the document is not a key set at all.
pub fn parse(body: &[u8]) -> Option<HashMap<String, Key>> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).ok()?;
    let mut keys = HashMap::new();
    for v in set.keys.into_iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(v) else {
            continue;
        };
        let (Some(kid), Some(alg)) = (jwk.common.key_id.clone(), algorithm(&jwk)) else {
            continue;
        };
        if let Ok(key) = DecodingKey::from_jwk(&jwk) {
            keys.insert(kid, Key { key, alg });
        }
    }
    Some(keys)
}

/// The cached key set of one URL.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    keys: RwLock<HashMap<String, Key>>,
    /// When the last fetch started (refreshes on unknown `kid`s are spaced).
    last_fetch: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    min_refresh: Duration,
    pub interval: Duration,
    /// The last fetch failed (the cached keys are still used).
    failing: AtomicBool,
    last_error: Mutex<Option<String>>,
}

impl Jwks {
    pub fn new(url: &str, interval: Duration, min_refresh: Duration) -> Arc<Jwks> {
        Arc::new(Jwks {
            url: url.to_string(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .connect_timeout(Duration::from_secs(3))
                .build()
                .expect("an HTTP client"),
            keys: RwLock::new(HashMap::new()),
            last_fetch: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            min_refresh,
            interval,
            failing: AtomicBool::new(false),
            last_error: Mutex::new(None),
        })
    }

    /// The cached key named `kid`.
    pub fn cached(&self, kid: &str) -> Option<Key> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    pub fn key_count(&self) -> usize {
        self.keys.read().map(|k| k.len()).unwrap_or(0)
    }

    /// `None` when the last fetch worked; else why it did not.
    pub fn problem(&self) -> Option<String> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        self.last_error.lock().ok()?.clone()
    }

    /// The key named `kid`, fetching the set again if it is not cached and
    /// the last fetch is older than `min_refresh`.
    pub async fn key(&self, kid: &str) -> Option<Key> {
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        let _one = self.fetching.lock().await;
        // Another fetch may have brought it meanwhile.
        if let Some(k) = self.cached(kid) {
            return Some(k);
        }
        let recent = self
            .last_fetch
            .lock()
            .ok()
            .and_then(|l| *l)
            .is_some_and(|t| t.elapsed() < self.min_refresh);
        if recent {
            crate::metrics::jwks_refresh("skipped");
            return None;
        }
        let _ = self.fetch_now().await;
        self.cached(kid)
    }

    /// Fetches the set and replaces the cache with it (keys no longer
    /// published stop working). On failure the cache is kept.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one = self.fetching.lock().await;
        self.fetch_now().await
    }

    async fn fetch_now(&self) -> Result<usize, String> {
        if let Ok(mut l) = self.last_fetch.lock() {
            *l = Some(Instant::now());
        }
        let result = self.download().await;
        match &result {
            Ok(n) => {
                crate::metrics::jwks_refresh("ok");
                crate::metrics::jwks_keys(*n);
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(url = self.url, keys = n, "JWKS reachable again");
                }
            }
            Err(e) => {
                crate::metrics::jwks_refresh("error");
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = self.url,
                        "JWKS fetch failed, keeping the cached keys: {e}"
                    );
                }
                if let Ok(mut l) = self.last_error.lock() {
                    *l = Some(e.clone());
                }
            }
        }
        result
    }

    async fn download(&self) -> Result<usize, String> {
        let mut res = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            body.extend_from_slice(&chunk);
            if body.len() > MAX_JWKS_BYTES {
                return Err(format!("key set larger than {MAX_JWKS_BYTES} bytes"));
            }
        }
        let keys = parse(&body).ok_or("not a JWKS document")?;
        if keys.is_empty() {
            return Err("no usable key in the set".into());
        }
        let n = keys.len();
        if let Ok(mut k) = self.keys.write() {
            *k = keys;
        }
        Ok(n)
    }

    /// Refreshes on the schedule, for the life of the process.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            let _ = self.refresh().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sets() {
        let set = br#"{"keys":[
            {"kty":"RSA","kid":"r1","use":"sig","alg":"RS256","e":"AQAB","n":"sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"},
            {"kty":"oct","kid":"h1","k":"c2VjcmV0"},
            {"kty":"EC","kid":"e1","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty":"RSA","kid":"enc","use":"enc","e":"AQAB","n":"sXch"},
            {"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
            {"kty":"whatever","kid":"w"}
        ]}"#;
        let keys = parse(set).unwrap();
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(
            kids,
            ["e1", "r1"],
            "no kid, oct, enc and unknown kinds are left out"
        );
        assert_eq!(keys["r1"].alg, Algorithm::RS256);
        assert_eq!(keys["e1"].alg, Algorithm::ES256);
        assert!(parse(b"[]").is_none());
        assert!(parse(b"{\"keys\":[]}").unwrap().is_empty());
    }
}
