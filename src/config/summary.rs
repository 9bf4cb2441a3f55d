//! What the server says about itself at start: one line with the effective
//! configuration (no secrets), and a warning for each choice that would
//! otherwise surprise a newcomer later as a 503 or a failed CORS preflight.

use crate::config::Config;

/// The effective configuration as `key=value` pairs, secrets left out.
pub fn summary(config: &Config) -> String {
    let auth = if config.jwks_url.is_some() {
        "jwks".to_string()
    } else if config.jwt_secret.is_some() {
        "HS256".to_string()
    } else if let Some(alg) = config.jwt_algorithm {
        format!("{alg:?}")
    } else if config.jwt_public_key.is_some() {
        "public-key".to_string()
    } else {
        "dev-mode".to_string()
    };
    let adapter = match &config.redis_url {
        Some(url) => format!("redis({}, prefix {})", redact(url), config.redis_prefix),
        None => "local".to_string(),
    };
    let namespaces = std::iter::once("/".to_string())
        .chain(config.namespaces.iter().cloned())
        .collect::<Vec<_>>()
        .join(",");
    let api = if config.api_key.is_some() || config.dev_mode() {
        "on"
    } else {
        "off"
    };
    let cors = if !config.cors_origins.is_empty() {
        config.cors_origins.join(",")
    } else if config.dev_mode() {
        "any (dev mode)".to_string()
    } else {
        "none".to_string()
    };
    format!(
        "listen={} auth={auth} store={} adapter={adapter} namespaces={namespaces} api={api} cors={cors} \
         max_payload_bytes={} max_connections={} max_connections_per_ip={} header_timeout_ms={} \
         connect_timeout_ms={} messages_per_sec={}/{} address_messages_per_sec={}/{} events_per_sec={}/{} max_rooms_per_socket={} \
         max_connections_per_user={} body_timeout_ms={} \
         private_recipients={} max_doc_bytes={} max_doc_op_bytes={} max_doc_memory_bytes={} parser={}",
        config.listen,
        redact(&config.database_url),
        config.max_payload_bytes,
        match config.max_connections {
            0 => "auto".to_string(),
            n => n.to_string(),
        },
        config.max_connections_per_ip,
        config.header_timeout_ms,
        config.connect_timeout_ms,
        config.messages_per_sec,
        config.message_burst,
        config.address_messages_per_sec,
        config.address_message_burst,
        config.events_per_sec,
        config.event_burst,
        config.max_rooms_per_socket,
        config.max_connections_per_user,
        config.body_timeout_ms,
        flag_value(&config.private_recipients),
        config.max_doc_bytes,
        config.max_doc_op_bytes,
        config.max_doc_memory_bytes,
        flag_value(&config.parser),
    )
}

/// A choice as it is written on the command line (`any`, `msgpack`).
fn flag_value<T: clap::ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().to_string())
        .unwrap_or_default()
}

/// The surprises worth a warning (none in dev mode, which allows all).
pub fn warnings(config: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if config.dev_mode() {
        return out;
    }
    if config.api_key.is_none() {
        out.push("the backend HTTP API is off: /api answers 503 until --api-key is set");
    }
    if config.cors_origins.is_empty() {
        out.push(
            "no --cors-origin: browsers on other origins are refused (same-origin pages and non-browser clients work)",
        );
    }
    out
}

/// A URL with its password replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let shown = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        user.to_string()
    };
    format!("{scheme}://{shown}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/chat"),
            "postgres://app:***@db:5432/chat"
        );
        assert_eq!(redact("redis://:pw@r:6379"), "redis://:***@r:6379");
        assert_eq!(redact("redis://r:6379"), "redis://r:6379");
        assert_eq!(
            redact("sqlite://./switchboard.db"),
            "sqlite://./switchboard.db"
        );
        assert_eq!(redact("postgres://u@h/db?x=a@b"), "postgres://u@h/db?x=a@b");
    }

    #[test]
    fn the_summary_keeps_secrets_out_and_says_what_is_off() {
        let config = Config {
            jwt_secret: Some("a-very-secret-secret-of-32-bytes!!".into()),
            api_key: None,
            database_url: "postgres://app:pw@db/chat".into(),
            redis_url: Some("redis://:redispw@r:6379".into()),
            ..Config::default()
        };
        let s = summary(&config);
        for secret in ["a-very-secret", "pw@", "redispw"] {
            assert!(!s.contains(secret), "{secret} in {s}");
        }
        assert!(
            s.contains("api=off") && s.contains("cors=none") && s.contains("auth=HS256"),
            "{s}"
        );
        // Choices as they are written on the command line.
        assert!(
            s.contains("private_recipients=any") && s.contains("parser=json"),
            "{s}"
        );
        assert_eq!(warnings(&config).len(), 2);
        let with_all = Config {
            api_key: Some("k".into()),
            cors_origins: vec!["https://a.example".into()],
            ..config
        };
        assert!(warnings(&with_all).is_empty());
        assert!(summary(&with_all).contains("api=on"));
    }
}
