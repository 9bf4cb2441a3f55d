//! Namespace patterns: `--namespace /t-{name}` opens every namespace that
//! matches (a child namespace per tenant), and the HTTP API, SSE and the
//! emitter check a namespace against the same patterns.

/// Whether namespace `ns` matches configured namespace `pattern`, where a
/// `{name}` part stands for one path segment piece.
pub fn pattern_matches(pattern: &str, ns: &str) -> bool {
    match (pattern.find('{'), pattern.find('}')) {
        (Some(open), Some(close)) if open < close => {
            let (prefix, suffix) = (&pattern[..open], &pattern[close + 1..]);
            ns.len() > prefix.len() + suffix.len()
                && ns.starts_with(prefix)
                && ns.ends_with(suffix)
                && !ns[prefix.len()..ns.len() - suffix.len()].contains('/')
        }
        _ => pattern == ns,
    }
}

#[cfg(test)]
mod tests {
    use super::pattern_matches;

    #[test]
    fn namespace_patterns() {
        assert!(pattern_matches("/acme", "/acme"));
        assert!(!pattern_matches("/acme", "/acme2"));
        assert!(pattern_matches("/t-{name}", "/t-red"));
        assert!(!pattern_matches("/t-{name}", "/t-"));
        assert!(!pattern_matches("/t-{name}", "/t-a/b"));
        assert!(pattern_matches("/org/{id}/chat", "/org/7/chat"));
    }
}
