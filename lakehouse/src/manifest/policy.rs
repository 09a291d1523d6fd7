//! `access/*.yaml`: the access policy as written — roles (a partner, attributes) and their grants on
//! `layer.table` patterns, with row filters and masks. [`crate::access`] checks it against the tables' schemas
//! and enforces it in the query plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde::Deserialize;

use super::diag::{self, Diagnostic, Diagnostics};

/// One file of `access/`: roles by name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Format version of this file; only `1` exists.
    pub version: u32,
    #[serde(default)]
    pub roles: IndexMap<String, RoleSpec>,
}

/// A role as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleSpec {
    #[serde(default)]
    pub description: Option<String>,
    /// The partner (`partners[].id` of `lakehouse.yaml`) this role reads for: `current_partner()` in filters.
    #[serde(default)]
    pub partner: Option<String>,
    /// Values filters and masks read with `current_attribute('name')`: a string, a number, a boolean or a
    /// list of them.
    #[serde(default)]
    pub attributes: IndexMap<String, Attribute>,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

/// A role attribute.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Attribute {
    Scalar(Scalar),
    List(Vec<Scalar>),
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

/// Read access to the tables `table` names.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `layer.table`, where `*` in the table name matches any characters (`gold.*`, `silver.ddsp_*`).
    pub table: String,
    /// The rows served: a SQL predicate over the table's columns, which may use `current_user` (without
    /// parentheses, as in PostgreSQL), `current_role()`, `current_partner()` and `current_attribute('name')`.
    /// All rows when absent.
    #[serde(default)]
    pub rows: Option<String>,
    /// Column → SQL expression served in its place (cast to the column's type), or `null` for NULL.
    #[serde(default)]
    pub masks: IndexMap<String, Option<String>>,
    /// The DPO's approval reference; required for a silver table.
    #[serde(default)]
    pub approval: Option<String>,
}

/// A role of the policy, with where it is written.
#[derive(Debug, Clone)]
pub struct Role {
    pub name: String,
    pub spec: RoleSpec,
    /// The policy file (relative to the project) and its text, to locate problems.
    pub file: PathBuf,
    pub(crate) text: Arc<str>,
}

impl Role {
    pub(crate) fn locate(&self, path: &[&str]) -> (usize, usize) {
        diag::locate(&self.text, path)
    }

    pub(crate) fn problem(&self, path: &[&str], message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(&self.file, path.join("."), message).at(self.locate(path))
    }
}

/// The whole policy of a deployment: every role of every file of `access/`.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub roles: BTreeMap<String, Role>,
}

impl Policy {
    /// Reads the `*.yaml` files of `dir` (relative to the project `root`); no directory is an empty policy
    /// (nothing served to anyone). Syntax and structure problems go to `diags`.
    pub fn load(root: &Path, dir: &Path, diags: &mut Diagnostics) -> std::io::Result<Self> {
        let mut policy = Self::default();
        for path in super::yaml_files(&root.join(dir))? {
            let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
            let text: Arc<str> = std::fs::read_to_string(&path)?.into();
            let Some(file) = super::parse_versioned::<PolicyFile>(&rel, &text, diags) else { continue };
            for (name, spec) in file.roles {
                let role = Role { name: name.clone(), spec, file: rel.clone(), text: text.clone() };
                if let Some(first) = policy.roles.get(&name) {
                    diags.push(role.problem(&["roles", &name], format!("role `{name}` is defined twice")).hint(
                        format!("it is first defined in {}; give one of them another name", first.file.display()),
                    ));
                    continue;
                }
                policy.roles.insert(name, role);
            }
        }
        Ok(policy)
    }

    /// The role named `name`, or an error that lists the roles.
    pub fn role(&self, name: &str) -> Result<&Role, String> {
        self.roles.get(name).ok_or_else(|| {
            let known = self.roles.keys().map(String::as_str);
            match diag::did_you_mean(name, known) {
                Some(close) => format!("unknown role `{name}`: did you mean `{close}`?"),
                None if self.roles.is_empty() => {
                    format!("unknown role `{name}`: the access policy (access/*.yaml) defines no role")
                }
                None => format!(
                    "unknown role `{name}`: the roles are {}",
                    self.roles.keys().map(|r| format!("`{r}`")).collect::<Vec<_>>().join(", ")
                ),
            }
        })
    }
}

/// Whether `pattern` (`*` matches any run of characters) matches `name`.
pub fn glob(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, rest)) => {
            let Some(tail) = name.strip_prefix(head) else { return false };
            (0..=tail.len()).filter(|&i| tail.is_char_boundary(i)).any(|i| glob(rest, &tail[i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_whole_names() {
        assert!(glob("gold.*", "gold.fire_response_times"));
        assert!(glob("silver.ddsp_*", "silver.ddsp_incidents"));
        assert!(!glob("silver.ddsp_*", "silver.bmpm_interventions"));
        assert!(glob("gold.fire_response_times", "gold.fire_response_times"));
        assert!(!glob("gold.fire", "gold.fire_response_times"));
        assert!(glob("gold.*_daily", "gold.incidents_weather_daily"));
        assert!(!glob("gold.*_daily", "gold.incidents_weather_daily_x"));
    }
}
