//! Plan phase: render every model with recording `source`/`ref`, build the DAG, check it.
//!
//! Problems found here (template errors, unknown refs, cycles, duplicate names, a gold model reading bronze,
//! SQL that does not plan against the declared schemas, sidecar columns that do not exist) are diagnostics,
//! reported by `lakehouse validate` with the manifest problems.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;

use super::template::{Names, Rendered, Renderer};
use crate::manifest::{AuditTest, Diagnostic, Diagnostics, Layer, LoadedModel, Project, diag};

/// A model and its plan-phase rendering.
#[derive(Debug, Clone)]
pub struct Model {
    pub loaded: LoadedModel,
    pub target: String,
    pub rendered: Rendered,
}

/// The models of a project in dependency order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub models: BTreeMap<String, Model>,
    /// Targets, inputs before the models reading them (ties broken by name).
    pub order: Vec<String>,
    /// Column lineage of each model whose SQL planned (filled by [`Plan::check_sql`]).
    pub lineage: BTreeMap<String, catalog::lineage::Lineage>,
    /// The output schema of each model whose SQL planned (filled by [`Plan::check_sql`]).
    pub schemas: BTreeMap<String, SchemaRef>,
    /// Things worth knowing that are not errors (indirect uses of sensitive columns).
    pub notes: Vec<String>,
}

/// Builds the [`Names`] templates see: sources, models and vars (`overrides` from `--var name=value`).
pub fn names(project: &Project, overrides: &BTreeMap<String, String>) -> Names {
    Names {
        sources: project.sources.iter().flat_map(|s| s.manifest.tables().into_iter().map(|t| t.name)).collect(),
        models: project.models.iter().map(LoadedModel::target).collect(),
        vars: project.file.vars.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        overrides: overrides.clone(),
    }
}

pub fn renderer(project: &Project, overrides: &BTreeMap<String, String>) -> Renderer {
    let shown = project.file.transforms.clone();
    Renderer::new(&project.dir.join(&shown), &shown, names(project, overrides))
}

impl Plan {
    /// The plan of an already validated project (for commands that do not report its problems), or `None` when
    /// it does not plan.
    pub async fn quiet(project: &Project) -> Option<Plan> {
        let mut diags = Diagnostics::default();
        let mut plan = Plan::build(project, &BTreeMap::new(), &mut diags);
        plan.check_sql(project, &mut diags).await;
        diags.is_empty().then_some(plan)
    }

    /// The models among `tables` and the models reading one of them, directly or not, in plan order.
    pub fn with_downstream(&self, tables: &BTreeSet<String>) -> Vec<String> {
        let mut reached = tables.clone();
        for target in &self.order {
            if self.models[target].rendered.inputs.iter().any(|i| reached.contains(i)) {
                reached.insert(target.clone());
            }
        }
        self.order.iter().filter(|t| reached.contains(*t)).cloned().collect()
    }

    /// Renders and checks every model (not the SQL: see [`Plan::check_sql`]).
    pub fn build(project: &Project, overrides: &BTreeMap<String, String>, diags: &mut Diagnostics) -> Plan {
        let renderer = renderer(project, overrides);
        let mut plan = Plan::default();
        let mut by_name: BTreeMap<&str, Vec<&LoadedModel>> = BTreeMap::new();
        for m in &project.models {
            by_name.entry(m.name.as_str()).or_default().push(m);
        }
        for (name, models) in &by_name {
            if models.len() > 1 {
                let files: Vec<String> = models.iter().map(|m| m.path.display().to_string()).collect();
                for m in models {
                    diags.push(
                        Diagnostic::new(&m.path, "", format!("duplicate model name `{name}`: {}", files.join(" and ")))
                            .hint("model names are unique across silver and gold so `ref('name')` is unambiguous; rename one"),
                    );
                }
            }
        }
        for m in &project.models {
            let target = m.target();
            match renderer.render(&m.template, &target, false) {
                Ok(rendered) => {
                    if m.layer == Layer::Gold {
                        for input in rendered.inputs.iter().filter(|i| i.starts_with("bronze.")) {
                            let name = &input["bronze.".len()..];
                            let line = line_of(&m.sql, &format!("source('{name}')"))
                                .or_else(|| line_of(&m.sql, &format!("source(\"{name}\")")));
                            let mut d = Diagnostic::new(
                                &m.path,
                                "",
                                format!("gold model `{target}` reads bronze table `{input}` directly"),
                            )
                            .hint(format!(
                                "gold reads pseudonymized silver only: build a silver model from source('{name}') and ref() it"
                            ));
                            d.line = line.unwrap_or(0);
                            diags.push(d);
                        }
                    }
                    if !rendered.config.unique_key.is_empty()
                        && rendered.config.materialized != super::template::Materialized::Incremental
                    {
                        let mut d =
                            Diagnostic::new(&m.path, "", "config(unique_key=…) needs materialized='incremental'")
                                .hint("a 'table' model is rebuilt in full; remove unique_key or make it incremental");
                        d.line = line_of(&m.sql, "unique_key").unwrap_or(0);
                        diags.push(d);
                    }
                    plan.models.insert(target.clone(), Model { loaded: m.clone(), target, rendered });
                }
                Err(d) => diags.push(d),
            }
        }
        plan.order = plan.sort(diags);
        plan
    }

