//! Copies a request's URI and headers out of hyper's read buffer.
//!
//! hyper parses a request without copying: the URI and every header value
//! are slices of its connection read buffer (8 KiB). engineioxide keeps the
//! request's parts for the whole life of a Socket.IO session, so those slices
//! kept the whole buffer alive: 8 KiB per idle websocket, the largest single
//! part of its memory. Copying the few hundred bytes that matter frees it.
//! axum's router adds a clone of the URI (`OriginalUri`) before any layer
//! runs; that clone is replaced too. Long-polling requests of an existing
//! session are not kept, so they are passed through without the copy.

use axum::extract::{OriginalUri, Request};
use axum::http::{HeaderMap, HeaderValue, Uri};

/// Replaces the URI and header values with owned copies; extensions (the
/// pending upgrade among them) and the body are kept as they are.
pub fn detach_request(req: Request) -> Request {
    if is_session_poll(req.uri()) {
        return req;
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = copy_uri(&parts.uri);
    if let Some(OriginalUri(original)) = parts.extensions.get_mut::<OriginalUri>() {
        *original = copy_uri(original);
    }
    parts.headers = copy_headers(&parts.headers);
    Request::from_parts(parts, body)
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

fn copy_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        // `from_bytes` copies; the value was valid, so this cannot fail.
        if let Ok(mut v) = HeaderValue::from_bytes(value.as_bytes()) {
            v.set_sensitive(value.is_sensitive());
            out.append(name.clone(), v);
        }
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
        let out = detach_request(Request::from_parts(parts, body));
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
    fn polls_of_an_existing_session_pass_through() {
        let buf = Bytes::from_static(b"/socket.io/?EIO=4&transport=polling&sid=abc");
        let req = Request::builder()
            .uri(Uri::from_maybe_shared(buf.clone()).unwrap())
            .body(axum::body::Body::empty())
            .unwrap();
        let out = detach_request(req);
        let q = out.uri().path_and_query().unwrap().as_str().as_ptr();
        assert!(buf.as_ptr_range().contains(&q), "a session poll was copied");
        // The handshake of a polling session is kept by engineioxide: copied.
        let buf = Bytes::from_static(b"/socket.io/?EIO=4&transport=polling");
        let req = Request::builder()
            .uri(Uri::from_maybe_shared(buf.clone()).unwrap())
            .body(axum::body::Body::empty())
            .unwrap();
        let q = detach_request(req)
            .uri()
            .path_and_query()
            .unwrap()
            .as_str()
            .as_ptr();
        assert!(!buf.as_ptr_range().contains(&q));
    }
}
