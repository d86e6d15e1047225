//! No import cycle between the modules of any crate in the workspace (issue 16).
//!
//! Pure file reading, no compiler: every crate root (`src/lib.rs`, `src/main.rs`,
//! `src/bin/*.rs`) is walked through its `mod x;` declarations, so a node is a module file
//! (`a/b.rs` or `a/b/mod.rs` is `a::b`, a `#[path]` file is the module that declares it) and an
//! inline `mod x { }` belongs to its file. An edge A -> B is a path in A's non-test code that
//! resolves into B: `use crate::..`, `use super::..`, `use self::..`, `use child::..`, grouped
//! trees, names imported by a `use` and then used as a path head, and inline paths such as
//! `crate::x::f(` or `super::Y` in code. A path counts for the longest existing module prefix,
//! so naming an item defined in M is an edge to M. `mod child;` itself is not an edge; a
//! `pub use child::X` is (the parent depends on the child). Comments, string and char literals
//! and attributes never make edges; any `#[cfg(test)]` item (so `mod tests { .. }` and the
//! `tests.rs` file it names) is left out. The strongly connected components (Tarjan) of each
//! crate's graph must all be single modules.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Lexer: just enough of Rust's to drop comments and literals and keep identifiers and paths.

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// A string literal's contents (used only for `#[path = ".."]`).
    Str(String),
    /// Any other literal or a lifetime.
    Lit,
    /// `::`
    PathSep,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

fn is_ident_start(c: char) -> bool {
    c == '_' || c.is_alphabetic()
}

fn is_ident_continue(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            // Block comments nest in Rust.
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some((end, text)) = raw_or_prefixed_string(&c, i) {
            out.push(Token {
                tok: Tok::Str(text.clone()),
                line,
            });
            line += text.matches('\n').count();
            i = end;
        } else if ch == '"' {
            let (end, text) = quoted(&c, i + 1, '"');
            out.push(Token {
                tok: Tok::Str(text.clone()),
                line,
            });
            line += text.matches('\n').count();
            i = end;
        } else if ch == 'b' && at(i + 1) == '\'' {
            let (end, _) = quoted(&c, i + 2, '\'');
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
            i = end;
        } else if ch == '\'' {
            // A char literal ('a', '\n', '\u{..}') or a lifetime ('a, 'static).
            if at(i + 1) == '\\' || at(i + 2) == '\'' {
                let (end, _) = quoted(&c, i + 1, '\'');
                i = end;
            } else {
                i += 1;
                while i < c.len() && is_ident_continue(c[i]) {
                    i += 1;
                }
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch == 'r' && at(i + 1) == '#' && is_ident_start(at(i + 2)) {
            let start = i + 2;
            i = start;
            while i < c.len() && is_ident_continue(c[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(c[start..i].iter().collect()),
                line,
            });
        } else if is_ident_start(ch) {
            let start = i;
            while i < c.len() && is_ident_continue(c[i]) {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(c[start..i].iter().collect()),
                line,
            });
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (is_ident_continue(c[i]) || (c[i] == '.' && at(i + 1).is_ascii_digit()))
            {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// Contents of a literal opened just before `i`, up to the unescaped `close`; returns the index
/// after the closing quote.
fn quoted(c: &[char], mut i: usize, close: char) -> (usize, String) {
    let mut text = String::new();
    while i < c.len() && c[i] != close {
        if c[i] == '\\' {
            text.push(c[i]);
            i += 1;
        }
        if i < c.len() {
            text.push(c[i]);
        }
        i += 1;
    }
    (i + 1, text)
}

/// `r"..."`, `r#".."#`, `b".."`, `br#".."#`, `c".."`, `cr".."`: end index and contents.
fn raw_or_prefixed_string(c: &[char], i: usize) -> Option<(usize, String)> {
    // Only at the start of a token: `bar"x"` is not a prefixed string.
    if i > 0 && is_ident_continue(c[i - 1]) {
        return None;
    }
    let mut j = i;
    if c.get(j) == Some(&'b') || c.get(j) == Some(&'c') {
        j += 1;
    }
    let raw = c.get(j) == Some(&'r');
    if raw {
        j += 1;
    }
    if j == i {
        return None;
    }
    if !raw {
        return (c.get(j) == Some(&'"')).then(|| quoted(c, j + 1, '"'));
    }
    let mut hashes = 0;
    while c.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    if c.get(j) != Some(&'"') {
        return None;
    }
    let start = j + 1;
    let mut k = start;
    while k < c.len() {
        if c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')) {
            return Some((k + 1 + hashes, c[start..k].iter().collect()));
        }
        k += 1;
    }
    Some((c.len(), c[start..].iter().collect()))
}

// ---------------------------------------------------------------------------------------------
// Scanner: `mod` declarations, `use` trees and paths in code, per inline-module scope.

/// `mod name;` (not a test one) in a file, inside the inline modules `scope`.
#[derive(Debug)]
struct ModDecl {
    scope: Vec<String>,
    name: String,
    path_attr: Option<String>,
}

#[derive(Debug)]
enum RefKind {
    /// A `use` leaf; `alias` is the name it brings in (none for a glob or `as _`).
    Use {
        alias: Option<String>,
    },
    Code,
}

#[derive(Debug)]
struct PathRef {
    scope: Vec<String>,
    segs: Vec<String>,
    line: usize,
    kind: RefKind,
}

#[derive(Debug, Default)]
struct FileScan {
    mods: Vec<ModDecl>,
    refs: Vec<PathRef>,
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Punct(c)) if *c == p)
}

/// Index of the bracket closing the one at `open`.
fn matching(toks: &[Token], open: usize) -> usize {
    let mut depth = 0i32;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return k;
                }
            }
            _ => {}
        }
    }
    toks.len().saturating_sub(1)
}

