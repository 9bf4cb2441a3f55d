//! The documentation against the code: relative links resolve, the flags in
//! docs/configuration.md are the binary's, the `/api` routes in
//! docs/http-api.md are the router's, every event `dispatch` handles is in
//! docs/protocol.md, and the `js` examples parse (`node --check`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// README.md and every docs/*.md, relative to the repository root.
fn markdown_files() -> Vec<String> {
    let mut docs: Vec<String> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ exists")
        .map(|entry| {
            entry
                .expect("docs/ entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    let mut files = vec!["README.md".to_string()];
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut in_code = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        } else if !in_code {
            out.push(line);
        }
    }
    out
}

/// The fenced code blocks of `text` whose info string is one of `langs`.
fn code_blocks(text: &str, langs: &[&str]) -> Vec<String> {
    let mut blocks = Vec::new();
    // While inside a block: whether it is wanted, and its text so far.
    let mut open: Option<(bool, String)> = None;
    for line in text.lines() {
        match line.trim_start().strip_prefix("```") {
            Some(info) => match open.take() {
                None => open = Some((langs.contains(&info.trim()), String::new())),
                Some((true, block)) => blocks.push(block),
                Some((false, _)) => {}
            },
            None => {
                if let Some((_, block)) = open.as_mut() {
                    block.push_str(line);
                    block.push('\n');
                }
            }
        }
    }
    blocks
}

/// The targets of the inline links `[text](target)` in `line`.
fn link_targets(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let end = after.find(')').unwrap_or(after.len());
        let target = after[..end].split_whitespace().next().unwrap_or("");
        out.push(target.to_string());
        rest = &after[end..];
    }
    out
}

/// The anchors a markdown file has: GitHub's slugs of its headings
/// (lowercase; letters, digits, `-` and `_` kept; spaces become `-`; a
/// repeated slug gets `-1`, `-2`, ...), and `id="..."` anchors.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut seen: std::collections::BTreeMap<String, usize> = Default::default();
    for line in prose_lines(text) {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#').trim();
        let slug: String = heading
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(slug.clone()).or_insert(0);
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    for piece in text.split("id=\"").skip(1) {
        if let Some(id) = piece.split('"').next() {
            out.insert(id.to_string());
        }
    }
    out
}

