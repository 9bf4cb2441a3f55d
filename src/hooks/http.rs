//! The hooks as HTTP calls to the backend (`--join-hook-url`,
//! `--publish-hook-url`, `--rpc-hook-url`): JSON in, JSON out, each with
//! `--hook-timeout-ms`, signed like webhooks when `--webhook-secret` is set,
//! answers bounded to [`MAX_ANSWER_BYTES`], a circuit breaker per hook, and
//! join answers cached for `--join-hook-cache-secs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::{Value, json};

use super::breaker::Breaker;
use super::{HookError, Hooks, RpcAnswer, Target, Verdict, clean_code, clean_message};

/// Largest answer read from a hook.
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Failures in a row that open a hook's circuit, and how long it stays open.
pub const BREAKER_FAILURES: u32 = 5;
pub const BREAKER_COOL_DOWN: Duration = Duration::from_secs(5);
/// Most join answers cached.
pub const MAX_CACHED_JOINS: usize = 100_000;

#[derive(Debug, Clone, Default)]
pub struct HttpHooksConfig {
    pub join_url: Option<String>,
    pub publish_url: Option<String>,
    pub rpc_url: Option<String>,
    pub rpc_prefix: String,
    pub timeout: Duration,
    pub join_cache: Duration,
    pub join_fail_open: bool,
    pub publish_fail_open: bool,
    pub secret: Option<String>,
}

#[derive(Clone, Copy)]
enum Which {
    Join,
    Publish,
    Rpc,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Join => "join",
            Which::Publish => "publish",
            Which::Rpc => "rpc",
        }
    }
}

type JoinKey = (String, String, String);

pub struct HttpHooks {
    config: HttpHooksConfig,
    client: reqwest::Client,
    breakers: [Mutex<Breaker>; 3],
    joins: Mutex<HashMap<JoinKey, (Verdict, Instant)>>,
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: what a
/// receiver checks (docs/http-api.md shows how).
pub fn signature(secret: &str, t: u64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={t},v1={hex}")
}

impl HttpHooks {
    /// `None` when no hook URL is set.
    pub fn new(config: HttpHooksConfig) -> Option<HttpHooks> {
        if config.join_url.is_none() && config.publish_url.is_none() && config.rpc_url.is_none() {
            return None;
        }
        let breaker = || Mutex::new(Breaker::new(BREAKER_FAILURES, BREAKER_COOL_DOWN));
        Some(HttpHooks {
            client: reqwest::Client::builder()
                .timeout(config.timeout)
                .build()
                .expect("an HTTP client"),
            config,
            breakers: [breaker(), breaker(), breaker()],
            joins: Mutex::new(HashMap::new()),
        })
    }

    fn breaker(&self, which: Which) -> std::sync::MutexGuard<'_, Breaker> {
        self.breakers[which as usize]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// POSTs `body` to the hook and reads its JSON answer.
    async fn call(&self, which: Which, url: &str, body: Value) -> Result<Value, HookError> {
        if !self.breaker(which).allow(Instant::now()) {
            crate::metrics::hook_call(which.name(), "circuit_open", None);
            return Err(HookError(format!(
                "{} hook unavailable (circuit open)",
                which.name()
            )));
        }
        let started = Instant::now();
        let result = self.post(url, body).await;
        let took = started.elapsed();
        match &result {
            Ok(_) => self.breaker(which).success(),
            Err(_) => self.breaker(which).failure(Instant::now()),
        }
        let outcome = if result.is_ok() { "answered" } else { "failed" };
        crate::metrics::hook_call(which.name(), outcome, Some(took));
        result.map_err(|e| HookError(format!("{} hook: {e}", which.name())))
    }

    async fn post(&self, url: &str, body: Value) -> Result<Value, String> {
        let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
        let mut req = self
            .client
            .post(url)
            .header("content-type", "application/json");
        if let Some(secret) = &self.config.secret {
            let t = crate::auth::now_secs();
            req = req.header("x-switchboard-signature", signature(secret, t, &body));
        }
        let mut res = req.body(body).send().await.map_err(|e| {
            if e.is_timeout() {
                "no answer in time".to_string()
            } else {
                e.to_string()
            }
        })?;
        if !res.status().is_success() {
            return Err(format!("HTTP {}", res.status().as_u16()));
        }
        let mut answer = Vec::new();
        while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
            answer.extend_from_slice(&chunk);
            if answer.len() > MAX_ANSWER_BYTES {
                return Err(format!("answer larger than {MAX_ANSWER_BYTES} bytes"));
            }
        }
        serde_json::from_slice(&answer).map_err(|_| "answer is not JSON".to_string())
    }