    /// Topological order; cycles are reported and their models left out.
    fn sort(&self, diags: &mut Diagnostics) -> Vec<String> {
        let deps = |t: &str| -> BTreeSet<String> {
            self.models[t].rendered.inputs.iter().filter(|i| self.models.contains_key(*i)).cloned().collect()
        };
        let mut remaining: BTreeMap<String, BTreeSet<String>> =
            self.models.keys().map(|t| (t.clone(), deps(t))).collect();
        let mut order = Vec::new();
        loop {
            let ready: Vec<String> = remaining.iter().filter(|(_, d)| d.is_empty()).map(|(t, _)| t.clone()).collect();
            if ready.is_empty() {
                break;
            }
            for t in ready {
                remaining.remove(&t);
                for d in remaining.values_mut() {
                    d.remove(&t);
                }
                order.push(t);
            }
        }
        // Whatever remains is on or behind a cycle: report each cycle once.
        let mut reported = BTreeSet::new();
        for start in remaining.keys() {
            let mut path = vec![start.clone()];
            let mut cur = start.clone();
            while let Some(next) = remaining.get(&cur).and_then(|d| d.iter().next()).cloned() {
                if let Some(pos) = path.iter().position(|p| *p == next) {
                    let cycle: Vec<String> = path[pos..].to_vec();
                    let mut key = cycle.clone();
                    key.sort();
                    if reported.insert(key) {
                        let first = &self.models[&cycle[0]];
                        let shown = cycle.iter().chain(std::iter::once(&cycle[0])).cloned().collect::<Vec<_>>();
                        let mut d = Diagnostic::new(
                            &first.loaded.path,
                            "",
                            format!("dependency cycle: {}", shown.join(" → ")),
                        )
                        .hint("a model cannot read, directly or not, a model that reads it; use `this` for the model's own table");
                        d.line = line_of(&first.loaded.sql, &cycle[1 % cycle.len()]).unwrap_or(0);
                        diags.push(d);
                    }
                    break;
                }
                path.push(next.clone());
                cur = next;
            }
        }
        order
    }