#[test]
fn scripts_point_to_readme_sections_that_exist() {
    let readme = anchors(&read("README.md"));
    let mut broken = Vec::new();
    for entry in std::fs::read_dir(root().join("scripts")).expect("scripts/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        for piece in text.split("README.md#").skip(1) {
            let anchor: String = piece
                .chars()
                .take_while(|c| c.is_alphanumeric() || matches!(c, '-' | '_'))
                .collect();
            if !readme.contains(&anchor) {
                broken.push(format!("{}: README.md#{anchor}", path.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "scripts name README sections that do not exist: {broken:?}"
    );
}

#[test]
fn anchors_are_githubs_slugs() {
    let a = anchors("# Limits and abuse\n## `--ping-*`: keep-alive\n## Limits and abuse\n");
    assert!(a.contains("limits-and-abuse"));
    assert!(a.contains("--ping--keep-alive"));
    assert!(a.contains("limits-and-abuse-1"));
}

#[test]
fn relative_links_resolve() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in markdown_files() {
        let text = read(&file);
        let dir = root().join(Path::new(&file).parent().unwrap_or(Path::new("")));
        for line in prose_lines(&text) {
            for target in link_targets(line) {
                let external = target.contains("://") || target.starts_with("mailto:");
                let (path, anchor) = match target.split_once('#') {
                    Some((p, a)) => (p, Some(a)),
                    None => (target.as_str(), None),
                };
                if external {
                    continue;
                }
                checked += 1;
                let target_file = if path.is_empty() {
                    root().join(&file)
                } else {
                    dir.join(path)
                };
                if !target_file.exists() {
                    broken.push(format!("{file}: {target}"));
                    continue;
                }
                let markdown = target_file.extension().is_some_and(|e| e == "md");
                if let (Some(anchor), true) = (anchor, markdown) {
                    let text = std::fs::read_to_string(&target_file).unwrap_or_default();
                    if !anchors(&text).contains(anchor) {
                        broken.push(format!("{file}: {target} (no such heading)"));
                    }
                }
            }
        }
    }
    assert!(
        checked >= 10,
        "only {checked} relative links found: is the parser broken?"
    );
    assert!(
        broken.is_empty(),
        "links to missing files or headings:\n{}",
        broken.join("\n")
    );
}

/// Every `--flag` in `text` (a `--` not preceded by a letter, digit or `-`,
/// followed by a lowercase letter).
fn flags_in(text: &str) -> BTreeSet<String> {
    let b = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 2 < b.len() {
        let boundary = i == 0 || !(b[i - 1] == b'-' || b[i - 1].is_ascii_alphanumeric());
        if boundary && b[i] == b'-' && b[i + 1] == b'-' && b[i + 2].is_ascii_lowercase() {
            let mut j = i + 2;
            while j < b.len()
                && (b[j].is_ascii_lowercase() || b[j].is_ascii_digit() || b[j] == b'-')
            {
                j += 1;
            }
            out.insert(text[i..j].trim_end_matches('-').to_string());
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .output()
        .expect("run switchboard");
    assert!(out.status.success(), "switchboard {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Flags of other programs that the docs show: cargo's, `systemctl --now`,
/// `valgrind --tool`, `cargo fmt --check`, the load generators'
/// (`benches/loadgen`, `benches/yjs`) and the examples' `--port`.
const OTHER_PROGRAMS_FLAGS: &[&str] = &[
    "--all-targets",
    "--bench",
    "--bin",
    "--check",
    "--example",
    "--generators",
    "--locked",
    "--now",
    "--path",
    "--port",
    "--profile",
    "--quick",
    "--rates",
    "--release",
    "--root",
    "--servers",
    "--sizes",
    "--test",
    "--tool",
];

#[test]
fn every_flag_the_docs_name_exists() {
    let server = flags_in(&help(&["--help"]));
    let token = flags_in(&help(&["token", "--help"]));
    let mut unknown = Vec::new();
    for file in markdown_files() {
        for flag in flags_in(&read(&file)) {
            let known = server.contains(&flag)
                || token.contains(&flag)
                || OTHER_PROGRAMS_FLAGS.contains(&flag.as_str());
            if !known {
                unknown.push(format!("{file}: {flag}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "the docs name flags that `switchboard --help` and `switchboard token --help` lack:\n{}",
        unknown.join("\n")
    );
}

#[test]
fn help_names_environment_variables_without_their_values() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("--help")
        .env("SWITCHBOARD_API_KEY", "the-api-key-must-not-show")
        .output()
        .expect("run switchboard --help");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[env: SWITCHBOARD_LISTEN]"), "{text}");
    assert!(!text.contains("=]"), "--help shows empty values: {text}");
    assert!(
        !text.contains("the-api-key-must-not-show"),
        "--help shows a secret"
    );
    let token = help(&["token", "--help"]);
    assert!(token.contains("[env: SWITCHBOARD_JWT_ISSUER]"), "{token}");
    // Every flag of both commands says what it is for.
    for text in [text.as_ref(), token.as_str()] {
        let bare: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("--"))
            .filter(|l| {
                let rest = l
                    .trim_start()
                    .split_once("  ")
                    .map_or("", |(_, r)| r)
                    .trim();
                rest.is_empty() || rest.starts_with("[env:")
            })
            .collect();
        let described_below = |l: &&str| {
            // Long help puts the description on the next line.
            let i = text.find(*l).unwrap_or(0) + l.len();
            text[i..].lines().nth(1).is_some_and(|n| {
                let n = n.trim();
                !n.is_empty() && !n.starts_with('[') && !n.starts_with("--")
            })
        };
        let undescribed: Vec<_> = bare.iter().filter(|l| !described_below(l)).collect();
        assert!(
            undescribed.is_empty(),
            "flags without a description: {undescribed:?}"
        );
    }
}

#[test]
fn configuration_flags_are_the_binarys() {
    let server = flags_in(&help(&["--help"]));
    let token = flags_in(&help(&["token", "--help"]));
    assert!(server.len() >= 20, "only {} flags in --help", server.len());
    let documented = flags_in(&read("docs/configuration.md"));
    // Flags of other programs that the page shows (`cargo run --release`).
    let others = ["--release"];
    let unknown: Vec<_> = documented
        .iter()
        .filter(|f| !server.contains(*f) && !token.contains(*f) && !others.contains(&f.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/configuration.md names flags switchboard does not have: {unknown:?}"
    );
    let missing: Vec<_> = server
        .union(&token)
        .filter(|f| !documented.contains(*f))
        .collect();
    assert!(
        missing.is_empty(),
        "flags of `switchboard --help` / `switchboard token --help` missing from docs/configuration.md: {missing:?}"
    );
}

/// Every `/api/...` path in `line`.
fn api_paths(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("/api/") {
        let after = &rest[at..];
        let end = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || "_{}/.-".contains(c)))
            .unwrap_or(after.len());
        let path = after[..end].trim_end_matches(['.', '/']);
        out.push(path.to_string());
        rest = &after[end..];
    }
    out
}

/// The routes the server registers (with their parameter names: `{roomId}`
/// in the docs must be `{roomId}` here): the paths of the OpenAPI description,
/// which is generated from the router (`tests/openapi.rs` keeps the
/// committed copy equal to what the binary serves).
fn registered_routes() -> BTreeSet<String> {
    let doc: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    doc["paths"]
        .as_object()
        .expect("paths in docs/openapi.json")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn http_api_routes_are_the_routers() {
    let registered = registered_routes();
    assert!(
        registered.len() >= 6,
        "only {registered:?} found in docs/openapi.json"
    );
    let doc = read("docs/http-api.md");
    // Headings and table rows name routes; each must exist.
    let mut named = BTreeSet::new();
    for line in prose_lines(&doc) {
        let t = line.trim_start();
        if t.starts_with('#') || t.starts_with('|') {
            named.extend(api_paths(line));
        }
    }
    assert!(
        !named.is_empty(),
        "no /api routes in the headings or tables of docs/http-api.md"
    );
    let unknown: Vec<_> = named.iter().filter(|p| !registered.contains(*p)).collect();
    assert!(
        unknown.is_empty(),
        "docs/http-api.md documents routes src/http/api.rs does not register: {unknown:?}"
    );
    // Every registered route is written somewhere on the page.
    let anywhere: BTreeSet<String> = doc.lines().flat_map(api_paths).collect();
    let undocumented: Vec<_> = registered
        .iter()
        .filter(|r| !anywhere.contains(*r))
        .collect();
    assert!(
        undocumented.is_empty(),
        "routes of src/http/api.rs missing from docs/http-api.md: {undocumented:?}"
    );
}

/// The event names of the match arms in `dispatch` (src/realtime/mod.rs).
fn dispatched_events() -> Vec<String> {
    let src = read("src/realtime/mod.rs");
    let start = src
        .find("fn dispatch")
        .expect("fn dispatch in src/realtime/mod.rs");
    let body = &src[start..];
    let body = &body[..body.find("\n}\n").unwrap_or(body.len())];
    let mut events = Vec::new();
    for line in body.lines() {
        let t = line.trim_start();
        if !t.starts_with('"') {
            continue;
        }
        let Some((pattern, _)) = t.split_once("=>") else {
            continue;
        };
        for alternative in pattern.split('|') {
            let name = alternative.trim().trim_matches('"');
            if !name.is_empty() {
                events.push(name.to_string());
            }
        }
    }
    events
}

#[test]
fn every_dispatched_event_is_in_the_protocol() {
    let events = dispatched_events();
    assert!(events.len() >= 10, "only {events:?} found in dispatch");
    let doc = read("docs/protocol.md");
    let missing: Vec<_> = events
        .iter()
        .filter(|e| !doc.contains(&format!("`{e}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "events missing from docs/protocol.md: {missing:?}"
    );
}

#[test]
fn js_examples_parse() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in ["README.md", "docs/protocol.md"] {
        for (n, block) in code_blocks(&read(file), &["js", "javascript"])
            .iter()
            .enumerate()
        {
            // As an ES module: `import` and top-level `await` are allowed.
            let path = dir
                .path()
                .join(format!("{}-{n}.mjs", file.replace('/', "_")));
            std::fs::write(&path, block).expect("write the example");
            let out = Command::new("node")
                .arg("--check")
                .arg(path)
                .output()
                .expect("node is on PATH (the test suite needs Node.js)");
            checked += 1;
            if !out.status.success() {
                failures.push(format!(
                    "{file}, js block {}:\n{block}\n{}",
                    n + 1,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(checked >= 2, "only {checked} js blocks found");
    assert!(
        failures.is_empty(),
        "js examples that do not parse:\n{}",
        failures.join("\n")
    );
}

/// The metric names in the table of docs/http-api.md.
fn documented_metrics() -> BTreeSet<String> {
    read("docs/http-api.md")
        .lines()
        .filter_map(|l| l.strip_prefix("| `switchboard_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("switchboard_{name}"))
        .collect()
}

/// The limit names the code counts (`limit_hit("...")` in src/).
fn counted_limits() -> BTreeSet<String> {
    fn walk(dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("readable src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).expect("readable");
                for piece in text.split("limit_hit(\"").skip(1) {
                    if let Some(name) = piece.split('"').next() {
                        out.insert(name.to_string());
                    }
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&root().join("src"), &mut out);
    out
}

#[tokio::test]
async fn documented_metrics_are_served_from_the_start() {
    let server = common::Proc::start(&["--database-url", "memory"]);
    // `switchboard_http_requests_total` counts requests: make one first.
    let base = format!("http://{}", server.addr);
    reqwest::get(format!("{base}/healthz")).await.unwrap();
    let text = reqwest::get(format!("{base}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let served: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("switchboard_"))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(|n| {
            ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .unwrap_or(n)
                .to_string()
        })
        .collect();
    let documented = documented_metrics();
    let missing: Vec<_> = documented.difference(&served).collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    assert!(
        missing.is_empty() && undocumented.is_empty(),
        "docs/http-api.md lists metrics a fresh server does not serve: {missing:?}; \
         the server serves metrics docs/http-api.md does not list: {undocumented:?}"
    );
    let limits = counted_limits();
    assert!(limits.len() > 10, "found the limit names: {limits:?}");
    let unseen: Vec<_> = limits
        .iter()
        .filter(|l| !text.contains(&format!("switchboard_limit_hits_total{{limit=\"{l}\"}} 0")))
        .collect();
    assert!(
        unseen.is_empty(),
        "limits the code counts that a fresh server does not show at zero \
         (add them to metrics::LIMITS): {unseen:?}"
    );
}
