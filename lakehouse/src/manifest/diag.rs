//! Diagnostics: every problem found in a project, located at `file:line:col` with the field path and a hint.
//!
//! Loading never stops at the first problem: each file is parsed on its own and the cross-file checks run on
//! whatever parsed, so `lakehouse validate` prints everything at once, sorted by file and line.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in a project file or a source manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Diagnostic {
    /// Path as shown to the user (relative to the project directory when possible).
    pub file: PathBuf,
    /// 1-based line, 0 when the problem concerns the whole file.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// Dotted field path (`connector.kind`, `columns.victim_name.domain`), empty for the whole file.
    pub field: String,
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(file: impl Into<PathBuf>, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self { file: file.into(), line: 0, column: 0, field: field.into(), message: message.into(), hint: None }
    }

    pub fn at(mut self, (line, column): (usize, usize)) -> Self {
        self.line = line;
        self.column = column;
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
            if self.column > 0 {
                write!(f, ":{}", self.column)?;
            }
        }
        f.write_str(": ")?;
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// All the problems of a project, sorted by file, line and column.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        self.0.extend(ds);
    }
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn sorted(mut self) -> Self {
        self.0.sort();
        self.0.dedup();
        self
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(f, "{n} problem{} found", if n == 1 { "" } else { "s" })
    }
}

impl std::error::Error for Diagnostics {}

/// Turns a serde_yaml error into a diagnostic: its message is `path: message at line L column C`.
///
/// Errors inside internally tagged enums (`connector`, `format`) lose their position in serde (the content is
/// buffered), so when the message names an unknown field or variant, the position is searched in the text below
/// the reported one, and the field path is rebuilt from the indentation there.
pub fn from_yaml_error(file: &Path, text: &str, err: &serde_yaml::Error) -> Diagnostic {
    let full = strip_positions(&err.to_string());
    // serde_yaml prefixes the field path when it knows it ("columns.lat: invalid type ...").
    let (mut field, message) = match full.split_once(": ") {
        Some((path, rest)) if !path.contains(' ') && !path.is_empty() => (path.to_string(), rest.to_string()),
        _ => (String::new(), full),
    };
    // serde_yaml has no position for errors raised by our checked newtypes (`try_from`): it reports 1:1.
    let mut pos = err
        .location()
        .map(|l| (l.line(), l.column()))
        .filter(|&p| p != (1, 1) || field.is_empty() && message.contains("missing"));
    let token = backticked(&message);
    // A value of the wrong type inside a tagged section (`format: { kind: csv, … }`) comes without a position:
    // the value serde quotes (`invalid type: string "mq", expected a sequence`) is found in the text instead.
    let quoted = message.strip_prefix("invalid type: ").and_then(|m| m.split('"').nth(1)).filter(|v| !v.is_empty());
    let searched = match (message.split('`').next(), token) {
        (Some("unknown field "), Some(t)) => find_token(text, pos, t, true),
        (Some("unknown variant "), Some(t)) => find_token(text, pos, t, false),
        (_, Some(t)) if pos.is_none() => find_token(text, None, t, false),
        _ if pos.is_none() => quoted.and_then(|v| find_token(text, None, v, false)),
        _ => None,
    };
    if let Some(p) = searched {
        pos = Some(p);
        if let Some(path) = path_at(text, p.0, p.1) {
            field = path;
        }
    }
    // "a sequence" is YAML's word: say list, and show one.
    let list_hint = message.ends_with("expected a sequence").then(|| match quoted {
        Some(v) => format!("write a list, e.g. [\"{v}\"] (or [] for none)"),
        None => "write a list, e.g. [a, b] (or [] for none)".to_string(),
    });
    let message = message.replace("expected a sequence", "expected a list");
    let mut d = Diagnostic::new(file, field.trim_start_matches('.').to_string(), message);
    if let Some(p) = pos {
        d = d.at(p);
    }
    if let Some(h) = list_hint {
        d = d.hint(h);
    }
    d
}