    /// Plans every model's SQL against the declared bronze schemas (empty tables), in order, so unknown
    /// columns and functions, type errors and sidecar columns that do not exist are found without data.
    pub async fn check_sql(&mut self, project: &Project, diags: &mut Diagnostics) {
        let ctx = crate::session::new_session(crate::session::Functions::Planning, &project.file);
        let mut planned: BTreeSet<String> = BTreeSet::new();
        for src in &project.sources {
            let plan = crate::format::TablePlan::new(&src.manifest, &project.file);
            let name = format!("bronze.{}", src.manifest.name);
            register_empty(&ctx, &name, plan.schema.clone());
            planned.insert(name);
            for child in &plan.children {
                let name = format!("bronze.{}__{}", src.manifest.name, child.name);
                register_empty(&ctx, &name, child.plan.schema.clone());
                planned.insert(name);
            }
        }
        let mut privacy = super::lineage::PrivacyCheck::new(sensitive_columns(project));
        for target in self.order.clone() {
            let target = &target;
            let m = &self.models[target];
            // An input that failed earlier was reported already: do not cascade.
            if !m.rendered.inputs.iter().all(|i| planned.contains(i)) {
                continue;
            }
            // An incremental model reads its own table through `this`: plan the first (full) rendering.
            let schema = match crate::session::sql(&ctx, &m.rendered.sql).await {
                Ok(df) => {
                    let lineage = super::lineage::lineage(df.logical_plan(), &project.file.privacy.min_generalization);
                    let (leaks, uses) = privacy.add(target, &lineage);
                    for leak in leaks {
                        diags.push(
                            Diagnostic::new(&m.loaded.path, "", leak.to_string())
                                .hint(super::lineage::Leak::hint(&project.file.privacy.min_generalization)),
                        );
                    }
                    for (kind, sensitive, path) in uses {
                        self.notes.push(format!(
                            "{}: uses {} (pii: {}) in a {} ({path}); it is not published, but it shapes the result",
                            m.loaded.path.display(),
                            sensitive.column,
                            sensitive.class,
                            format!("{kind:?}").to_lowercase().replace("groupby", "group by")
                        ));
                    }
                    self.lineage.insert(target.clone(), lineage);
                    Arc::new(df.schema().as_arrow().clone())
                }
                Err(e) => {
                    diags.push(
                        Diagnostic::new(&m.loaded.path, "", format!("SQL: {}", crate::session::error_text(&e)))
                            .hint(format!("`lakehouse compile --select {target}` prints the rendered SQL")),
                    );
                    continue;
                }
            };
            check_sidecar(m, &schema, diags);
            self.schemas.insert(target.clone(), schema.clone());
            register_empty(&ctx, target, schema);
            planned.insert(target.clone());
            // The audits plan too (expressions, relationship targets), on the empty output.
            if let (Some(s), Some(path)) = (&m.loaded.sidecar, &m.loaded.sidecar_path) {
                for (i, t) in s.tests.iter().enumerate() {
                    let sql = super::run::audit_sql(t, &format!("{target} AS t"));
                    if let Err(e) = crate::session::sql(&ctx, &sql).await {
                        let text = m.loaded.sidecar_text.as_deref().unwrap_or_default();
                        let mut d = Diagnostic::new(
                            path,
                            format!("tests.{i}"),
                            format!("audit {}: {}", t.label(), crate::session::error_text(&e)),
                        )
                        .at(diag::locate(text, &["tests", &i.to_string()]));
                        if matches!(t, AuditTest::Relationships { .. }) {
                            d = d.hint("`to` must be a source's bronze table or a model that runs before this one");
                        }
                        diags.push(d);
                    }
                }
            }
        }
    }
}

/// The bronze columns silver and gold may expose only through a privacy function: `quasi` and `sensitive` ones,
/// and `direct` ones kept in clear (pseudonymized ones are masked at landing).
pub(crate) fn sensitive_columns(project: &Project) -> Vec<super::lineage::Sensitive> {
    let mut out = Vec::new();
    for table in project.sources.iter().flat_map(|s| s.manifest.tables()) {
        for (name, col) in &table.columns {
            let class = match col.pii {
                crate::manifest::Pii::Quasi => "quasi",
                crate::manifest::Pii::Sensitive => "sensitive",
                crate::manifest::Pii::Direct if col.keep_clear.is_some() => "direct, kept in clear",
                _ => continue,
            };
            let column = format!("bronze.{}.{name}", table.name);
            out.push(super::lineage::Sensitive { column, class: class.to_string() });
        }
    }
    out
}

fn register_empty(ctx: &datafusion::prelude::SessionContext, table: &str, schema: SchemaRef) {
    if let Ok(mem) = MemTable::try_new(schema, vec![vec![]]) {
        let _ = ctx.register_table(table, Arc::new(mem));
    }
}