    /// Reads `{ allow, content?, code?, message? }`.
    fn verdict(answer: &Value, may_replace: bool) -> Result<Verdict, HookError> {
        match answer.get("allow").and_then(Value::as_bool) {
            Some(true) => match answer.get("content") {
                None | Some(Value::Null) => Ok(Verdict::Allow),
                Some(Value::String(c)) if may_replace => Ok(Verdict::Replace(c.clone())),
                Some(_) => Err(HookError("hook answer: content must be a string".into())),
            },
            Some(false) => Ok(Verdict::Refuse {
                code: clean_code(answer.get("code").and_then(Value::as_str)),
                message: clean_message(
                    answer.get("message").and_then(Value::as_str),
                    "refused by the server's backend",
                ),
            }),
            None => Err(HookError("hook answer has no boolean `allow`".into())),
        }
    }
}

#[async_trait]
impl Hooks for HttpHooks {
    async fn join(&self, ns: &str, user: &str, room: &str) -> Result<Verdict, HookError> {
        let Some(url) = &self.config.join_url else {
            return Ok(Verdict::Allow);
        };
        let key = (ns.to_string(), user.to_string(), room.to_string());
        if let Some((v, at)) = self.joins.lock().ok().and_then(|j| j.get(&key).cloned())
            && at.elapsed() < self.config.join_cache
        {
            return Ok(v);
        }
        let answer = self
            .call(
                Which::Join,
                url,
                json!({ "namespace": ns, "userId": user, "roomId": room }),
            )
            .await?;
        let v = Self::verdict(&answer, false)?;
        if !self.config.join_cache.is_zero()
            && let Ok(mut joins) = self.joins.lock()
        {
            if joins.len() >= MAX_CACHED_JOINS {
                let ttl = self.config.join_cache;
                joins.retain(|_, (_, at)| at.elapsed() < ttl);
                if joins.len() >= MAX_CACHED_JOINS {
                    joins.clear();
                }
            }
            joins.insert(key, (v.clone(), Instant::now()));
        }
        Ok(v)
    }

    async fn publish(
        &self,
        ns: &str,
        user: &str,
        target: Target<'_>,
        content: &str,
    ) -> Result<Verdict, HookError> {
        let Some(url) = &self.config.publish_url else {
            return Ok(Verdict::Allow);
        };
        let mut body = json!({ "namespace": ns, "userId": user, "content": content });
        match target {
            Target::Room(r) => body["roomId"] = json!(r),
            Target::User(u) => body["toUser"] = json!(u),
        }
        let answer = self.call(Which::Publish, url, body).await?;
        Self::verdict(&answer, true)
    }

    fn rpc_prefix(&self) -> Option<&str> {
        self.config
            .rpc_url
            .as_ref()
            .map(|_| self.config.rpc_prefix.as_str())
    }

    async fn rpc(
        &self,
        ns: &str,
        user: &str,
        event: &str,
        data: &Value,
    ) -> Result<RpcAnswer, HookError> {
        let Some(url) = &self.config.rpc_url else {
            return Err(HookError("no rpc hook".into()));
        };
        let answer = self
            .call(
                Which::Rpc,
                url,
                json!({ "namespace": ns, "userId": user, "event": event, "data": data }),
            )
            .await?;
        if let Some(result) = answer.get("result") {
            return Ok(RpcAnswer::Result(result.clone()));
        }
        if let Some(err) = answer.get("error") {
            return Ok(RpcAnswer::Error {
                code: clean_code(err.get("code").and_then(Value::as_str)),
                message: clean_message(err.get("message").and_then(Value::as_str), "refused"),
            });
        }
        Err(HookError(
            "rpc hook answer has neither `result` nor `error`".into(),
        ))
    }

    fn join_fails_open(&self) -> bool {
        self.config.join_fail_open
    }

    fn publish_fails_open(&self) -> bool {
        self.config.publish_fail_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stripe_style() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently.
        let s = signature("secret", 1_700_000_000, b"{}");
        assert_eq!(
            s,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(s, signature("secret", 1_700_000_001, b"{}"));
        assert_ne!(s, signature("other", 1_700_000_000, b"{}"));
    }

    #[test]
    fn verdicts() {
        let v = |a: Value, r| HttpHooks::verdict(&a, r);
        assert_eq!(v(json!({"allow": true}), true), Ok(Verdict::Allow));
        assert_eq!(
            v(json!({"allow": true, "content": "***"}), true),
            Ok(Verdict::Replace("***".into()))
        );
        assert!(v(json!({"allow": true, "content": 5}), true).is_err());
        assert!(v(json!({"allow": true, "content": "x"}), false).is_err());
        assert_eq!(
            v(
                json!({"allow": false, "code": "banned", "message": "no"}),
                true
            ),
            Ok(Verdict::Refuse {
                code: "banned".into(),
                message: "no".into()
            })
        );
        assert!(v(json!({"allowed": true}), true).is_err());
        assert!(v(json!("yes"), true).is_err());
    }
}
