//! The committed `docs/openapi.json` is the description the code makes, and
//! the one the binary serves. When a handler or a type changes, rewrite it
//! with `UPDATE_OPENAPI=1 cargo test --test openapi` and commit the result.

mod common;

use common::Proc;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");

fn committed() -> String {
    std::fs::read_to_string(COMMITTED).unwrap_or_default()
}

/// Where two texts first differ, for a failure message that fits a screen.
fn first_difference(want: &str, got: &str) -> String {
    let mut want_lines = want.lines();
    let mut got_lines = got.lines();
    for n in 1.. {
        match (want_lines.next(), got_lines.next()) {
            (None, None) => break,
            (w, g) if w != g => {
                return format!("line {n}: expected {w:?}, found {g:?}");
            }
            _ => {}
        }
    }
    "only in line endings".into()
}

#[test]
fn committed_description_is_current() {
    let generated = switchboard::http::openapi::pretty_json();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        // Whole or not at all: the other test reads the file meanwhile.
        let tmp = format!("{COMMITTED}.tmp");
        std::fs::write(&tmp, &generated).unwrap();
        std::fs::rename(&tmp, COMMITTED).unwrap();
        return;
    }
    let committed = committed();
    assert!(
        committed == generated,
        "docs/openapi.json is stale ({}); rewrite it with \
         `UPDATE_OPENAPI=1 cargo test --test openapi` and commit it",
        first_difference(&generated, &committed)
    );
}

/// The binary serves the committed text, without the key, and also when the
/// API itself is disabled (no `--api-key`).
#[tokio::test]
async fn binary_serves_the_committed_description() {
    for args in [&["--api-key", "openapi-test-key-123"][..], &[]] {
        let p = Proc::start(args);
        let res = reqwest::get(format!("http://{}/api/openapi.json", p.addr))
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "with {args:?}");
        assert_eq!(res.headers()["content-type"], "application/json");
        let served = res.text().await.unwrap();
        assert!(
            served == committed(),
            "with {args:?}, /api/openapi.json differs from docs/openapi.json ({})",
            first_difference(&committed(), &served)
        );
    }
}
