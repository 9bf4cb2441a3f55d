//! `--static-dir`: a directory of files (the demo page in `examples/web`,
//! or an app's own front end) served at `/` beside the server's routes.
//!
//! The files are not a fallback of the server's router: a fallback there
//! made socketioxide's layer wrap two services, and the requests of one
//! long-polling session reached different engine.io instances (see
//! `http/mod.rs`). Instead a router outside the whole server picks by path:
//! the server's own paths go to it untouched, everything else to the
//! directory. So no file can shadow `/socket.io`, `/api` and the rest, and
//! without the flag nothing changes at all.

use std::path::Path;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Paths that belong to the server, whatever the directory holds. Each is
/// matched as whole path segments: `/api` and `/api/emit`, not `/apiary`.
const SERVER_PATHS: [&str; 7] = [
    "/socket.io",
    "/api",
    "/events",
    "/healthz",
    "/readyz",
    "/metrics",
    "/dev/token",
];

/// Whether `path` is one of the server's own (see [`SERVER_PATHS`]).
pub fn is_server_path(path: &str) -> bool {
    SERVER_PATHS.iter().any(|p| {
        path.strip_prefix(p)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    })
}

/// `app` with the files of `dir` served at every path that is not the
/// server's. A missing file is a 404; `/` serves `index.html`.
pub fn serve_beside(app: Router, dir: &Path) -> Router {
    let files = ServeDir::new(dir);
    let pick = tower::service_fn(move |req: Request| {
        let (app, files) = (app.clone(), files.clone());
        async move {
            if is_server_path(req.uri().path()) {
                return app.oneshot(req).await;
            }
            let Ok(mut res) = files.oneshot(req).await;
            // Revalidate on every load (cheap: Last-Modified gives 304s), so
            // a page rebuilt while the server runs shows up on reload.
            res.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            Ok(res.map(Body::new))
        }
    });
    Router::new().fallback_service(pick)
}

/// The path the Admin UI bundle (`--admin-ui-dir`) is served at.
pub const ADMIN_UI_PATH: &str = "/admin-ui";

/// `app` with the Admin UI bundle of `dir` at `/admin-ui/` (`/admin-ui`
/// redirects there, so that the bundle's relative paths resolve).
pub fn serve_admin_ui(app: Router, dir: &Path) -> Router {
    let files = ServeDir::new(dir);
    let pick = tower::service_fn(move |req: Request| {
        let (app, files) = (app.clone(), files.clone());
        async move {
            let path = req.uri().path().to_string();
            if path == ADMIN_UI_PATH {
                let res = axum::http::Response::builder()
                    .status(axum::http::StatusCode::MOVED_PERMANENTLY)
                    .header(header::LOCATION, "/admin-ui/")
                    .body(Body::empty())
                    .unwrap_or_default();
                return Ok(res);
            }
            let Some(rest) = path.strip_prefix("/admin-ui/") else {
                return app.oneshot(req).await;
            };
            let (mut parts, body) = req.into_parts();
            let mut uri = format!("/{rest}");
            if let Some(q) = parts.uri.query() {
                uri.push('?');
                uri.push_str(q);
            }
            parts.uri = uri.parse().unwrap_or_default();
            let Ok(res) = files.oneshot(Request::from_parts(parts, body)).await;
            Ok(res.map(Body::new))
        }
    });
    Router::new().fallback_service(pick)
}

#[cfg(test)]
mod tests {
    use super::is_server_path;

    #[test]
    fn server_paths_are_whole_segments() {
        for p in [
            "/socket.io/",
            "/socket.io",
            "/api",
            "/api/emit",
            "/events",
            "/healthz",
            "/readyz",
            "/metrics",
            "/dev/token",
        ] {
            assert!(is_server_path(p), "{p}");
        }
        for p in [
            "/",
            "/index.html",
            "/app.js",
            "/apiary.html",
            "/healthz.png",
            "/dev",
            "/dev/tokens",
        ] {
            assert!(!is_server_path(p), "{p}");
        }
    }
}
