//! Drop zones: the roots under which `files` connectors may read, declared in `lakehouse.yaml`.
//!
//! A location is compared with the roots after it is made absolute, `.` and `..` are removed and, for local
//! paths, symbolic links in the part that exists are resolved, so `../keys` or a link to `/etc` cannot leave a
//! drop zone. An `s3://` location must be in the same bucket under the root's prefix, on a `/` boundary.

use std::path::{Component, Path, PathBuf};

/// A location or root, resolved for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Zone {
    Local(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Zone {
    /// Resolves a location (`dir`, `file:///dir`, `s3://bucket/prefix`) relative to the project directory.
    pub fn resolve(project_dir: &Path, location: &str) -> Result<Self, String> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, path) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("no bucket".into());
            }
            let mut segments = Vec::new();
            for s in path.split('/').filter(|s| !s.is_empty()) {
                match s {
                    "." => {}
                    ".." => return Err("`..` is not allowed in an s3:// location".into()),
                    s => segments.push(s),
                }
            }
            return Ok(Self::S3 { bucket: bucket.to_string(), prefix: segments.join("/") });
        }
        if location.contains("://") && !location.starts_with("file://") {
            return Err("only directories, file:// and s3:// locations are supported".into());
        }
        let path = location.strip_prefix("file://").unwrap_or(location);
        Ok(Self::Local(resolve_local(&project_dir.join(path))))
    }

    /// Whether `self` is `root` or lies inside it.
    pub fn is_within(&self, root: &Zone) -> bool {
        match (self, root) {
            (Self::Local(p), Self::Local(r)) => p.starts_with(r),
            (Self::S3 { bucket: b, prefix: p }, Self::S3 { bucket: rb, prefix: rp }) => {
                b == rb && (rp.is_empty() || p == rp || p.starts_with(&format!("{rp}/")))
            }
            _ => false,
        }
    }
}

/// `path` made absolute without `.` and `..`, with the symbolic links of its longest existing prefix resolved.
pub fn resolve_local(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut clean = PathBuf::new();
    for c in absolute.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                // `..` after a link means the link's parent: resolve what exists so far first.
                clean = std::fs::canonicalize(&clean).unwrap_or(clean);
                clean.pop();
            }
            other => clean.push(other),
        }
    }
    // The longest prefix that exists, with its links resolved, then the rest as written.
    let mut existing = clean.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_os_string()),
            None => break,
        }
        existing.pop();
    }
    let mut out = std::fs::canonicalize(&existing).unwrap_or(existing);
    out.extend(rest.iter().rev());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_are_compared_after_resolution() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("drops/police")).unwrap();
        std::fs::create_dir_all(d.join("secret")).unwrap();
        let root = Zone::resolve(d, "drops").unwrap();
        assert!(Zone::resolve(d, "drops/police").unwrap().is_within(&root));
        assert!(Zone::resolve(d, "./drops/not-yet/").unwrap().is_within(&root));
        assert!(!Zone::resolve(d, "drops/../secret").unwrap().is_within(&root));
        assert!(!Zone::resolve(d, "dropsx").unwrap().is_within(&root));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(d.join("secret"), d.join("drops/link")).unwrap();
            assert!(!Zone::resolve(d, "drops/link").unwrap().is_within(&root));
            assert!(!Zone::resolve(d, "drops/link/sub").unwrap().is_within(&root));
        }
        let s3 = Zone::resolve(d, "s3://drops/ddsp/").unwrap();
        assert!(Zone::resolve(d, "s3://drops/ddsp/2026").unwrap().is_within(&s3));
        assert!(!Zone::resolve(d, "s3://drops/ddspx").unwrap().is_within(&s3));
        assert!(!Zone::resolve(d, "s3://other/ddsp").unwrap().is_within(&s3));
        assert!(Zone::resolve(d, "s3://drops/ddsp/../keys").is_err());
        assert!(!Zone::resolve(d, "s3://drops/ddsp").unwrap().is_within(&root));
    }
}
