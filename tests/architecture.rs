//! The layout of `src/` against docs/architecture.md: the tree there names
//! every file of `src/` and no other, and the imports have no circle,
//! neither between files nor between folders.
//!
//! The graph is read from the source as text: every `use` and every
//! `crate::…`/`super::…` path outside `#[cfg(test)]`, and in a `mod.rs` (or
//! `lib.rs`) the paths that start with one of its own modules. A path counts
//! as an arrow to the longest module it names. Arrows to a file's own
//! ancestors (`super::Ctx` from `realtime/rooms.rs`) do not count: what a
//! folder's `mod.rs` declares is the ground its files share.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `src/`, relative to `src/`.
fn source_files() -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).expect("readable src/") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix(base).expect("under src/");
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    let base = root().join("src");
    let mut files = Vec::new();
    walk(&base, &base, &mut files);
    files.sort();
    files
}

/// The module path of a file: `realtime/mod.rs` -> `[realtime]`, `lib.rs` -> `[]`.
fn module_of(file: &str) -> Module {
    let mut parts: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_string)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The code a module imports with: comments and the test module left out.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `a::b::{c, d::e}` starting at `rest`: the paths it names (each as
/// segments), read up to the end of the path.
fn paths_at(rest: &str) -> Vec<Vec<String>> {
    let mut segments = Vec::new();
    let mut s = rest;
    loop {
        let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
        if end == 0 {
            break;
        }
        segments.push(s[..end].to_string());
        s = &s[end..];
        if let Some(next) = s.strip_prefix("::") {
            if let Some(group) = next.strip_prefix('{') {
                let mut depth = 1;
                let close = group
                    .char_indices()
                    .find(|&(_, c)| {
                        depth += match c {
                            '{' => 1,
                            '}' => -1,
                            _ => 0,
                        };
                        depth == 0
                    })
                    .map(|(i, _)| i)
                    .unwrap_or(group.len());
                let mut out = vec![segments.clone()];
                for item in group[..close].split([',', '{', '}']) {
                    let item = item.split(" as ").next().unwrap_or("").trim();
                    if item.is_empty() || item == "self" {
                        continue;
                    }
                    let mut path = segments.clone();
                    path.extend(item.split("::").map(|p| p.trim().to_string()));
                    out.push(path);
                }
                return out;
            }
            s = next;
        } else {
            break;
        }
    }
    vec![segments]
}

/// Every path the code names starting with `prefix` (`crate::`, `super::`,
/// or a child module's name followed by `::`), as segments after it.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = code[from..].find(prefix) {
        let at = from + i;
        let before = code[..at].chars().next_back();
        let standalone = !before.is_some_and(|c| is_ident(c) || c == ':' || c == '$');
        if standalone {
            out.extend(paths_at(&code[at + prefix.len()..]));
        }
        from = at + prefix.len();
    }
    out
}

struct Graph {
    modules: BTreeSet<Module>,
    arrows: BTreeMap<Module, BTreeSet<Module>>,
}

fn graph() -> Graph {
    let files = source_files();
    let modules: BTreeSet<Module> = files.iter().map(|f| module_of(f)).collect();
    let texts: BTreeMap<String, String> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(root().join("src").join(f)).expect("readable");
            (f.clone(), text)
        })
        .collect();
    // `#[macro_export]` macros live at the crate root but belong to their file.
    let mut macros: BTreeMap<String, Module> = BTreeMap::new();
    for (file, text) in &texts {
        for (i, _) in text.match_indices("#[macro_export]") {
            if let Some(j) = text[i..].find("macro_rules!") {
                let name: String = text[i + j + "macro_rules!".len()..]
                    .trim_start()
                    .chars()
                    .take_while(|&c| is_ident(c))
                    .collect();
                macros.insert(name, module_of(file));
            }
        }
    }
    let resolve = |path: &[String]| -> Option<Module> {
        if let Some(m) = path.first().and_then(|p| macros.get(p)) {
            return Some(m.clone());
        }
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|m| modules.contains(m))
    };
    let mut arrows: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (file, text) in &texts {
        let here = module_of(file);
        let is_root = file.ends_with("mod.rs") || !file.contains('/');
        let code = code_of(text);
        let mut named: Vec<Module> = paths_after(&code, "crate::");
        // `super::` from `a/b.rs` is `a`; from `a/b/mod.rs` it is `a` too.
        let parent: Module = if is_root {
            here[..here.len().saturating_sub(1)].to_vec()
        } else {
            here[..here.len() - 1].to_vec()
        };
        for path in paths_after(&code, "super::") {
            let mut full = if is_root && here.is_empty() {
                Vec::new()
            } else {
                parent.clone()
            };
            full.extend(path);
            named.push(full);
        }
        if is_root {
            let children: BTreeSet<String> = modules
                .iter()
                .filter(|m| m.len() == here.len() + 1 && m.starts_with(&here))
                .map(|m| m[here.len()].clone())
                .collect();
            for child in &children {
                for path in paths_after(&code, &format!("{child}::")) {
                    let mut full = here.clone();
                    full.push(child.clone());
                    full.extend(path);
                    named.push(full);
                }
            }
        }
        let targets = arrows.entry(here.clone()).or_default();
        for path in named {
            let Some(to) = resolve(&path) else { continue };
            // Its own ancestors (the crate root among them) do not count.
            if to.len() < here.len() && here.starts_with(&to) || to == here {
                continue;
            }
            targets.insert(to);
        }
    }
    Graph { modules, arrows }
}

