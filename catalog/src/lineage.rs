//! Column lineage as the catalog records it: for each output column of a model, the input columns it is
//! computed from and how, and the input columns used indirectly. Computed from DataFusion plans by the engine
//! (`lakehouse::transform::lineage`), stored in the catalog and sent in OpenLineage events.

use std::collections::BTreeSet;

use serde::Serialize;

/// How an output column is derived from an input column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    /// The value as is (renamed at most).
    Identity,
    /// A function of the value.
    Transformation,
    /// An aggregate over values.
    Aggregation,
}

/// How an input column is used without flowing into an output column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IndirectKind {
    Filter,
    Join,
    GroupBy,
    Window,
    Sort,
}

/// An input column of an output column (`*`: the rows, for `count(*)`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Source {
    /// `layer.name`.
    pub table: String,
    pub column: String,
    pub kind: EdgeKind,
    /// A privacy function is applied on the way.
    pub masked: bool,
}

/// The lineage of one model.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// Output columns in order, each with its sources.
    pub columns: Vec<(String, BTreeSet<Source>)>,
    /// Input columns used indirectly.
    pub indirect: BTreeSet<(IndirectKind, String, String)>,
}

impl EdgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identity => "identity",
            Self::Transformation => "transformation",
            Self::Aggregation => "aggregation",
        }
    }
}

impl IndirectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filter => "filter",
            Self::Join => "join",
            Self::GroupBy => "group_by",
            Self::Window => "window",
            Self::Sort => "sort",
        }
    }
}
