//! Who reads what: the access policy (`access/*.yaml`) and its enforcement in the query plan.
//!
//! The policy is code ([`crate::manifest::policy`]), reviewed by pull request like manifests: roles (a partner, attributes), and grants on
//! `layer.table` patterns with an optional row filter (a SQL predicate) and column masks. **Default deny**: a
//! table no role of the reader grants is not served at all. Bronze and quarantine tables are never served;
//! a silver table only with a DPO approval reference. With several roles, the row filters of the grants that
//! serve a table are OR-ed (one grant without filter serves every row) and a column masked by any of them stays
//! masked (the most restrictive mask wins: two different masks give NULL).
//!
//! Enforcement ([`enforce`]) rewrites every scan of a served table in the logical plan, before optimization, so
//! no statement — subquery, CTE, join, `UNION`, `EXPLAIN ANALYZE`, a prepared statement — reads around it.
//! `lakehouse validate` plans every grant's filter and masks on the tables' real schemas and reports a problem
//! at `file:line:col`, like a manifest's.

pub mod enforce;
pub mod scram;

use std::collections::BTreeMap;

use arrow::datatypes::SchemaRef;

use crate::manifest::ProjectFile;
use crate::manifest::diag::{self, Diagnostics};
pub use crate::manifest::policy::{Attribute, Grant, Policy, PolicyFile, Role, RoleSpec, Scalar, glob};

/// The layers a grant may name. Bronze (clear direct identifiers before pseudonymization in quarantine,
/// pseudonyms in bronze) is the pipeline's own.
pub const SERVED_LAYERS: [&str; 4] = ["silver", "gold", "system", "catalog"];