/// Sidecar and config columns must exist in the model's output.
fn check_sidecar(m: &Model, schema: &SchemaRef, diags: &mut Diagnostics) {
    let columns: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let check = |path: &std::path::Path, text: Option<&str>, field_path: &[&str], column: &str| {
        if columns.contains(&column) {
            return None;
        }
        let mut d = Diagnostic::new(
            path,
            field_path.join("."),
            format!("column `{column}` is not in the output of `{}`", m.target),
        )
        .hint(match diag::did_you_mean(column, columns.iter().copied()) {
            Some(c) => format!("did you mean `{c}`?"),
            None => format!("the model's columns: {}", columns.join(", ")),
        });
        if let Some(text) = text {
            d = d.at(diag::locate(text, field_path));
        }
        Some(d)
    };
    for c in m.rendered.config.unique_key.iter().chain(&m.rendered.config.partition_by) {
        diags.extend(check(&m.loaded.path, None, &[], c));
    }
    let (Some(s), Some(path)) = (&m.loaded.sidecar, &m.loaded.sidecar_path) else { return };
    let text = m.loaded.sidecar_text.as_deref();
    for c in s.columns.keys() {
        diags.extend(check(path, text, &["columns", c.as_str()], c.as_str()));
    }
    for (i, t) in s.tests.iter().enumerate() {
        let idx = i.to_string();
        let cols: Vec<&String> = match t {
            AuditTest::NotNull { columns, .. } | AuditTest::Unique { columns, .. } => columns.iter().collect(),
            AuditTest::AcceptedValues { column, .. } | AuditTest::Relationships { column, .. } => vec![column],
            _ => Vec::new(),
        };
        for c in cols {
            diags.extend(check(path, text, &["tests", &idx], c));
        }
    }
    if let Some(sc) = &s.small_cells {
        if let Some(count) = &sc.count {
            diags.extend(check(path, text, &["small_cells", "count"], count));
            if let Some(f) = schema.fields().iter().find(|f| f.name() == count)
                && !f.data_type().is_integer()
            {
                diags.push(
                    Diagnostic::new(
                        path,
                        "small_cells.count",
                        format!("count column `{count}` is {}, not an integer", f.data_type()),
                    )
                    .at(diag::locate(text.unwrap_or_default(), &["small_cells", "count"])),
                );
            }
            if columns.contains(&"suppressed") {
                diags.push(
                    Diagnostic::new(path, "small_cells", "the model already has a `suppressed` column")
                        .at(diag::locate(text.unwrap_or_default(), &["small_cells"]))
                        .hint("suppression adds `suppressed`; rename the model's column"),
                );
            }
        }
        for c in &sc.measures {
            diags.extend(check(path, text, &["small_cells", "measures"], c));
        }
    }
}

/// The 1-based line of the first occurrence of `needle`.
pub fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|i| i + 1)
}

/// Expands `--select` arguments (`name`, `name+`, `+name`, `+name+`) into targets in plan order.
pub fn select(plan: &Plan, selectors: &[String]) -> Result<Vec<String>, Diagnostics> {
    if selectors.is_empty() {
        return Ok(plan.order.clone());
    }
    let mut chosen = BTreeSet::new();
    let mut diags = Diagnostics::default();
    for sel in selectors {
        let (up, rest) = sel.strip_prefix('+').map_or((false, sel.as_str()), |r| (true, r));
        let (down, name) = rest.strip_suffix('+').map_or((false, rest), |r| (true, r));
        let found: Vec<&String> = plan
            .models
            .keys()
            .filter(|t| t.as_str() == name || t.split_once('.').is_some_and(|(_, n)| n == name))
            .collect();
        let [target] = found[..] else {
            let mut d = Diagnostic::new("<command line>", "--select", format!("no model named `{name}`"));
            d = match diag::did_you_mean(name, plan.models.keys().map(String::as_str)) {
                Some(m) => d.hint(format!("did you mean `{m}`?")),
                None => d.hint(format!("models: {}", plan.order.join(", "))),
            };
            diags.push(d);
            continue;
        };
        chosen.insert(target.clone());
        if up {
            let mut stack = vec![target.clone()];
            while let Some(t) = stack.pop() {
                for i in &plan.models[&t].rendered.inputs {
                    if plan.models.contains_key(i) && chosen.insert(i.clone()) {
                        stack.push(i.clone());
                    }
                }
            }
        }
        if down {
            chosen.extend(plan.with_downstream(&BTreeSet::from([target.clone()])));
        }
    }
    if !diags.is_empty() {
        return Err(diags);
    }
    Ok(plan.order.iter().filter(|t| chosen.contains(*t)).cloned().collect())
}
