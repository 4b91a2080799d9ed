//! The layer rule of docs/design.md, checked on the source: every
//! `use crate::…` (and every inline `crate::…`, `super::…`, `self::…`,
//! `pgpilot::…` path) in sidecar/src is an edge from the module that
//! writes it to the module it names. An edge may go down the layers or
//! stay in its layer, never up; the drivers may not import one another.
//!
//! The layer of each module comes from the table in docs/design.md (between
//! `<!-- layers:begin -->` and `<!-- layers:end -->`), so the documentation
//! and the check cannot drift apart. CI runs it with the rest of the suite
//! (`cargo nextest run -p pgpilot --test layers`, first thing after the
//! build in scripts/test.sh).
//!
//! It also computes the module graph's strongly connected components
//! (Tarjan) and prints the largest cycle that remains.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One row of the layer table.
#[derive(Debug)]
struct Layer {
    rank: usize,
    name: String,
    /// Module paths (`snap::snapctl`); the longest prefix of a module wins.
    modules: Vec<Vec<String>>,
    /// May a module import another entry of the same layer?
    same_layer: bool,
}

/// An import of one module by another, where it is written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Edge {
    file: String,
    line: usize,
    from: Vec<String>,
    to: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".to_string()
    } else {
        m.join("::")
    }
}

/// The table of docs/design.md: `| rank | name | modules | same layer |`,
/// modules as `a`, `a::b` in backquotes; `crate` is lib.rs itself.
fn read_layers() -> Vec<Layer> {
    let path = root().join("../docs/design.md");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let start = text
        .find("<!-- layers:begin -->")
        .expect("docs/design.md has no <!-- layers:begin --> marker");
    let end = text
        .find("<!-- layers:end -->")
        .expect("docs/design.md has no <!-- layers:end --> marker");
    let mut layers = Vec::new();
    for row in text[start..end].lines() {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        if cells.len() < 4 {
            continue;
        }
        let Ok(rank) = cells[0].parse::<usize>() else {
            continue;
        };
        let modules = cells[2]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|m| {
                if m == "crate" {
                    Vec::new()
                } else {
                    m.split("::").map(str::to_string).collect()
                }
            })
            .collect();
        layers.push(Layer {
            rank,
            name: cells[1].to_string(),
            modules,
            same_layer: cells[3].starts_with("yes"),
        });
    }
    assert!(
        layers.len() >= 3,
        "docs/design.md: the layer table between the markers has no rows"
    );
    layers
}

/// Every .rs file under sidecar/src with its module path (`main.rs`: `main`).
fn source_files() -> BTreeMap<Vec<String>, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = root().join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(&src).unwrap().with_extension("");
            let mut module: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if module.last().is_some_and(|m| m == "mod") || module == ["lib"] {
                module.pop();
            }
            (module, path)
        })
        .collect()
}

