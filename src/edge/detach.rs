//! Copies a request's URI and headers out of hyper's read buffer, and keeps
//! of a Socket.IO handshake only what the server reads later.
//!
//! hyper parses a request without copying: the URI and every header value
//! are slices of its connection read buffer (8 KiB). engineioxide keeps the
//! request's parts for the whole life of a Socket.IO session, so those slices
//! kept the whole buffer alive: 8 KiB per idle websocket, the largest single
//! part of its memory. Copying the few hundred bytes that matter frees it.
//! axum's router adds a clone of the URI (`OriginalUri`) before any layer
//! runs; that clone is replaced too. Long-polling requests of an existing
//! session are not kept, so they are passed through without the copy.
//!
//! Even copied, a browser's headers (user agent, languages, cookies) and the
//! request's extensions cost 1.4–3.4 KiB per session, read by nothing but the
//! Admin UI's socket list. So unless the Admin UI is on (`Keep::All`), a
//! Socket.IO handshake keeps only the URI (the `token` query parameter), the
//! `Authorization` header, the websocket key engineioxide answers, and the
//! extensions the server reads: the client's address, its connection's
//! handle, and hyper's pending upgrade.

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri, header};

use crate::edge::conn_limits::ClientAddr;
use crate::edge::guarded_io::ConnHandle;

/// How much of a Socket.IO handshake's request is kept for its session.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Keep {
    /// Every header and extension: the Admin UI shows a socket's handshake.
    All,
    /// What the server reads later (see the module's comment).
    Used,
}

/// The headers a Socket.IO session's request keeps under `Keep::Used`.
const USED_HEADERS: [HeaderName; 2] = [header::AUTHORIZATION, header::SEC_WEBSOCKET_KEY];