/// Removes the node at a dotted field path (`columns.id.type`, `drop_zones[1]`) from a YAML document; false when
/// there is none.
pub fn remove_path(value: &mut serde_yaml::Value, path: &str) -> bool {
    let mut segments: Vec<&str> = path.split(['.', '[', ']']).filter(|s| !s.is_empty()).collect();
    let Some(last) = segments.pop() else { return false };
    let mut node = value;
    for seg in segments {
        let next = match node {
            serde_yaml::Value::Mapping(m) => m.get_mut(seg),
            serde_yaml::Value::Sequence(s) => seg.parse::<usize>().ok().and_then(|i| s.get_mut(i)),
            serde_yaml::Value::Tagged(t) => match &mut t.value {
                serde_yaml::Value::Mapping(m) => m.get_mut(seg),
                _ => None,
            },
            _ => None,
        };
        let Some(next) = next else { return false };
        node = next;
    }
    match node {
        serde_yaml::Value::Mapping(m) => m.remove(last).is_some(),
        serde_yaml::Value::Sequence(s) => match last.parse::<usize>() {
            Ok(i) if i < s.len() => {
                s.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Removes every ` at line L column C` that serde_yaml and libyaml put in messages (the position is shown once).
fn strip_positions(message: &str) -> String {
    let mut out = message.to_string();
    while let Some(i) = out.find(" at line ") {
        let rest = &out[i + " at line ".len()..];
        let digits = |s: &str| s.chars().take_while(char::is_ascii_digit).count();
        let n1 = digits(rest);
        let after = &rest[n1..];
        let Some(after) = after.strip_prefix(" column ") else { break };
        let n2 = digits(after);
        if n1 == 0 || n2 == 0 {
            break;
        }
        let end = i + " at line ".len() + n1 + " column ".len() + n2;
        out.replace_range(i..end, "");
    }
    out
}

fn backticked(message: &str) -> Option<&str> {
    let mut parts = message.split('`');
    parts.next()?;
    parts.next()
}

/// Finds `token` as a key (`token:`) or as a scalar value, at or after `from`.
fn find_token(text: &str, from: Option<(usize, usize)>, token: &str, as_key: bool) -> Option<(usize, usize)> {
    // An empty token (a message quoting ``) would be found everywhere without advancing: found by fuzzing.
    if token.is_empty() {
        return None;
    }
    let first = from.map_or(1, |p| p.0);
    for (i, line) in text.lines().enumerate().skip(first.saturating_sub(1)) {
        let code = line.split(" #").next().unwrap_or(line);
        let mut search = 0;
        while let Some(off) = code[search..].find(token) {
            let pos = search + off;
            let before = code[..pos].trim_end();
            let after = code[pos + token.len()..].trim_start();
            let bounded_before = before.is_empty() || before.ends_with(['{', ',', ':', '-', '[', '"', '\'']);
            let ok = if as_key {
                bounded_before && after.starts_with(':')
            } else {
                bounded_before && (after.is_empty() || after.starts_with([',', '}', ']', '"', '\'']))
            };
            if ok {
                return Some((i + 1, pos + 1));
            }
            search = pos + token.len();
        }
    }
    None
}

/// The dotted key path of the key or value at (line, column), from indentation and flow mappings.
pub fn path_at(text: &str, line: usize, column: usize) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let here = *lines.get(line.checked_sub(1)?)?;
    let mut segments = Vec::new();
    // Keys of enclosing flow mappings on this line, innermost last, up to the column.
    let upto = &here[..column.saturating_sub(1).min(here.len())];
    let mut flow_keys: Vec<String> = Vec::new();
    let mut depth_keys: Vec<Option<String>> = Vec::new();
    let mut current = String::new();
    let mut last_key: Option<String> = None;
    for ch in upto.chars() {
        match ch {
            '{' => {
                depth_keys.push(last_key.take());
                current.clear();
            }
            '}' => {
                depth_keys.pop();
                current.clear();
            }
            ',' => current.clear(),
            ':' => {
                last_key = Some(current.trim().trim_start_matches("- ").to_string());
                current.clear();
            }
            c => current.push(c),
        }
    }
    flow_keys.extend(depth_keys.into_iter().flatten());
    // The key at the column itself (for a key), or the key whose value is there.
    let rest = &here[column.saturating_sub(1).min(here.len())..];
    let at_key = rest.split(':').next().filter(|k| !k.contains([',', '{', '}', ' ']) && rest.contains(':'));
    let own = match at_key {
        Some(k) => Some(k.to_string()),
        None => last_key,
    };
    // Block parents by indentation.
    let indent = here.len() - here.trim_start().len();
    let mut parent_indent = indent;
    for l in lines[..line - 1].iter().rev() {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let ind = l.len() - t.len();
        if ind < parent_indent {
            if let Some((k, _)) = t.trim_start_matches("- ").split_once(':') {
                segments.push(k.trim().to_string());
            }
            parent_indent = ind;
            if ind == 0 {
                break;
            }
        }
    }
    segments.reverse();
    segments.extend(flow_keys);
    if let Some(o) = own
        && segments.last() != Some(&o)
    {
        segments.push(o);
    }
    (!segments.is_empty()).then(|| segments.join("."))
}

/// Finds the line and column of a dotted field path in a YAML text, for problems found after parsing.
///
/// Handles block mappings (`key:` on its own line, nested by indentation) and a last segment inside a flow
/// mapping on the parent's line (`lat: { type: double, pii: quasi }`). Falls back to the deepest segment found.
pub fn locate(text: &str, path: &[&str]) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let mut found = (0usize, 0usize);
    // (line index, indent, whether it is a list item) of the node matched for the previous segment. An item's
    // keys are at the indent of its content: the first on the item's own line (`- table: x`), the others below.
    let mut parent: Option<(usize, usize, bool)> = None;
    for seg in path {
        if let Some((pi, pcol, item)) = parent {
            let pos = find_flow_key(lines[pi], seg)
                .or_else(|| (item && lines[pi].get(pcol..).is_some_and(|rest| is_key(rest, seg))).then_some(pcol));
            if let Some(pos) = pos {
                found = (pi + 1, pos + 1);
                parent = Some((pi, pos, false));
                continue;
            }
        }
        let index: Option<usize> = seg.parse().ok();
        let mut items_seen = 0usize;
        let mut hit = None;
        for (i, line) in lines.iter().enumerate().skip(parent.map_or(0, |(pi, _, _)| pi + 1)) {
            let trimmed = line.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let indent = line.len() - trimmed.len();
            match parent {
                Some((_, pind, true)) if indent < pind => break,
                Some((_, pind, false)) if indent <= pind && !(indent == pind && trimmed.starts_with("- ")) => break,
                None if indent > 0 => continue,
                _ => {}
            }
            if let Some(item) = trimmed.strip_prefix("- ") {
                if let Some(n) = index {
                    if items_seen == n {
                        hit = Some((i, indent + 2, true));
                        break;
                    }
                    items_seen += 1;
                    continue;
                }
                if is_key(item, seg) {
                    hit = Some((i, indent + 2, false));
                    break;
                }
            } else if is_key(trimmed, seg) {
                hit = Some((i, indent, false));
                break;
            }
        }
        match hit {
            Some((i, col, item)) => {
                found = (i + 1, col + 1);
                parent = Some((i, col, item));
            }
            None => break,
        }
    }
    found
}

fn is_key(item: &str, key: &str) -> bool {
    let rest = item
        .strip_prefix(key)
        .or_else(|| item.strip_prefix(&format!("\"{key}\"")))
        .or_else(|| item.strip_prefix(&format!("'{key}'")));
    rest.is_some_and(|r| r.trim_start().starts_with(':'))
}

fn find_flow_key(line: &str, key: &str) -> Option<usize> {
    let mut search = 0;
    while let Some(off) = line[search..].find(key) {
        let pos = search + off;
        let before = line[..pos].trim_end();
        let after = line[pos + key.len()..].trim_start();
        if (before.ends_with('{') || before.ends_with(',')) && after.starts_with(':') {
            return Some(pos);
        }
        search = pos + key.len();
    }
    None
}

/// The closest candidate by edit distance, for "did you mean" hints.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min()
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: 1\nname: x\nconnector:\n  kind: files\ncolumns:\n  a: { type: string, pii: direct }\n  b:\n    type: int\n    range: [1, 2]\n";

    /// Found by fuzzing (`lakehouse/fuzz/regressions/manifest/empty-token-hang.yaml`): a YAML anchor where a type
    /// was expected gives "unknown variant ``", and searching for the empty token never advanced.
    #[test]
    fn an_empty_token_is_not_searched() {
        assert_eq!(find_token("a: b\n", None, "", false), None);
        let text = "version: 1\ncolumns:\n  id: { type: &tring, key: true }\n";
        let err = serde_yaml::from_str::<crate::manifest::SourceManifest>(text).unwrap_err();
        let d = from_yaml_error(Path::new("sources/x.yaml"), text, &err);
        assert!(d.to_string().contains("sources/x.yaml"), "{d}");
    }

    #[test]
    fn locates_block_and_flow_keys() {
        assert_eq!(locate(DOC, &["name"]), (2, 1));
        assert_eq!(locate(DOC, &["connector", "kind"]), (4, 3));
        assert_eq!(locate(DOC, &["columns", "a"]), (6, 3));
        assert_eq!(locate(DOC, &["columns", "a", "pii"]), (6, 22));
        assert_eq!(locate(DOC, &["columns", "b", "range"]), (9, 5));
        // Missing last segment: the parent's position.
        assert_eq!(locate(DOC, &["columns", "b", "domain"]), (7, 3));
        // Keys of list items: on the item's line, below it, in a flow mapping of it; not in the next item.
        let list = "grants:\n  - table: a\n    rows: x\n    masks: { c: null }\n  - table: b\n";
        assert_eq!(locate(list, &["grants", "0"]), (2, 5));
        assert_eq!(locate(list, &["grants", "0", "table"]), (2, 5));
        assert_eq!(locate(list, &["grants", "0", "rows"]), (3, 5));
        assert_eq!(locate(list, &["grants", "0", "masks", "c"]), (4, 14));
        assert_eq!(locate(list, &["grants", "1", "table"]), (5, 5));
        assert_eq!(locate(list, &["grants", "1", "rows"]), (5, 5));
    }

    #[test]
    fn rebuilds_paths_from_positions() {
        let doc = "version: 1\nformat: { kind: csv, encoding: latin9 }\nconnector:\n  kind: files\n  locaton: x\n";
        assert_eq!(find_token(doc, Some((1, 1)), "latin9", false), Some((2, 32)));
        assert_eq!(path_at(doc, 2, 32).as_deref(), Some("format.encoding"));
        assert_eq!(find_token(doc, Some((1, 1)), "locaton", true), Some((5, 3)));
        assert_eq!(path_at(doc, 5, 3).as_deref(), Some("connector.locaton"));
    }

    #[test]
    fn suggests_close_names() {
        assert_eq!(did_you_mean("file", ["files", "http"]), Some("files"));
        assert_eq!(did_you_mean("zzzzzz", ["files", "http"]), None);
    }
}
