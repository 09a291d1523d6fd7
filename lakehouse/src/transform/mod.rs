//! Transforms: SQL models in `transforms/silver/` and `transforms/gold/`, templated with minijinja, run on
//! DataFusion, published as Delta tables at `<warehouse>/<layer>/<name>`.
//!
//! - [`template`]: the minijinja environment (`source`, `ref`, `this`, `config`, `is_incremental`, `var`, macros).
//! - [`plan`]: the plan phase — render with recording `source`/`ref`, build and check the DAG, plan the SQL
//!   against the declared schemas.
//! - [`run`]: the run phase — pinned input versions, full or incremental builds, write, audit, publish.

pub mod lineage;
pub mod plan;
pub mod run;
pub mod template;

pub use plan::{Model, Plan, select};
pub use run::{AuditOutcome, Mode, Outcome, RunOptions, TransformError, TransformReport};
pub use template::{Materialized, ModelConfig};