/// The source with comments, strings and character literals blanked out
/// (newlines kept, so that offsets still give line numbers).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let blank = |out: &mut Vec<u8>, c: u8| out.push(if c == b'\n' { b'\n' } else { b' ' });
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
                    depth += 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                } else if b[i] == b'*' && b.get(i + 1) == Some(&b'/') {
                    depth -= 1;
                    out.extend_from_slice(b"  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !is_ident(b[i - 1]))
        {
            // A raw string r"…" or r#"…"#.
            let mut j = i + 1;
            while b.get(j) == Some(&b'#') {
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c);
                i += 1;
                continue;
            }
            let hashes = j - i - 1;
            let mut close = vec![b'"'];
            close.extend(std::iter::repeat_n(b'#', hashes));
            let body = j + 1;
            let stop = b[body..]
                .windows(close.len())
                .position(|w| w == close.as_slice())
                .map_or(b.len(), |p| body + p + close.len());
            for &x in &b[i..stop] {
                blank(&mut out, x);
            }
            i = stop;
        } else if c == b'"' {
            blank(&mut out, c);
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    blank(&mut out, b[i]);
                    i += 1;
                }
                if i < b.len() {
                    blank(&mut out, b[i]);
                    i += 1;
                }
            }
            if i < b.len() {
                out.push(b' ');
                i += 1;
            }
        } else if c == b'\'' {
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            let end = if b.get(i + 1) == Some(&b'\\') {
                b[i + 2..]
                    .iter()
                    .position(|&x| x == b'\'')
                    .map(|p| i + 2 + p)
            } else if b.get(i + 2) == Some(&b'\'') {
                Some(i + 2)
            } else {
                // A multi-byte character: find the quote within 5 bytes.
                (i + 2..(i + 6).min(b.len())).find(|&k| b[k] == b'\'' && b[i + 1] >= 0x80)
            };
            match end {
                Some(e) => {
                    out.resize(out.len() + (e + 1 - i), b' ');
                    i = e + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e` (whitespace removed).
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.to_string()];
    };
    let prefix = &path[..open];
    let mut depth = 0;
    let mut close = path.len();
    for (k, ch) in path[open..].char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = open + k;
                    break;
                }
            }
            _ => {}
        }
    }
    let body = &path[open + 1..close];
    let mut items = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (k, ch) in body.char_indices() {
        match ch {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&body[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&body[start..]);
    let mut out = Vec::new();
    for item in items.into_iter().filter(|i| !i.is_empty()) {
        if item == "self" {
            out.push(prefix.trim_end_matches(':').to_string());
        } else {
            out.extend(expand(item).into_iter().map(|e| format!("{prefix}{e}")));
        }
    }
    out
}

/// A `use` path without whitespace and without its renames
/// (`a::{b as c, d}` → `a::{b,d}`).
fn without_renames(raw: &str) -> String {
    let mut out = String::new();
    let mut words = raw.split_whitespace();
    while let Some(word) = words.next() {
        if word == "as" {
            if let Some(alias) = words.next() {
                out.push_str(alias.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_'));
            }
        } else {
            out.push_str(word);
        }
    }
    out
}

/// The inline modules (`mod tests { … }`) open at each byte offset, so that
/// `super::` inside them resolves as rustc resolves it.
fn inline_modules(code: &str) -> Vec<(usize, usize, String)> {
    let b = code.as_bytes();
    let mut spans = Vec::new();
    let mut open: Vec<(usize, String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'{' {
            depth += 1;
        } else if b[i] == b'}' {
            if let Some((start, name, d)) = open.last() {
                if *d == depth {
                    spans.push((*start, i, name.clone()));
                    open.pop();
                }
            }
            depth = depth.saturating_sub(1);
        } else if code[i..].starts_with("mod ") && (i == 0 || !is_ident(b[i - 1])) {
            let rest = &code[i + 4..];
            let ident: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            let after = rest.trim_start()[ident.len()..].trim_start();
            if !ident.is_empty() && after.starts_with('{') {
                let brace = i + 4 + (rest.len() - after.len());
                open.push((brace, ident, depth + 1));
                depth += 1;
                i = brace + 1;
                continue;
            }
        }
        i += 1;
    }
    spans
}

/// The module path the code at `offset` is in (file module + inline modules).
fn scope_at(module: &[String], spans: &[(usize, usize, String)], offset: usize) -> Vec<String> {
    let mut inner: Vec<&(usize, usize, String)> = spans
        .iter()
        .filter(|(s, e, _)| *s < offset && offset < *e)
        .collect();
    inner.sort();
    let mut scope = module.to_vec();
    scope.extend(inner.iter().map(|(_, _, n)| n.clone()));
    scope
}

/// `crate::a::b::Item` → the longest known module prefix (`a::b`).
fn resolve(
    root_word: &str,
    rest: &[&str],
    scope: &[String],
    is_crate_root_file: bool,
    modules: &BTreeSet<Vec<String>>,
) -> Option<Vec<String>> {
    let mut full: Vec<String> = match root_word {
        "crate" | "pgpilot" => Vec::new(),
        "self" => scope.to_vec(),
        "super" => {
            // In a file `a/b.rs` (module a::b), `super` is `a`; in lib.rs
            // (the crate root) there is nothing above.
            if is_crate_root_file && scope.is_empty() {
                return None;
            }
            let mut s = scope.to_vec();
            s.pop();
            s
        }
        _ => return None,
    };
    let mut rest = rest.iter().peekable();
    while rest.peek().is_some_and(|s| **s == "super") {
        full.pop();
        rest.next();
    }
    full.extend(rest.map(|s| s.split(" as ").next().unwrap().trim().to_string()));
    let mut best = Vec::new();
    for k in 0..=full.len() {
        if modules.contains(&full[..k]) {
            best = full[..k].to_vec();
        }
    }
    Some(best)
}

fn edges() -> Vec<Edge> {
    let files = source_files();
    let modules: BTreeSet<Vec<String>> = files.keys().cloned().collect();
    let mut edges = BTreeSet::new();
    for (module, path) in &files {
        let is_main = module.as_slice() == ["main"];
        let src = std::fs::read_to_string(path).unwrap();
        let code = code_only(&src);
        let spans = inline_modules(&code);
        let rel = format!(
            "sidecar/src/{}",
            path.strip_prefix(root().join("src")).unwrap().display()
        );
        let line_of = |offset: usize| code[..offset].matches('\n').count() + 1;
        let mut add = |offset: usize, root_word: &str, segs: &[&str]| {
            // main.rs is the binary's crate: only `pgpilot::` reaches the library.
            if is_main && root_word != "pgpilot" {
                return;
            }
            if !is_main && root_word == "pgpilot" {
                return;
            }
            let scope = scope_at(module, &spans, offset);
            if let Some(to) = resolve(root_word, segs, &scope, module.is_empty(), &modules) {
                if &to != module && !(to.is_empty() && is_main) {
                    edges.insert(Edge {
                        file: rel.clone(),
                        line: line_of(offset),
                        from: module.clone(),
                        to,
                    });
                }
            }
        };
        // `use` declarations, with their brace groups.
        let b = code.as_bytes();
        let mut used = vec![false; b.len()];
        let mut i = 0;
        while let Some(p) = code[i..].find("use ") {
            let at = i + p;
            i = at + 4;
            if at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b':') {
                continue;
            }
            let Some(semi) = code[at..].find(';') else {
                break;
            };
            let body = without_renames(&code[at + 4..at + semi]);
            let body = body.trim_start_matches("::");
            for path in expand(body) {
                let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
                if let Some((first, rest)) = segs.split_first() {
                    add(at, first, rest);
                }
            }
            used[at..at + semi].iter_mut().for_each(|u| *u = true);
        }
        // Inline paths in expressions, types and attributes.
        for word in ["crate::", "super::", "self::", "pgpilot::"] {
            let mut i = 0;
            while let Some(p) = code[i..].find(word) {
                let at = i + p;
                i = at + word.len();
                if used[at] || (at > 0 && (is_ident(b[at - 1]) || b[at - 1] == b':')) {
                    continue;
                }
                let tail: String = code[at..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let segs: Vec<&str> = tail.split("::").filter(|s| !s.is_empty()).collect();
                if let Some((first, rest)) = segs.split_first() {
                    add(at, first, rest);
                }
            }
        }
    }
    edges.into_iter().collect()
}

/// Imports that still go the wrong way, as `from → to` module pairs, each
/// to be removed with its import. An entry that no longer occurs fails the
/// check too, so the list only shrinks.
const NOT_YET_FIXED: &[&str] = &[];

fn layer_of<'a>(layers: &'a [Layer], module: &[String]) -> Option<(&'a Layer, Vec<String>)> {
    layers
        .iter()
        .flat_map(|l| l.modules.iter().map(move |m| (l, m)))
        .filter(|(_, m)| module.starts_with(m))
        .max_by_key(|(_, m)| m.len())
        .map(|(l, m)| (l, m.clone()))
}

#[test]
fn imports_go_down_the_layers() {
    let layers = read_layers();
    let mut problems = Vec::new();
    for module in source_files().keys() {
        if layer_of(&layers, module).is_none() {
            problems.push(format!(
                "module {} is in no layer: add it to the table in docs/design.md",
                name(module)
            ));
        }
    }
    let all = edges();
    let mut tolerated = BTreeSet::new();
    for e in &all {
        let (Some((lf, ef)), Some((lt, et))) =
            (layer_of(&layers, &e.from), layer_of(&layers, &e.to))
        else {
            continue;
        };
        let wrong = lt.rank > lf.rank || (lt.rank == lf.rank && !lf.same_layer && ef != et);
        let pair = format!("{} → {}", name(&e.from), name(&e.to));
        if wrong && NOT_YET_FIXED.contains(&pair.as_str()) {
            tolerated.insert(pair);
        } else if wrong {
            problems.push(format!(
                "{}:{}: {} → {}: {} (layer {}) must not import {} (layer {})",
                e.file,
                e.line,
                name(&e.from),
                name(&e.to),
                lf.name,
                lf.rank,
                lt.name,
                lt.rank
            ));
        }
    }
    for pair in NOT_YET_FIXED {
        if !tolerated.contains(*pair) {
            problems.push(format!(
                "{pair} is listed in NOT_YET_FIXED but no longer occurs: remove it"
            ));
        }
    }
    assert!(
        all.len() > 100,
        "only {} edges found: the scanner is broken",
        all.len()
    );
    assert!(
        problems.is_empty(),
        "{} import(s) break the layer rule of docs/design.md:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// Tarjan's strongly connected components of the module graph.
fn components(graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<Vec<Vec<String>>> {
    struct State<'a> {
        graph: &'a BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on_stack: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a Vec<String>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in &s.graph[v] {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().unwrap();
                s.on_stack.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            comp.sort();
            s.out.push(comp);
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.out.sort_by_key(|c| std::cmp::Reverse(c.len()));
    s.out
}

/// Files that import each other in a ring. The layer rule keeps rings
/// inside one layer; this prints the largest and keeps it from growing.
#[test]
fn largest_cycle_is_small() {
    const CEILING: usize = 2;
    let mut graph: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = source_files()
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for e in edges() {
        // The crate root only declares the modules (and the exit codes).
        if !e.to.is_empty() && !e.from.is_empty() {
            graph.get_mut(&e.from).unwrap().insert(e.to);
        }
    }
    let comps = components(&graph);
    let largest = &comps[0];
    let rings: Vec<String> = comps
        .iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            format!(
                "{} modules: {}",
                c.len(),
                c.iter().map(|m| name(m)).collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    println!(
        "{} modules; largest cycle: {} module(s)\n{}",
        graph.len(),
        largest.len(),
        rings.join("\n")
    );
    assert!(
        largest.len() <= CEILING,
        "the largest import cycle grew to {} modules (ceiling {CEILING}):\n{}",
        largest.len(),
        rings.join("\n")
    );
}

/// Inside `backup`, the groups declared in backup/mod.rs go one way:
/// `command` may import `data` and `model`, `data` may import `model`,
/// `model` neither; backup/mod.rs itself (what all three share) none.
#[test]
fn backup_groups_go_one_way() {
    let rank = |m: &[String]| match m {
        [b] if b == "backup" => Some(0),
        [b, g, ..] if b == "backup" => ["model", "data", "command"]
            .iter()
            .position(|x| x == g)
            .map(|r| r + 1),
        _ => None,
    };
    let all = edges();
    let inside: Vec<(usize, usize, &Edge)> = all
        .iter()
        .filter_map(|e| Some((rank(&e.from)?, rank(&e.to)?, e)))
        .collect();
    let wrong: Vec<String> = inside
        .iter()
        .filter(|(from, to, _)| to > from)
        .map(|(_, _, e)| format!("{}:{}: {} → {}", e.file, e.line, name(&e.from), name(&e.to)))
        .collect();
    assert!(
        inside.iter().any(|(from, to, _)| (*from, *to) == (3, 1)),
        "no edge from backup::command to backup::model found: the scanner is broken"
    );
    assert!(
        wrong.is_empty(),
        "{} import(s) inside backup go the wrong way (command → data → model, \
         and backup/mod.rs imports none of them):\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

#[test]
fn only_the_binary_sets_up_the_process() {
    // Logging, and the async runtime a command runs on. The one exception:
    // archive-push/-get run each call on a thread of their own with a
    // runtime of its own, abandoned when archive_timeout passes.
    let allowed = |module: &[String], what: &str| {
        module == ["main"] || (module == ["archive"] && what == "runtime::Builder")
    };
    let mut problems = Vec::new();
    for (module, path) in source_files() {
        let code = code_only(&std::fs::read_to_string(&path).unwrap());
        for what in ["tracing_subscriber", "runtime::Builder"] {
            if allowed(&module, what) {
                continue;
            }
            if let Some(p) = code.find(what) {
                problems.push(format!(
                    "{}:{}: {what} outside main.rs (process set-up belongs to the binary's entry)",
                    path.display(),
                    code[..p].matches('\n').count() + 1
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn scanner_reads_groups_and_inline_modules() {
    assert_eq!(
        expand("crate::{a::b,c::{d,e},f}"),
        ["crate::a::b", "crate::c::d", "crate::c::e", "crate::f"]
    );
    assert_eq!(expand("crate::a::{self,X}"), ["crate::a", "crate::a::X"]);
    assert_eq!(without_renames("crate::ha as _"), "crate::ha");
    assert_eq!(
        without_renames("crate::{a as b, c::{d as e, f}}"),
        "crate::{a,c::{d,f}}"
    );
    let code = code_only(
        "// use crate::x;\nlet s = \"crate::y\"; let c = '\"'; mod tests { use super::z; }",
    );
    assert!(!code.contains("crate::x") && !code.contains("crate::y"));
    let spans = inline_modules(&code);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].2, "tests");
}

/// Comments and tests cite the safety invariants as "docs/design.md,
/// invariant N": the file is in the repository and N is one of its
/// numbered invariants.
#[test]
fn cited_invariants_exist() {
    let design = std::fs::read_to_string(root().join("../docs/design.md")).unwrap();
    let section = &design[design
        .find("## Safety invariants")
        .expect("docs/design.md has a Safety invariants section")..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |p| p + 3)];
    let numbered: BTreeSet<u32> = section
        .lines()
        .filter_map(|l| {
            l.split_once(". **")
                .and_then(|(n, _)| n.trim().parse().ok())
        })
        .collect();
    assert!(numbered.len() >= 7, "invariants found: {numbered:?}");
    let mut problems = Vec::new();
    let mut files = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs" || e == "md") {
                out.push(path);
            }
        }
    }
    for dir in ["src", "../tests/src", "../tests/tests", "../docs"] {
        walk(&root().join(dir), &mut files);
    }
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            if line.contains("DESIGN.md") {
                problems.push(format!(
                    "{}:{}: cites DESIGN.md, which is not in the repository: cite docs/design.md",
                    path.display(),
                    n + 1
                ));
            }
            for word in ["invariant ", "invariants "] {
                for (at, _) in line.match_indices(word) {
                    let tail = &line[at + word.len()..];
                    let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
                    if let Ok(k) = digits.parse::<u32>() {
                        if !numbered.contains(&k) {
                            problems.push(format!(
                                "{}:{}: cites invariant {k}, which docs/design.md does not number",
                                path.display(),
                                n + 1
                            ));
                        }
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
