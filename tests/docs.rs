//! The documentation against the code: relative links resolve, the flags in
//! docs/configuration.md are the binary's, the `/api` routes in
//! docs/http-api.md are the router's, every event `dispatch` handles is in
//! docs/protocol.md, and the `js` examples parse (`node --check`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

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
                let path = target.split('#').next().unwrap_or("");
                if external || path.is_empty() {
                    continue;
                }
                checked += 1;
                if !dir.join(path).exists() {
                    broken.push(format!("{file}: {target}"));
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
        "links to missing files:\n{}",
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

/// `/api/users/{userId}/emit` and `/api/users/{user_id}/emit` are the same route.
fn normalize_route(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            _ if in_param => {}
            _ => out.push(c),
        }
    }
    out
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
        out.push(normalize_route(path));
        rest = &after[end..];
    }
    out
}

/// The routes the server registers: the paths of the OpenAPI description,
/// which is generated from the router (`tests/openapi.rs` keeps the
/// committed copy equal to what the binary serves).
fn registered_routes() -> BTreeSet<String> {
    let doc: serde_json::Value = serde_json::from_str(&read("docs/openapi.json")).unwrap();
    doc["paths"]
        .as_object()
        .expect("paths in docs/openapi.json")
        .keys()
        .map(|p| normalize_route(p))
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