/// The strongly connected components of more than one node (Tarjan).
fn circles<N: Ord + Clone>(nodes: &BTreeSet<N>, arrows: &BTreeMap<N, BTreeSet<N>>) -> Vec<Vec<N>> {
    struct State<N> {
        index: BTreeMap<N, usize>,
        low: BTreeMap<N, usize>,
        stack: Vec<N>,
        on_stack: BTreeSet<N>,
        out: Vec<Vec<N>>,
    }
    fn visit<N: Ord + Clone>(v: &N, arrows: &BTreeMap<N, BTreeSet<N>>, st: &mut State<N>) {
        let i = st.index.len();
        st.index.insert(v.clone(), i);
        st.low.insert(v.clone(), i);
        st.stack.push(v.clone());
        st.on_stack.insert(v.clone());
        for w in arrows.get(v).into_iter().flatten() {
            if !st.index.contains_key(w) {
                visit(w, arrows, st);
                let low = st.low[v].min(st.low[w]);
                st.low.insert(v.clone(), low);
            } else if st.on_stack.contains(w) {
                let low = st.low[v].min(st.index[w]);
                st.low.insert(v.clone(), low);
            }
        }
        if st.low[v] == st.index[v] {
            let mut component = Vec::new();
            while let Some(w) = st.stack.pop() {
                st.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                st.out.push(component);
            }
        }
    }
    let mut st = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in nodes {
        if !st.index.contains_key(v) {
            visit(v, arrows, &mut st);
        }
    }
    st.out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

fn describe(circles: &[Vec<Module>], arrows: &BTreeMap<Module, BTreeSet<Module>>) -> String {
    circles
        .iter()
        .map(|c| {
            let members: BTreeSet<&Module> = c.iter().collect();
            c.iter()
                .map(|m| {
                    let to: Vec<String> = arrows[m]
                        .iter()
                        .filter(|t| members.contains(t))
                        .map(name)
                        .collect();
                    format!("  {} -> {}", name(m), to.join(", "))
                })
                .collect::<Vec<_>>()
                .join("\n")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

#[test]
fn no_import_circle_between_files() {
    let g = graph();
    let found = circles(&g.modules, &g.arrows);
    assert!(
        found.is_empty(),
        "import circles between files of src/ (move the shared piece one floor down):\n{}",
        describe(&found, &g.arrows)
    );
}

#[test]
fn no_import_circle_between_folders() {
    let g = graph();
    // A top-level file is a part of its own; `lib.rs` and `main.rs` wire them.
    let part = |m: &Module| m.first().cloned();
    let mut parts = BTreeSet::new();
    let mut arrows: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (from, tos) in &g.arrows {
        let Some(a) = part(from) else { continue };
        parts.insert(vec![a.clone()]);
        for to in tos {
            let Some(b) = part(to) else { continue };
            if a != b {
                arrows.entry(vec![a.clone()]).or_default().insert(vec![b]);
            }
        }
    }
    for p in &parts {
        arrows.entry(p.clone()).or_default();
    }
    let found = circles(&parts, &arrows);
    assert!(
        found.is_empty(),
        "import circles between the parts of src/:\n{}",
        describe(&found, &arrows)
    );
}

#[test]
fn the_circle_check_sees_a_circle() {
    // The reader and the check on a made-up graph: b -> c -> b is a circle.
    let code = code_of("use crate::b::{c::D, e};\n// use crate::z;\nfn f() { super::x::y(); }");
    let paths = paths_after(&code, "crate::");
    assert!(paths.contains(&vec!["b".into(), "c".into(), "D".into()]));
    assert!(paths.contains(&vec!["b".into(), "e".into()]));
    assert!(!paths.iter().any(|p| p.first().is_some_and(|s| s == "z")));
    assert_eq!(
        paths_after(&code, "super::"),
        vec![vec!["x".to_string(), "y".into()]]
    );
    let m = |s: &str| vec![s.to_string()];
    let nodes: BTreeSet<Module> = [m("a"), m("b"), m("c")].into();
    let mut arrows = BTreeMap::new();
    arrows.insert(m("a"), [m("b")].into());
    arrows.insert(m("b"), [m("c")].into());
    arrows.insert(m("c"), [m("b")].into());
    let found = circles(&nodes, &arrows);
    assert_eq!(found.len(), 1);
    assert_eq!(
        found[0].iter().collect::<BTreeSet<_>>(),
        [m("b"), m("c")].iter().collect()
    );
}

/// The files the tree in docs/architecture.md names, relative to `src/`.
fn tree_in_docs() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("docs/architecture.md")).expect("readable");
    let start = doc
        .find("## The tree of `src/`")
        .expect("docs/architecture.md has '## The tree of `src/`'");
    let block = doc[start..]
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a ```text block under the heading");
    let mut folders: Vec<(usize, String)> = Vec::new();
    let mut files = Vec::new();
    for line in block.lines().skip_while(|l| l.trim() != "src/").skip(1) {
        let indent = line.len() - line.trim_start().len();
        let Some(entry) = line.split_whitespace().next() else {
            continue;
        };
        while folders.last().is_some_and(|(i, _)| *i >= indent) {
            folders.pop();
        }
        let prefix: String = folders.iter().map(|(_, f)| f.as_str()).collect();
        if entry.ends_with('/') {
            folders.push((indent, format!("{prefix}{entry}")));
        } else {
            files.push(format!("{prefix}{entry}"));
        }
    }
    files.sort();
    files
}

#[test]
fn the_tree_in_the_docs_is_the_tree_of_src() {
    let docs: BTreeSet<String> = tree_in_docs().into_iter().collect();
    let src: BTreeSet<String> = source_files().into_iter().collect();
    let missing: Vec<_> = src.difference(&docs).collect();
    let stale: Vec<_> = docs.difference(&src).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "docs/architecture.md's tree: files of src/ it does not name: {missing:?}; \
         files it names that src/ does not have: {stale:?}"
    );
}