/// Index after the item starting at `i` (its further attributes included): up to its `;` or the
/// end of its first top-level `{ }` block.
fn skip_item(toks: &[Token], mut i: usize) -> usize {
    while is_punct(toks.get(i), '#') && is_punct(toks.get(i + 1), '[') {
        i = matching(toks, i + 1) + 1;
    }
    // A `use` tree has braces before its `;`; any other item ends at its first block.
    let mut head = i;
    if ident(toks.get(head)) == Some("pub") {
        head += 1;
        if is_punct(toks.get(head), '(') {
            head = matching(toks, head) + 1;
        }
    }
    let is_use = ident(toks.get(head)) == Some("use");
    while i < toks.len() {
        match toks[i].tok {
            Tok::Punct(';') => return i + 1,
            Tok::Punct('{') if !is_use => return matching(toks, i) + 1,
            Tok::Punct('(' | '[' | '{') => i = matching(toks, i) + 1,
            _ => i += 1,
        }
    }
    i
}

fn scan(src: &str) -> FileScan {
    let toks = lex(src);
    let mut out = FileScan::default();
    // Inline modules open around the current token, with the brace depth their `{` opened.
    let mut scope: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut path_attr: Option<String> = None;
    let names = |scope: &[(String, usize)]| scope.iter().map(|s| s.0.clone()).collect::<Vec<_>>();
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i];
        match &t.tok {
            Tok::Punct('#') => {
                let mut j = i + 1;
                let inner = is_punct(toks.get(j), '!');
                if inner {
                    j += 1;
                }
                if is_punct(toks.get(j), '[') {
                    let end = matching(&toks, j);
                    let body: Vec<&Tok> = toks[j + 1..end].iter().map(|t| &t.tok).collect();
                    let cfg_test = body.len() == 4
                        && *body[0] == Tok::Ident("cfg".into())
                        && *body[2] == Tok::Ident("test".into());
                    if cfg_test && !inner {
                        i = skip_item(&toks, end + 1);
                        path_attr = None;
                        continue;
                    }
                    if let [Tok::Ident(p), Tok::Punct('='), Tok::Str(s)] = body.as_slice() {
                        if p == "path" {
                            path_attr = Some(s.clone());
                        }
                    }
                    // Attributes never make edges.
                    i = end + 1;
                    continue;
                }
            }
            Tok::Ident(kw) if kw == "mod" => {
                if let Some(name) = ident(toks.get(i + 1)) {
                    if is_punct(toks.get(i + 2), ';') {
                        out.mods.push(ModDecl {
                            scope: names(&scope),
                            name: name.to_string(),
                            path_attr: path_attr.take(),
                        });
                        i += 3;
                        continue;
                    }
                    if is_punct(toks.get(i + 2), '{') {
                        depth += 1;
                        scope.push((name.to_string(), depth));
                        path_attr = None;
                        i += 3;
                        continue;
                    }
                }
            }
            Tok::Ident(kw) if kw == "use" => {
                let mut k = i + 1;
                let mut leaves = Vec::new();
                if toks.get(k).map(|t| &t.tok) != Some(&Tok::PathSep) {
                    use_tree(&toks, &mut k, Vec::new(), &mut leaves);
                }
                for (segs, alias) in leaves {
                    out.refs.push(PathRef {
                        scope: names(&scope),
                        segs,
                        line: t.line,
                        kind: RefKind::Use { alias },
                    });
                }
                while k < toks.len() && !is_punct(toks.get(k), ';') {
                    k += 1;
                }
                i = k + 1;
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                if scope.last().is_some_and(|s| s.1 == depth) {
                    scope.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Tok::Ident(head) if toks.get(i + 1).map(|t| &t.tok) == Some(&Tok::PathSep) => {
                let prev = i.checked_sub(1).and_then(|p| toks.get(p));
                let continues = prev.map(|p| &p.tok) == Some(&Tok::PathSep);
                // `$crate::` is a macro's own crate; `pub(in crate::x)` is visibility, not use.
                let skip = is_punct(prev, '$')
                    || (ident(prev) == Some("in") && is_punct(toks.get(i.wrapping_sub(2)), '('));
                let mut segs = vec![head.clone()];
                let mut k = i + 1;
                while toks.get(k).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    match ident(toks.get(k + 1)) {
                        Some(s) => segs.push(s.to_string()),
                        None => break,
                    }
                    k += 2;
                }
                if !continues && !skip {
                    out.refs.push(PathRef {
                        scope: names(&scope),
                        segs,
                        line: t.line,
                        kind: RefKind::Code,
                    });
                }
                i = k;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// One use tree at `k`, below `prefix`: its leaves as (path, name brought in).
fn use_tree(
    toks: &[Token],
    k: &mut usize,
    prefix: Vec<String>,
    out: &mut Vec<(Vec<String>, Option<String>)>,
) {
    let mut segs = prefix;
    loop {
        match toks.get(*k).map(|t| &t.tok) {
            Some(Tok::Ident(s)) => {
                // `a::{self, b}`: `self` is the prefix itself.
                if s != "self" || segs.is_empty() {
                    segs.push(s.clone());
                }
                *k += 1;
                if toks.get(*k).map(|t| &t.tok) == Some(&Tok::PathSep) {
                    *k += 1;
                    continue;
                }
                let mut alias = segs.last().cloned();
                if ident(toks.get(*k)) == Some("as") {
                    alias = ident(toks.get(*k + 1))
                        .filter(|a| *a != "_")
                        .map(String::from);
                    *k += 2;
                }
                out.push((segs, alias));
                return;
            }
            Some(Tok::Punct('*')) => {
                *k += 1;
                out.push((segs, None));
                return;
            }
            Some(Tok::Punct('{')) => {
                *k += 1;
                loop {
                    if is_punct(toks.get(*k), '}') || *k >= toks.len() {
                        *k += 1;
                        return;
                    }
                    let before = *k;
                    use_tree(toks, k, segs.clone(), out);
                    // Past the comma, or past a token the tree could not use (never loop).
                    if is_punct(toks.get(*k), ',') || *k == before {
                        *k += 1;
                    }
                }
            }
            _ => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Module graph of one crate.

type ModPath = Vec<String>;

/// Where an edge is first used: file and line.
#[derive(Clone, Debug, PartialEq)]
struct Site {
    file: PathBuf,
    line: usize,
}

#[derive(Debug, Default)]
struct Graph {
    name: String,
    modules: BTreeSet<ModPath>,
    edges: BTreeMap<(ModPath, ModPath), Site>,
}

/// Loads the crate rooted at `root` through `read` (a file's text, or None when absent).
fn load_crate(name: &str, root: &Path, read: &dyn Fn(&Path) -> Option<String>) -> Graph {
    let mut files: Vec<(ModPath, PathBuf, FileScan)> = Vec::new();
    let mut queue = VecDeque::from([(ModPath::new(), root.to_path_buf(), true)]);
    while let Some((module, file, dir_owner)) = queue.pop_front() {
        let src = read(&file).unwrap_or_else(|| panic!("{name}: cannot read {}", file.display()));
        let found = scan(&src);
        let parent = file.parent().unwrap_or(Path::new("")).to_path_buf();
        // A lib.rs/main.rs/mod.rs (or #[path] file) owns its directory; `a.rs` owns `a/`.
        let own_dir = if dir_owner {
            parent.clone()
        } else {
            parent.join(file.file_stem().unwrap_or_default())
        };
        for decl in &found.mods {
            let mut child = module.clone();
            child.extend(decl.scope.iter().cloned());
            child.push(decl.name.clone());
            let (path, owner) = match &decl.path_attr {
                Some(p) if decl.scope.is_empty() => (parent.join(p), true),
                Some(p) => (own_dir.join(decl.scope.join("/")).join(p), true),
                None => {
                    let dir = own_dir.join(decl.scope.join("/"));
                    let flat = dir.join(format!("{}.rs", decl.name));
                    if read(&flat).is_some() {
                        (flat, false)
                    } else {
                        (dir.join(&decl.name).join("mod.rs"), true)
                    }
                }
            };
            queue.push_back((child, path, owner));
        }
        files.push((module, file, found));
    }
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.0.clone()).collect();
    let mut graph = Graph {
        name: name.to_string(),
        modules,
        ..Graph::default()
    };

    for (module, file, found) in &files {
        // Names brought in by `use`, per scope, resolved to absolute paths. Two passes so that a
        // `use` may name what a later `use` brings in.
        let mut aliases: HashMap<ModPath, HashMap<String, ModPath>> = HashMap::new();
        for _ in 0..2 {
            for r in &found.refs {
                if let RefKind::Use { alias: Some(alias) } = &r.kind {
                    let here = [module.clone(), r.scope.clone()].concat();
                    let known = aliases.get(&here).cloned().unwrap_or_default();
                    if let Some(abs) = resolve(&graph.modules, &here, &r.segs, &known) {
                        aliases.entry(here).or_default().insert(alias.clone(), abs);
                    }
                }
            }
        }
        for r in &found.refs {
            let here = [module.clone(), r.scope.clone()].concat();
            let known = aliases.get(&here).cloned().unwrap_or_default();
            let Some(abs) = resolve(&graph.modules, &here, &r.segs, &known) else {
                continue;
            };
            let target = (0..=abs.len())
                .rev()
                .map(|n| abs[..n].to_vec())
                .find(|p| graph.modules.contains(p))
                .unwrap_or_default();
            if target != *module {
                graph.edges.entry((module.clone(), target)).or_insert(Site {
                    file: file.clone(),
                    line: r.line,
                });
            }
        }
    }
    graph
}

/// The absolute path that `segs`, written in module `here`, names; None for another crate's.
fn resolve(
    modules: &BTreeSet<ModPath>,
    here: &ModPath,
    segs: &[String],
    aliases: &HashMap<String, ModPath>,
) -> Option<ModPath> {
    let head = segs.first()?;
    let (mut base, rest) = match head.as_str() {
        "crate" => (ModPath::new(), &segs[1..]),
        "self" => (here.clone(), &segs[1..]),
        "super" => {
            let mut base = here.clone();
            let ups = segs.iter().take_while(|s| *s == "super").count();
            for _ in 0..ups {
                base.pop()?;
            }
            (base, &segs[ups..])
        }
        _ => {
            let child = [here.clone(), vec![head.clone()]].concat();
            if modules.contains(&child) {
                (child, &segs[1..])
            } else {
                (aliases.get(head)?.clone(), &segs[1..])
            }
        }
    };
    base.extend(rest.iter().cloned());
    Some(base)
}

fn show(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// Tarjan's strongly connected components with more than one module.
fn cyclic_components(g: &Graph) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        adj: HashMap<&'a ModPath, Vec<&'a ModPath>>,
        index: HashMap<&'a ModPath, usize>,
        low: HashMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        out: Vec<Vec<ModPath>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a ModPath) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.adj.get(v).cloned().unwrap_or_default() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = s.stack.pop().expect("on stack");
                s.on_stack.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                s.out.push(comp);
            }
        }
    }
    let mut s = State {
        adj: HashMap::new(),
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for (a, b) in g.edges.keys() {
        s.adj.entry(a).or_default().push(b);
    }
    for m in &g.modules {
        if !s.index.contains_key(m) {
            visit(&mut s, m);
        }
    }
    s.out.sort();
    s.out
}

/// Every cycle needed to cover each edge of each cyclic component (the edge, then the shortest
/// way back), one report line per cycle and one per edge with where it is first used.
fn cycle_report(g: &Graph, root: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for comp in cyclic_components(g) {
        let inside: BTreeSet<&ModPath> = comp.iter().collect();
        let edges: Vec<(&ModPath, &ModPath)> = g
            .edges
            .keys()
            .filter(|(a, b)| inside.contains(a) && inside.contains(b))
            .map(|(a, b)| (a, b))
            .collect();
        let mut seen = BTreeSet::new();
        for &(u, v) in &edges {
            // Shortest path v -> u inside the component.
            let mut prev: HashMap<&ModPath, &ModPath> = HashMap::new();
            let mut queue = VecDeque::from([v]);
            while let Some(x) = queue.pop_front() {
                if x == u {
                    break;
                }
                for &(a, b) in &edges {
                    if a == x && b != v && !prev.contains_key(b) {
                        prev.insert(b, a);
                        queue.push_back(b);
                    }
                }
            }
            let mut back = vec![u];
            let mut x = u;
            while x != v {
                x = prev[x];
                back.push(x);
            }
            back.reverse();
            let mut cycle: Vec<&ModPath> = vec![u];
            cycle.extend(back);
            // Same cycle from another edge: rotate to its smallest module to compare.
            let ring = &cycle[..cycle.len() - 1];
            let start = (0..ring.len()).min_by_key(|&k| ring[k]).unwrap_or(0);
            let key: Vec<&ModPath> = ring[start..]
                .iter()
                .chain(&ring[..start])
                .copied()
                .collect();
            if !seen.insert(key) {
                continue;
            }
            let names: Vec<String> = cycle.iter().map(|m| show(m)).collect();
            lines.push(format!("{}: {}", g.name, names.join(" -> ")));
            for pair in cycle.windows(2) {
                let site = &g.edges[&(pair[0].clone(), pair[1].clone())];
                let file = site.file.strip_prefix(root).unwrap_or(&site.file);
                lines.push(format!(
                    "    {} -> {} at {}:{}",
                    show(pair[0]),
                    show(pair[1]),
                    file.display(),
                    site.line
                ));
            }
        }
    }
    lines
}

// ---------------------------------------------------------------------------------------------
// The workspace.

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `members = [..]` of the workspace manifest.
fn members(root: &Path) -> Vec<String> {
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("workspace manifest");
    let start = manifest.find("members").expect("members");
    let list = &manifest[start..];
    let list = &list[list.find('[').expect("[") + 1..list.find(']').expect("]")];
    list.split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// Each crate root of a member: its library, its main binary, its `src/bin` binaries.
fn crate_roots(root: &Path, member: &str) -> Vec<(String, PathBuf)> {
    let src = root.join(member).join("src");
    let mut roots = Vec::new();
    if src.join("lib.rs").exists() {
        roots.push((member.to_string(), src.join("lib.rs")));
    }
    if src.join("main.rs").exists() {
        roots.push((format!("{member} (main.rs)"), src.join("main.rs")));
    }
    let mut bins: Vec<PathBuf> = std::fs::read_dir(src.join("bin"))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    bins.sort();
    for bin in bins {
        let main = if bin.is_dir() {
            bin.join("main.rs")
        } else {
            bin.clone()
        };
        if main.extension().is_some_and(|e| e == "rs") && main.exists() {
            let stem = bin
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            roots.push((format!("{member} (bin {stem})"), main));
        }
    }
    roots
}

fn read_disk(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

#[test]
fn no_module_import_cycle_in_any_crate() {
    let root = workspace_root();
    let members = members(&root);
    assert!(members.len() >= 9, "workspace members: {members:?}");
    // The operator's controller (issue 13) is a crate of its own and is walked like the rest.
    assert!(
        members.iter().any(|m| m == "controller"),
        "workspace members: {members:?}"
    );
    let mut report = Vec::new();
    let mut module_count = 0;
    let mut edge_count = 0;
    for member in &members {
        for (name, file) in crate_roots(&root, member) {
            let g = load_crate(&name, &file, &read_disk);
            // `MODULE_GRAPH=agent cargo test --test module_cycles -- --nocapture` shows a graph.
            if std::env::var("MODULE_GRAPH").is_ok_and(|n| n == name) {
                for edge in edges_of(&g) {
                    println!("{edge}");
                }
            }
            module_count += g.modules.len();
            edge_count += g.edges.len();
            report.extend(cycle_report(&g, &root));
        }
    }
    // A checker that found no modules or no edges would pass for the wrong reason.
    assert!(module_count > 200, "only {module_count} modules found");
    assert!(edge_count > 300, "only {edge_count} edges found");
    assert!(
        report.is_empty(),
        "module import cycles:\n{}",
        report.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests, on small synthetic trees.

fn synthetic(files: &[(&str, &str)]) -> Graph {
    let tree: HashMap<PathBuf, String> = files
        .iter()
        .map(|(p, s)| (PathBuf::from(p), s.to_string()))
        .collect();
    load_crate("demo", Path::new("src/lib.rs"), &|p: &Path| {
        tree.get(p).cloned()
    })
}

/// Edges as `a -> b :line of first use`.
fn edges_of(g: &Graph) -> Vec<String> {
    g.edges
        .iter()
        .map(|((a, b), s)| format!("{} -> {} :{}", show(a), show(b), s.line))
        .collect()
}

#[test]
fn checker_finds_a_cycle_with_its_sites() {
    let g = synthetic(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::X;\npub struct Y;\n"),
        (
            "src/b.rs",
            "pub struct X;\n\nfn f() -> crate::a::Y { todo!() }\n",
        ),
    ]);
    let report = cycle_report(&g, Path::new(""));
    assert_eq!(
        report,
        vec![
            "demo: a -> b -> a",
            "    a -> b at src/a.rs:1",
            "    b -> a at src/b.rs:3"
        ]
    );
}

#[test]
fn checker_passes_a_dag() {
    let g = synthetic(&[
        ("src/lib.rs", "mod a;\nmod b;\npub use a::Y;\n"),
        ("src/a.rs", "use crate::{b::X, b};\npub struct Y(X);\n"),
        ("src/b.rs", "pub struct X;\n"),
    ]);
    assert_eq!(edges_of(&g), vec!["crate -> a :3", "a -> b :1"]);
    assert!(cycle_report(&g, Path::new("")).is_empty());
}

#[test]
fn checker_ignores_comments_strings_and_test_code() {
    let g = synthetic(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        ("src/a.rs", "use crate::b::X;\npub struct Y;\n"),
        (
            "src/b.rs",
            "pub struct X;\n// use crate::a::Y;\n/* crate::a::Y /* nested */ crate::a */\n\
             const S: &str = \"crate::a::Y\";\nconst R: &str = r#\"super::a::Y\"#;\n\
             const C: char = '\"'; fn l<'a>(x: &'a u8) {}\n\
             #[cfg(test)]\nmod tests {\n    use crate::a::Y;\n}\n\
             #[cfg(test)]\nfn helper() {\n    use std::fmt;\n    crate::a::Y;\n}\n\
             #[cfg(test)]\npub(crate) use crate::a::{Y as Z};\n\
             #[cfg(test)]\nmod more;\n",
        ),
        ("src/b/more.rs", "use crate::a::Y;\n"),
    ]);
    assert_eq!(edges_of(&g), vec!["a -> b :1"]);
    assert!(cycle_report(&g, Path::new("")).is_empty());
}

#[test]
fn checker_counts_parent_and_child_both_ways() {
    let g = synthetic(&[
        ("src/lib.rs", "mod p;\n"),
        (
            "src/p/mod.rs",
            "mod child;\npub use child::X;\npub struct Y;\n",
        ),
        ("src/p/child.rs", "use super::Y;\npub struct X(Y);\n"),
    ]);
    assert_eq!(
        cycle_report(&g, Path::new("")),
        vec![
            "demo: p -> p::child -> p",
            "    p -> p::child at src/p/mod.rs:2",
            "    p::child -> p at src/p/child.rs:1"
        ]
    );
}

#[test]
fn checker_resolves_aliases_inline_modules_and_mod_decls() {
    let g = synthetic(&[
        // `mod a;` alone is no edge; an inline module belongs to its file.
        (
            "src/lib.rs",
            "mod a;\nmod b;\npub struct Top;\nmod inner {\n    use super::Top;\n}\n",
        ),
        // `b` imported, then a deeper module named through it in code.
        ("src/a.rs", "use crate::b;\nfn f() { b::deep::g(); }\n"),
        ("src/b/mod.rs", "pub mod deep;\n"),
        ("src/b/deep.rs", "pub fn g() { super::super::a::h() }\n"),
    ]);
    assert_eq!(
        edges_of(&g),
        vec!["a -> b :1", "a -> b::deep :2", "b::deep -> a :1"]
    );
    assert_eq!(
        cycle_report(&g, Path::new(""))[0],
        "demo: a -> b::deep -> a"
    );
}

#[test]
fn checker_resumes_after_test_items() {
    let g = synthetic(&[
        ("src/lib.rs", "mod a;\nmod b;\n"),
        (
            "src/a.rs",
            "#[cfg(test)]\nmod tests {\n    use crate::b::X;\n}\n\
             #[cfg(test)]\nfn h() {\n    use std::fmt;\n}\n\
             fn f() -> crate::b::X {\n    todo!()\n}\n",
        ),
        ("src/b.rs", "pub struct X;\n"),
    ]);
    assert_eq!(edges_of(&g), vec!["a -> b :9"]);
}
