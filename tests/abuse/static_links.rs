//! `--static-dir` and symbolic links: a link placed in the directory must
//! not publish a file outside it (it served /etc/passwd).

use crate::{Proc, metric};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_out_of_the_static_dir_are_404() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), "outside secret").unwrap();
    std::fs::create_dir(outside.path().join("tree")).unwrap();
    std::fs::write(outside.path().join("tree/index.html"), "outside index").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("index.html"), "inside index").unwrap();
    std::fs::write(d.join("page.html"), "inside page").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", d.join("passwd")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), d.join("secret.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("tree"), d.join("tree")).unwrap();
    std::fs::create_dir(d.join("sub")).unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("tree/index.html"),
        d.join("sub/index.html"),
    )
    .unwrap();
    // Inside to inside: served (docs/configuration.md, --static-dir).
    std::os::unix::fs::symlink(d.join("page.html"), d.join("alias.html")).unwrap();
    std::os::unix::fs::symlink("page.html", d.join("relative.html")).unwrap();

    let p = Proc::start(&[
        "--database-url",
        "memory",
        "--static-dir",
        d.to_str().unwrap(),
    ]);
    let get = |path: &str| {
        let url = format!("http://{}{path}", p.addr);
        async move {
            let r = reqwest::get(url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    for path in [
        "/passwd",
        "/secret.txt",
        "/%73ecret.txt",
        "/tree/index.html",
        "/tree/",
        "/sub/",
        "/sub/index.html",
    ] {
        let (status, body) = get(path).await;
        println!("{path}: {status}");
        assert_eq!(status, 404, "{path} answered {status}: {body}");
        assert!(
            !body.contains("root:") && !body.contains("outside"),
            "{path}: {body}"
        );
    }
    assert_eq!(get("/").await, (200, "inside index".into()));
    assert_eq!(get("/page.html").await, (200, "inside page".into()));
    assert_eq!(get("/alias.html").await, (200, "inside page".into()));
    assert_eq!(get("/relative.html").await, (200, "inside page".into()));
    assert_eq!(get("/missing.html").await.0, 404);
    assert_eq!(
        metric(
            p.addr,
            "switchboard_limit_hits_total{limit=\"static_dir_links\"}"
        )
        .await,
        7.0
    );
}
