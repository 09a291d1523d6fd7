//! Transform models: `transforms/<layer>/<name>.sql` and the optional sidecar `<name>.yaml` beside it.
//!
//! The SQL template is rendered by [`crate::transform`]; this module only finds the files and parses sidecars
//! (serde_yaml stays inside `manifest/`).

use std::fmt;
use std::path::PathBuf;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::names::{ColumnName, CronSchedule, Duration};

/// The layer a model writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    Bronze,
    Silver,
    Gold,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bronze => "bronze",
            Self::Silver => "silver",
            Self::Gold => "gold",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bronze" => Some(Self::Bronze),
            "silver" => Some(Self::Silver),
            "gold" => Some(Self::Gold),
            _ => None,
        }
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model file and its sidecar, as found on disk.
#[derive(Debug, Clone)]
pub struct LoadedModel {
    pub layer: Layer,
    pub name: String,
    /// Template path relative to the project (`transforms/silver/x.sql`).
    pub path: PathBuf,
    /// Template name for the loader rooted at `transforms/` (`silver/x.sql`).
    pub template: String,
    pub sql: String,
    pub sidecar: Option<ModelSidecar>,
    /// Sidecar path relative to the project, when there is one.
    pub sidecar_path: Option<PathBuf>,
    /// Sidecar text (for locating diagnostics).
    pub sidecar_text: Option<String>,
}

impl LoadedModel {
    /// `silver.x`.
    pub fn target(&self) -> String {
        format!("{}.{}", self.layer, self.name)
    }
}

/// The sidecar `<name>.yaml` of a model: documentation, audits and privacy settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelSidecar {
    /// Format version; only `1` exists.
    pub version: u32,
    #[serde(default)]
    pub description: Option<String>,
    /// Column documentation.
    #[serde(default)]
    pub columns: IndexMap<ColumnName, ColumnDoc>,
    /// Audits run on the new data before it is committed (write, audit, publish).
    #[serde(default)]
    pub tests: Vec<AuditTest>,
    /// Small-cell suppression of a gold model (required for gold models).
    #[serde(default)]
    pub small_cells: Option<SmallCells>,
    /// Privacy notes for the DPO (how the model protects people).
    #[serde(default)]
    pub privacy: Option<String>,
    /// Run on this schedule as well as when an input changes (read by the scheduler).
    #[serde(default)]
    pub schedule: Option<CronSchedule>,
    /// When new data triggers this model under the scheduler, it runs at most once per this interval (the
    /// models reading it wait with it): a stream upstream commits a batch every second or so, and the data that
    /// lands meanwhile is taken by the next run.
    #[serde(default)]
    pub min_interval: Option<Duration>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ColumnDoc {
    #[serde(default)]
    pub description: Option<String>,
}

/// What a failing audit does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Abort: nothing is committed, readers keep seeing the previous version.
    #[default]
    Error,
    /// Commit anyway and report the failure.
    Warn,
}

/// One audit. Each counts the rows that fail it; any failing row fails the audit.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "check", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditTest {
    /// No null in these columns.
    NotNull {
        columns: Vec<String>,
        #[serde(default)]
        severity: Severity,
    },
    /// No two rows with the same values in these columns.
    Unique {
        columns: Vec<String>,
        #[serde(default)]
        severity: Severity,
    },
    /// Every non-null value of the column is one of these.
    AcceptedValues {
        column: String,
        values: Vec<String>,
        #[serde(default)]
        severity: Severity,
    },
    /// Every non-null value of the column exists in `field` of the table `to` (`silver.x`).
    Relationships {
        column: String,
        to: String,
        field: String,
        #[serde(default)]
        severity: Severity,
    },
    /// A SQL boolean expression every row satisfies (null counts as a failure).
    Expression {
        sql: String,
        #[serde(default)]
        severity: Severity,
    },
    /// Bounds on the number of rows of the new table.
    RowCount {
        #[serde(default)]
        min: Option<u64>,
        #[serde(default)]
        max: Option<u64>,
        #[serde(default)]
        severity: Severity,
    },
}

impl AuditTest {
    pub fn severity(&self) -> Severity {
        match self {
            Self::NotNull { severity, .. }
            | Self::Unique { severity, .. }
            | Self::AcceptedValues { severity, .. }
            | Self::Relationships { severity, .. }
            | Self::Expression { severity, .. }
            | Self::RowCount { severity, .. } => *severity,
        }
    }

    /// A short description for reports: `unique(incident_token)`.
    pub fn label(&self) -> String {
        match self {
            Self::NotNull { columns, .. } => format!("not_null({})", columns.join(", ")),
            Self::Unique { columns, .. } => format!("unique({})", columns.join(", ")),
            Self::AcceptedValues { column, .. } => format!("accepted_values({column})"),
            Self::Relationships { column, to, field, .. } => format!("relationships({column} → {to}.{field})"),
            Self::Expression { sql, .. } => format!("expression({sql})"),
            Self::RowCount { min, max, .. } => format!(
                "row_count({}..{})",
                min.map_or(String::new(), |m| m.to_string()),
                max.map_or(String::new(), |m| m.to_string())
            ),
        }
    }
}

/// Small-cell suppression: cells whose count is below the project's `privacy.min_group_size` are published with
/// their count and measures set to null and `suppressed = true`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmallCells {
    /// The column holding the number of people or events in the cell.
    #[serde(default)]
    pub count: Option<String>,
    /// Other columns computed from the cell's rows (averages, sums): nulled with the count.
    #[serde(default)]
    pub measures: Vec<String>,
    /// Instead of `count`: why this gold model needs no suppression (e.g. no data about people).
    #[serde(default)]
    pub exempt: Option<String>,
}

/// Reads a sidecar (version first, then the typed body); problems go to `diags`.
pub(super) fn parse_sidecar(
    path: &std::path::Path,
    text: &str,
    diags: &mut super::Diagnostics,
) -> Option<ModelSidecar> {
    super::parse_versioned::<ModelSidecar>(path, text, diags)
}