impl Policy {
    /// Checks the policy against the deployment: role names, partners, table patterns, approvals, and every
    /// grant's filter and masks planned on each table it serves (`tables`: every table that can be served, by
    /// `layer.name`, with its schema).
    pub async fn check(&self, project: &ProjectFile, tables: &BTreeMap<String, SchemaRef>, diags: &mut Diagnostics) {
        let partners: Vec<&str> = project.partners.iter().map(|p| p.id.as_str()).collect();
        for role in self.roles.values() {
            let name = role.name.as_str();
            if let Err(message) = crate::manifest::names::check_identifier(name, "role name") {
                diags.push(role.problem(&["roles", name], message));
            }
            if let Some(p) = &role.spec.partner
                && !partners.contains(&p.as_str())
            {
                let mut d = role.problem(&["roles", name, "partner"], format!("unknown partner `{p}`"));
                d = d.hint(match diag::did_you_mean(p, partners.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`? partners are declared in lakehouse.yaml"),
                    None => "partners are declared under `partners:` in lakehouse.yaml".to_string(),
                });
                diags.push(d);
            }
            for (i, grant) in role.spec.grants.iter().enumerate() {
                let at = ["roles", name, "grants", &i.to_string()];
                match matching_tables(&grant.table, tables) {
                    Err(message) => {
                        let table_path = [&at[..], &["table"]].concat();
                        let mut d = role.problem(&table_path, message);
                        let known = tables.keys().map(String::as_str);
                        if let Some(close) = diag::did_you_mean(&grant.table, known) {
                            d = d.hint(format!("did you mean `{close}`?"));
                        } else if grant.table.starts_with("bronze.") {
                            d = d.hint("grant the silver or gold tables built from it");
                        }
                        diags.push(d);
                    }
                    Ok(matched) => {
                        if matched.iter().any(|t| t.starts_with("silver."))
                            && grant.approval.as_deref().is_none_or(|a| a.trim().is_empty())
                        {
                            diags.push(
                                role.problem(
                                    &at,
                                    format!("`{}` serves silver tables without an approval", grant.table),
                                )
                                .hint("silver holds row-level data: add `approval: <the DPO's reference>`"),
                            );
                        }
                        for table in matched {
                            let schema = &tables[table];
                            for column in grant.masks.keys() {
                                if schema.field_with_name(column).is_err() {
                                    let mask_path = [&at[..], &["masks", column]].concat();
                                    diags.push(
                                        role.problem(&mask_path, format!("{table} has no column `{column}` to mask")),
                                    );
                                }
                            }
                            if let Err(e) = enforce::check_grant(project, role, grant, table, schema.clone()).await {
                                diags.push(
                                    role.problem(&[&at[..], &[e.field]].concat(), format!("{table}: {}", e.message)),
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The problems of the project's policy against every table it may serve (those of `plan`, [`servable_tables`]).
pub async fn policy_problems(project: &crate::manifest::Project, plan: &crate::transform::Plan) -> Diagnostics {
    let mut diags = Diagnostics::default();
    project.policy.check(&project.file, &servable_tables(plan), &mut diags).await;
    diags
}

/// What must hold before anyone is served under the project's policy: the models plan, and the policy checks
/// against the tables they make. Every problem, sorted, otherwise.
pub async fn check_enforceable(project: &crate::manifest::Project) -> Result<(), String> {
    let plan = crate::transform::Plan::quiet(project)
        .await
        .ok_or("the models do not plan, so the access policy cannot be checked: run `lakehouse validate`")?;
    let diags = policy_problems(project, &plan).await;
    if diags.is_empty() { Ok(()) } else { Err(diags.sorted().to_string()) }
}

/// Every table a grant may serve, by `layer.name`, with its schema: the models (silver and gold, as planned),
/// `system.runs`, the query server's log `system.queries` and the catalog's tables.
pub fn servable_tables(plan: &crate::transform::Plan) -> BTreeMap<String, SchemaRef> {
    let mut out: BTreeMap<String, SchemaRef> = plan.schemas.clone();
    out.insert("system.runs".into(), crate::runlog::schema());
    out.insert("system.queries".into(), crate::serve::querylog::schema());
    if let Ok(views) = crate::catalog_sync::catalog_batches(&catalog::Snapshot::default()) {
        out.extend(views.into_iter().map(|(name, batch)| (format!("catalog.{name}"), batch.schema())));
    }
    out
}

/// The tables a grant's `table` pattern serves, or why it serves none.
fn matching_tables<'a>(pattern: &str, tables: &'a BTreeMap<String, SchemaRef>) -> Result<Vec<&'a String>, String> {
    let Some((layer, _)) = pattern.split_once('.') else {
        return Err(format!("`{pattern}` is not `layer.table` (e.g. `gold.*`, `gold.fire_response_times`)"));
    };
    if !SERVED_LAYERS.contains(&layer) {
        return Err(format!(
            "`{pattern}`: the {layer} layer is never served; grants name {}",
            SERVED_LAYERS.map(|l| format!("{l}.*")).join(", ")
        ));
    }
    let matched: Vec<&String> = tables.keys().filter(|t| glob(pattern, t)).collect();
    if matched.is_empty() {
        return Err(format!("`{pattern}` names no table of this deployment"));
    }
    Ok(matched)
}

/// Who runs a statement: the user and the roles the policy gives them.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user: String,
    pub roles: Vec<Role>,
}

impl Identity {
    /// The grants of the identity's roles that serve `table` (`layer.name`).
    pub fn grants(&self, table: &str) -> Vec<(&Role, &Grant)> {
        self.roles
            .iter()
            .flat_map(|r| r.spec.grants.iter().map(move |g| (r, g)))
            .filter(|(_, g)| glob(&g.table, table) && !table.ends_with("__quarantine"))
            .filter(|(_, g)| g.table.split_once('.').is_some_and(|(l, _)| SERVED_LAYERS.contains(&l)))
            .collect()
    }

    /// Whether any role serves `table`.
    pub fn serves(&self, table: &str) -> bool {
        !self.grants(table).is_empty()
    }
}
