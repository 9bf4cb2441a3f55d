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
//!
//! Symbolic links are followed only while they stay inside the directory:
//! a path whose real location (every link resolved) is outside it is a 404,
//! as if the file did not exist, so a link placed in the directory cannot
//! publish `/etc/passwd`. Links between files inside the directory are served.

use std::path::{Component, Path, PathBuf};

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use tower::ServiceExt;
use tower_http::services::ServeDir;

/// Paths that belong to the server, whatever the directory holds. Each is
/// matched as whole path segments: `/api` and `/api/emit`, not `/apiary`.
const SERVER_PATHS: [&str; 8] = [
    "/socket.io",
    "/yjs",
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
    let root = real_root(dir);
    let pick = tower::service_fn(move |req: Request| {
        let (app, files, root) = (app.clone(), files.clone(), root.clone());
        async move {
            if is_server_path(req.uri().path()) {
                return app.oneshot(req).await;
            }
            if leaves_dir(&root, req.uri().path()).await {
                return Ok(not_found());
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
    let root = real_root(dir);
    let pick = tower::service_fn(move |req: Request| {
        let (app, files, root) = (app.clone(), files.clone(), root.clone());
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
            if leaves_dir(&root, rest).await {
                return Ok(not_found());
            }
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

/// The directory with every link resolved (as given if that fails: the
/// start already checked that it can be read).
fn real_root(dir: &Path) -> std::sync::Arc<PathBuf> {
    std::sync::Arc::new(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()))
}

/// The file `ServeDir` would open for `uri_path`, relative to its
/// directory, built as `ServeDir` builds it (percent-decoded, `..` and the
/// like refused: `None`, which `ServeDir` answers with a 404 itself).
fn relative_path(uri_path: &str) -> Option<PathBuf> {
    let decoded = percent_encoding::percent_decode_str(uri_path.trim_start_matches('/'))
        .decode_utf8()
        .ok()?;
    let mut out = PathBuf::new();
    for component in Path::new(&*decoded).components() {
        match component {
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}

/// Whether the file served for `uri_path` (or the `index.html` served for a
/// directory) really lies outside `root`, through a symbolic link.
async fn leaves_dir(root: &Path, uri_path: &str) -> bool {
    let Some(rel) = relative_path(uri_path) else {
        return false;
    };
    // A path that does not resolve (missing, a dangling link) cannot be
    // opened either: ServeDir answers 404.
    let Ok(real) = tokio::fs::canonicalize(root.join(rel)).await else {
        return false;
    };
    if !real.starts_with(root) {
        crate::metrics::limit_hit("static_dir_links");
        return true;
    }
    if real.is_dir()
        && let Ok(index) = tokio::fs::canonicalize(real.join("index.html")).await
        && !index.starts_with(root)
    {
        crate::metrics::limit_hit("static_dir_links");
        return true;
    }
    false
}

/// What `ServeDir` answers for a file that does not exist.
fn not_found() -> axum::response::Response {
    let mut res = axum::response::Response::new(Body::empty());
    *res.status_mut() = axum::http::StatusCode::NOT_FOUND;
    res
}

#[cfg(test)]
mod tests {
    use super::{is_server_path, leaves_dir, relative_path};

    #[test]
    fn relative_paths_are_built_as_serve_dir_builds_them() {
        assert_eq!(
            relative_path("/a/b.txt").unwrap(),
            std::path::Path::new("a/b.txt")
        );
        assert_eq!(
            relative_path("/a%20b/./c").unwrap(),
            std::path::Path::new("a b/c")
        );
        assert!(relative_path("/../etc/passwd").is_none());
        assert!(relative_path("/a/%2e%2e/%2e%2e/etc").is_none());
    }

    #[tokio::test]
    async fn links_out_of_the_directory_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir(outside.path().join("d")).unwrap();
        std::fs::write(outside.path().join("d/index.html"), "i").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::write(root.join("page.html"), "p").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("d"), root.join("outdir")).unwrap();
        std::os::unix::fs::symlink(root.join("page.html"), root.join("in")).unwrap();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::os::unix::fs::symlink(
            outside.path().join("d/index.html"),
            root.join("sub/index.html"),
        )
        .unwrap();
        assert!(leaves_dir(&root, "/out").await);
        assert!(leaves_dir(&root, "/outdir/index.html").await);
        assert!(leaves_dir(&root, "/outdir/").await);
        assert!(
            leaves_dir(&root, "/sub/").await,
            "index.html of a directory"
        );
        assert!(!leaves_dir(&root, "/in").await);
        assert!(!leaves_dir(&root, "/page.html").await);
        assert!(!leaves_dir(&root, "/").await);
        assert!(!leaves_dir(&root, "/missing").await);
    }

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