/// Replaces the URI and header values with owned copies; extensions (the
/// pending upgrade among them) and the body are kept as they are, or under
/// `Keep::Used`, a Socket.IO handshake's are cut to what is read later.
pub fn detach_request(req: Request, keep: Keep) -> Request {
    if is_session_poll(req.uri()) {
        return req;
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = copy_uri(&parts.uri);
    if keep == Keep::Used && is_engine_request(&parts.uri) {
        parts.headers = copy_headers(&parts.headers, |name| USED_HEADERS.contains(name));
        parts.extensions = used_extensions(&mut parts.extensions);
    } else {
        if let Some(OriginalUri(original)) = parts.extensions.get_mut::<OriginalUri>() {
            *original = copy_uri(original);
        }
        parts.headers = copy_headers(&parts.headers, |_| true);
    }
    Request::from_parts(parts, body)
}

/// A request to the Engine.IO endpoint, whose parts a session keeps: the
/// path test engineioxide itself makes (`/socket.io`, alone or followed by
/// `/…`).
fn is_engine_request(uri: &Uri) -> bool {
    uri.path()
        .strip_prefix("/socket.io")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// A polling GET or POST of a session that exists (`sid` given): engineioxide
/// only reads it. Handshakes and websocket upgrades keep their request.
fn is_session_poll(uri: &Uri) -> bool {
    let query = uri.query().unwrap_or("");
    let has = |pair: &str| query.split('&').any(|p| p == pair);
    has("transport=polling") && query.split('&').any(|p| p.starts_with("sid="))
}

fn copy_uri(uri: &Uri) -> Uri {
    // `Uri::try_from(String)` takes the string's own allocation.
    Uri::try_from(uri.to_string()).unwrap_or_else(|_| uri.clone())
}

fn copy_headers(headers: &HeaderMap, keep: impl Fn(&HeaderName) -> bool) -> HeaderMap {
    // Sized to fit: grown from empty, a map of two headers reserves six.
    let kept = headers.keys().filter(|name| keep(name)).count();
    let mut out = HeaderMap::with_capacity(kept);
    for (name, value) in headers.iter().filter(|(name, _)| keep(name)) {
        // `from_bytes` copies; the value was valid, so this cannot fail.
        if let Ok(mut v) = HeaderValue::from_bytes(value.as_bytes()) {
            v.set_sensitive(value.is_sensitive());
            out.append(name.clone(), v);
        }
    }
    out
}

/// The extensions a session reads later, moved out of `from`: the client's
/// address (`realtime::admit`), its connection's handle (`realtime::slow`)
/// and hyper's pending upgrade (engineioxide awaits it).
fn used_extensions(from: &mut axum::http::Extensions) -> axum::http::Extensions {
    let mut out = axum::http::Extensions::new();
    if let Some(upgrade) = from.remove::<hyper::upgrade::OnUpgrade>() {
        out.insert(upgrade);
    }
    if let Some(addr) = from.remove::<ClientAddr>() {
        out.insert(addr);
    }
    if let Some(handle) = from.remove::<ConnHandle>() {
        out.insert(handle);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn copies_do_not_share_the_original_buffer() {
        let buf = Bytes::from_static(b"/socket.io/?EIO=4&transport=websocket&token=abc");
        let uri = Uri::from_maybe_shared(buf.clone()).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
        let req = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .unwrap();
        let (mut parts, body) = req.into_parts();
        parts.headers = headers;
        parts.extensions.insert(OriginalUri(parts.uri.clone()));
        let out = detach_request(Request::from_parts(parts, body), Keep::All);
        assert_eq!(
            out.uri().query(),
            Some("EIO=4&transport=websocket&token=abc")
        );
        assert_eq!(out.headers()["authorization"], "Bearer abc");
        let q = out.uri().path_and_query().unwrap().as_str().as_ptr();
        assert!(
            !buf.as_ptr_range().contains(&q),
            "the URI still points into the read buffer"
        );
        let OriginalUri(original) = out.extensions().get::<OriginalUri>().unwrap();
        let q = original.path_and_query().unwrap().as_str().as_ptr();
        assert!(
            !buf.as_ptr_range().contains(&q),
            "OriginalUri still points into the read buffer"
        );
    }

    #[test]
    fn a_handshake_keeps_only_what_is_read_later_unless_the_admin_ui_is_on() {
        let handshake = || {
            let mut req = Request::builder()
                .uri("/socket.io/?EIO=4&transport=websocket&token=abc")
                .header("authorization", "Bearer abc")
                .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
                .header(
                    "user-agent",
                    "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0.0.0",
                )
                .header("cookie", "session=0123456789abcdef; theme=dark")
                .body(axum::body::Body::empty())
                .unwrap();
            let uri = req.uri().clone();
            req.extensions_mut().insert(OriginalUri(uri));
            req.extensions_mut()
                .insert(ClientAddr("192.0.2.7".parse().unwrap()));
            req
        };
        let out = detach_request(handshake(), Keep::Used);
        let mut kept: Vec<&str> = out.headers().keys().map(|k| k.as_str()).collect();
        kept.sort();
        assert_eq!(kept, ["authorization", "sec-websocket-key"]);
        assert_eq!(
            out.uri().query(),
            Some("EIO=4&transport=websocket&token=abc")
        );
        assert_eq!(
            out.extensions()
                .get::<ClientAddr>()
                .map(|a| a.0.to_string()),
            Some("192.0.2.7".to_string())
        );
        assert!(out.extensions().get::<OriginalUri>().is_none());

        let out = detach_request(handshake(), Keep::All);
        assert_eq!(out.headers().len(), 4);
        assert!(out.extensions().get::<OriginalUri>().is_some());

        // The engine's path without its slash is the engine's too.
        let mut req = handshake();
        *req.uri_mut() = "/socket.io?EIO=4&transport=websocket".parse().unwrap();
        assert_eq!(detach_request(req, Keep::Used).headers().len(), 2);

        // Other routes (the Yjs and plain websockets need every upgrade
        // header) keep everything.
        for path in ["/ws?token=abc", "/socket.iox/?EIO=4"] {
            let mut req = handshake();
            *req.uri_mut() = path.parse().unwrap();
            assert_eq!(detach_request(req, Keep::Used).headers().len(), 4, "{path}");
        }
    }

    #[test]
    fn polls_of_an_existing_session_pass_through() {
        let buf = Bytes::from_static(b"/socket.io/?EIO=4&transport=polling&sid=abc");
        let req = Request::builder()
            .uri(Uri::from_maybe_shared(buf.clone()).unwrap())
            .body(axum::body::Body::empty())
            .unwrap();
        let out = detach_request(req, Keep::Used);
        let q = out.uri().path_and_query().unwrap().as_str().as_ptr();
        assert!(buf.as_ptr_range().contains(&q), "a session poll was copied");
        // The handshake of a polling session is kept by engineioxide: copied.
        let buf = Bytes::from_static(b"/socket.io/?EIO=4&transport=polling");
        let req = Request::builder()
            .uri(Uri::from_maybe_shared(buf.clone()).unwrap())
            .body(axum::body::Body::empty())
            .unwrap();
        let q = detach_request(req, Keep::Used)
            .uri()
            .path_and_query()
            .unwrap()
            .as_str()
            .as_ptr();
        assert!(!buf.as_ptr_range().contains(&q));
    }
}
