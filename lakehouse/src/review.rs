//! What a change set changes, for reviewers and the DPO (`lakehouse plan`): two loaded projects (the base, e.g. the
//! target branch, and the proposed one) compared declaration by declaration — sources and their columns, privacy
//! classes, domains, retention, partners, the privacy settings, models, their inputs and small-cell settings, the
//! access policy. Changes that touch personal data are marked; their canonical text is hashed into the change
//! set's id, which a DPO approval in `approvals.yaml` names.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::manifest::{Approval, Column, LoadedModel, Pii, Project};
use crate::transform::Plan;

/// One change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Change {
    /// `sources`, `models`, `dag`, `access`, `partners`, `privacy`.
    pub area: String,
    /// `ddsp_incidents`, `gold.x`, `role ddsp`, `partner rtm`.
    pub subject: String,
    pub what: String,
    /// It touches personal data: the DPO approves it.
    pub privacy: bool,
}

/// What a change set changes.
#[derive(Debug, Clone, Serialize)]
pub struct Review {
    /// The base it is compared with (a git ref).
    pub base: String,
    pub changes: Vec<Change>,
    /// Models that will rebuild in full on their next run (their definition changed, they are new, or an input
    /// they read is rebuilt in full).
    pub full_rebuilds: Vec<String>,
    /// The hash of the privacy-relevant changes (16 hex digits), when there are some.
    pub change_set: Option<String>,
    /// The DPO approval naming that hash, if there is one.
    pub approval: Option<Approval>,
    /// Row counts of the changed models now and as the change set computes them (`--preview`).
    pub preview: Vec<Preview>,
}

/// A changed model's rows on the current lake: its table now, and its new SQL over the current tables of its
/// inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub model: String,
    /// `None`: not built yet.
    pub rows_now: Option<u64>,
    /// The rows the new definition gives, or why it could not be computed.
    pub rows_after: Result<u64, String>,
}

/// Computes the [`Preview`] of the models the change set rebuilds, on the lake of `lh` (the proposed project).
pub async fn preview(lh: &crate::Lakehouse, review: &mut Review) {
    let plan = Plan::build(&lh.project, &BTreeMap::new(), &mut Default::default());
    let ctx = crate::session::new_session(crate::session::Functions::Keyed(lh.keys.clone()), &lh.project.file);
    let mut registered = BTreeSet::new();
    for target in &review.full_rebuilds {
        let Some(model) = plan.models.get(target) else { continue };
        let rows_now = match lh.warehouse.open_table(target).await {
            Ok(Some(t)) => crate::storage::rows::count_table(&t, None).await.ok(),
            _ => None,
        };
        let mut missing = None;
        for input in &model.rendered.inputs {
            if !registered.insert(input.clone()) {
                continue;
            }
            match lh.warehouse.open_table(input).await {
                Ok(Some(t)) => {
                    let registered = async {
                        t.update_datafusion_session(&ctx.state()).map_err(|e| e.to_string())?;
                        let provider = t.table_provider().await.map_err(|e| e.to_string())?;
                        ctx.register_table(input.as_str(), provider).map_err(|e| e.to_string())
                    };
                    if let Err(e) = registered.await {
                        missing = Some(format!("input {input}: {e}"));
                    }
                }
                Ok(None) => missing = Some(format!("input {input} is not built")),
                Err(e) => missing = Some(format!("input {input}: {e}")),
            }
        }
        let rows_after = match missing {
            Some(why) => Err(why),
            None => match crate::transform::run::build_frame(lh, &ctx, model, &model.rendered.sql).await {
                Ok(df) => df.count().await.map(|n| n as u64).map_err(|e| crate::session::error_text(&e)),
                Err(e) => Err(e.to_string()),
            },
        };
        review.preview.push(Preview { model: target.clone(), rows_now, rows_after });
    }
}

/// Compares the declarations of `lh`'s project with its lake as it is (`lakehouse plan --against-lake`): each
/// source's declared bronze columns with its table's, the key each pseudonymized domain is written with, each
/// model's definition with the one its table was last built from.
pub async fn against_lake(lh: &crate::Lakehouse, approvals: &[Approval]) -> Review {
    use deltalake::kernel::StructType;
    use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
    let mut out = Vec::new();
    let project = &lh.project;
    for src in &project.sources {
        let m = &src.manifest;
        let plan = crate::format::TablePlan::new(m, &project.file);
        let mut tables = vec![(m.name.to_string(), plan.schema.clone())];
        tables.extend(plan.children.iter().map(|c| (format!("{}__{}", m.name, c.name), c.plan.schema.clone())));
        let declared: BTreeMap<String, Column> =
            m.tables().iter().flat_map(|t| t.columns.iter().map(|(n, c)| (n.to_string(), (*c).clone()))).collect();
        for (table, schema) in tables {
            let name = format!("bronze.{table}");
            let t = match lh.warehouse.open_table(&name).await {
                Ok(Some(t)) => t,
                Ok(None) => {
                    let personal = declared.values().any(|c| c.pii != Pii::None);
                    change(&mut out, "sources", m.name.as_str(), format!("{name} is not ingested yet"), personal);
                    continue;
                }
                Err(e) => {
                    change(&mut out, "sources", m.name.as_str(), format!("{name} cannot be read: {e}"), false);
                    continue;
                }
            };
            let Ok(snapshot) = t.snapshot() else { continue };
            let found: BTreeMap<String, String> =
                snapshot.schema().fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect();
            let wanted: BTreeMap<String, String> = match schema.as_ref().try_into_kernel() {
                Ok(k) => {
                    let k: StructType = k;
                    k.fields().map(|f| (f.name().to_string(), f.data_type().to_string())).collect()
                }
                Err(_) => continue,
            };
            for (col, ty) in &wanted {
                match found.get(col) {
                    None => {
                        let c = declared.get(col);
                        let what = match c {
                            Some(c) => {
                                format!("column `{col}` declared, not in {name} yet ({}, pii: {})", self::ty(c), pii(c))
                            }
                            None => format!("column `{col}` not in {name} yet"),
                        };
                        change(&mut out, "sources", m.name.as_str(), what, c.is_some_and(|c| c.pii != Pii::None));
                    }
                    Some(t) if t != ty => change(
                        &mut out,
                        "sources",
                        m.name.as_str(),
                        format!("column `{col}`: {name} holds {t}, the manifest declares {ty}"),
                        false,
                    ),
                    Some(_) => {}
                }
            }
            for col in found.keys().filter(|c| !wanted.contains_key(*c)) {
                change(
                    &mut out,
                    "sources",
                    m.name.as_str(),
                    format!("column `{col}` of {name} is no longer declared"),
                    false,
                );
            }
            let properties = snapshot.metadata().configuration().clone();
            for domain in plan.domains() {
                let Ok(key) = lh.keys.get(domain) else { continue };
                match properties.get(&crate::storage::key_property(domain)) {
                    Some(recorded) if recorded == &key.id => {}
                    Some(recorded) => change(
                        &mut out,
                        "privacy",
                        format!("domain {domain}"),
                        format!(
                            "{name}: pseudonyms written with key {recorded}, the current key is {} (rotated)",
                            key.id
                        ),
                        false,
                    ),
                    None => {}
                }
            }
        }
    }
    let plan = Plan::build(project, &BTreeMap::new(), &mut Default::default());
    let mut rebuilt = BTreeSet::new();
    for target in &plan.order {
        let model = &plan.models[target];
        let t = match lh.warehouse.open_table(target).await {
            Ok(Some(t)) => t,
            _ => {
                change(&mut out, "models", target, "not built yet", target.starts_with("gold."));
                rebuilt.insert(target.clone());
                continue;
            }
        };
        let def = crate::transform::run::definition(lh, model);
        match crate::transform::run::last_run(&t).await {
            Some(run)
                if run.sql_hash.as_deref() == Some(def.sql_hash.as_str()) && run.manifest_hash == def.manifest_hash => {
            }
            Some(_) => {
                change(
                    &mut out,
                    "models",
                    target,
                    "its definition differs from the one its table was built from",
                    false,
                );
                rebuilt.insert(target.clone());
            }
            None => {
                change(
                    &mut out,
                    "models",
                    target,
                    "its table's last commit is not a model run (erasure, retention, compaction)",
                    false,
                );
                rebuilt.insert(target.clone());
            }
        }
    }
    // A model rebuilt in full rewrites its table: the models reading it rebuild in full after it.
    finish(out, plan.with_downstream(&rebuilt), "the lake", approvals)
}

impl Review {
    /// Privacy-relevant changes without an approval.
    pub fn needs_approval(&self) -> bool {
        self.change_set.is_some() && self.approval.is_none()
    }
}

/// Compares `head` with `base` (named `base_name`), with the approvals of `head`.
pub fn review(base: &Project, head: &Project, base_name: &str, approvals: &[Approval]) -> Review {
    let mut changes = Vec::new();
    sources(base, head, &mut changes);
    project(base, head, &mut changes);
    access(base, head, &mut changes);
    let full_rebuilds = models(base, head, &mut changes);
    finish(changes, full_rebuilds, base_name, approvals)
}

/// Sorts the changes, hashes the privacy-relevant ones into the change set's id and finds its approval.
fn finish(mut changes: Vec<Change>, full_rebuilds: Vec<String>, base: &str, approvals: &[Approval]) -> Review {
    changes.sort();
    changes.dedup();
    let privacy: Vec<String> =
        changes.iter().filter(|c| c.privacy).map(|c| format!("{}\t{}\t{}", c.area, c.subject, c.what)).collect();
    let change_set = (!privacy.is_empty()).then(|| hex::encode(&Sha256::digest(privacy.join("\n").as_bytes())[..8]));
    let approval = change_set.as_ref().and_then(|h| approvals.iter().find(|a| a.change_set.trim() == h).cloned());
    Review { base: base.to_string(), changes, full_rebuilds, change_set, approval, preview: Vec::new() }
}

fn change(out: &mut Vec<Change>, area: &str, subject: impl Into<String>, what: impl Into<String>, privacy: bool) {
    out.push(Change { area: area.into(), subject: subject.into(), what: what.into(), privacy });
}

fn pii(c: &Column) -> String {
    let mut s = format!("{:?}", c.pii).to_lowercase();
    if let Some(d) = &c.domain {
        s.push_str(&format!(", domain {d}"));
    }
    if let Some(approval) = &c.keep_clear {
        s.push_str(&format!(", kept in clear (approval {approval})"));
    }
    s
}

fn ty(c: &Column) -> String {
    format!("{:?}", c.ty).to_lowercase()
}

fn sources(base: &Project, head: &Project, out: &mut Vec<Change>) {
    let by_name = |p: &Project| -> BTreeMap<String, crate::manifest::SourceManifest> {
        p.sources.iter().map(|s| (s.manifest.name.to_string(), s.manifest.clone())).collect()
    };
    let (old, new) = (by_name(base), by_name(head));
    for (name, m) in &new {
        let personal: Vec<String> = m
            .tables()
            .iter()
            .flat_map(|t| {
                t.columns.iter().filter(|(_, c)| c.pii != Pii::None).map(|(n, c)| format!("{n} ({})", pii(c)))
            })
            .collect();
        let Some(o) = old.get(name) else {
            let what = if personal.is_empty() {
                format!("new source from partner {} (no personal data)", m.owner)
            } else {
                format!("new source from partner {} with personal data: {}", m.owner, personal.join(", "))
            };
            change(out, "sources", name, what, !personal.is_empty());
            continue;
        };
        let field = |out: &mut Vec<Change>, label: &str, a: String, b: String, privacy: bool| {
            if a != b {
                change(out, "sources", name, format!("{label}: {a} → {b}"), privacy);
            }
        };
        field(out, "owner", o.owner.to_string(), m.owner.to_string(), true);
        field(out, "agreement", fmt_opt(&o.agreement), fmt_opt(&m.agreement), true);
        field(out, "retention", o.retention.to_string(), m.retention.to_string(), true);
        field(out, "purpose", fmt_opt(&o.purpose), fmt_opt(&m.purpose), true);
        field(
            out,
            "legal basis",
            fmt_opt(&o.legal_basis.map(|b| format!("{b:?}"))),
            fmt_opt(&m.legal_basis.map(|b| format!("{b:?}"))),
            true,
        );
        field(out, "data subjects", o.data_subjects.join(", "), m.data_subjects.join(", "), true);
        field(out, "schedule", format!("{:?}", o.schedule), format!("{:?}", m.schedule), false);
        field(out, "load", format!("{:?}", o.load), format!("{:?}", m.load), false);
        let tables = |m: &crate::manifest::SourceManifest| -> BTreeMap<String, BTreeMap<String, Column>> {
            m.tables()
                .into_iter()
                .map(|t| (t.name.clone(), t.columns.iter().map(|(n, c)| (n.to_string(), (*c).clone())).collect()))
                .collect()
        };
        let (ot, nt) = (tables(o), tables(m));
        for (table, cols) in &nt {
            let prefix = if table == name { String::new() } else { format!("{table}.") };
            let empty = BTreeMap::new();
            let before = ot.get(table).unwrap_or(&empty);
            for (col, c) in cols {
                match before.get(col) {
                    None => change(
                        out,
                        "sources",
                        name,
                        format!("column `{prefix}{col}` added ({}, pii: {})", ty(c), pii(c)),
                        c.pii != Pii::None,
                    ),
                    Some(b) => {
                        if ty(b) != ty(c) {
                            change(
                                out,
                                "sources",
                                name,
                                format!("column `{prefix}{col}`: type {} → {}", ty(b), ty(c)),
                                false,
                            );
                        }
                        if pii(b) != pii(c) {
                            change(
                                out,
                                "sources",
                                name,
                                format!("column `{prefix}{col}`: pii {} → {}", pii(b), pii(c)),
                                true,
                            );
                        }
                        if b.keep_clear != c.keep_clear && b.keep_clear.is_some() && c.keep_clear.is_some() {
                            change(
                                out,
                                "sources",
                                name,
                                format!("column `{prefix}{col}`: keep_clear approval changed"),
                                true,
                            );
                        }
                        if b.normalize != c.normalize {
                            let what = format!(
                                "column `{prefix}{col}`: normalize {:?} → {:?} (pseudonyms change)",
                                b.normalize, c.normalize
                            );
                            change(out, "sources", name, what.to_lowercase(), c.pii == Pii::Direct);
                        }
                    }
                }
            }
            for (col, b) in before {
                if !cols.contains_key(col) {
                    change(out, "sources", name, format!("column `{prefix}{col}` removed (pii: {})", pii(b)), false);
                }
            }
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        change(out, "sources", name, "source removed (its tables stay in the lake until dropped)", false);
    }
}

/// A gold model's small-cell setting, in words.
fn cells_text(c: &crate::manifest::SmallCells) -> String {
    match (&c.exempt, &c.count) {
        (Some(why), _) => format!("not suppressed, exempt ({why})"),
        (None, Some(count)) if c.measures.is_empty() => format!("suppressed on `{count}`"),
        (None, Some(count)) => format!("suppressed on `{count}` with {}", c.measures.join(", ")),
        (None, None) => "none".into(),
    }
}

fn fmt_opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), ToString::to_string)
}

fn project(base: &Project, head: &Project, out: &mut Vec<Change>) {
    let partners = |p: &Project| -> BTreeMap<String, String> {
        p.file
            .partners
            .iter()
            .map(|x| (x.id.to_string(), format!("{} ({})", x.name, format!("{:?}", x.kind).to_lowercase())))
            .collect()
    };
    let (old, new) = (partners(base), partners(head));
    for (id, p) in &new {
        match old.get(id) {
            None => change(out, "partners", format!("partner {id}"), format!("new partner: {p}"), true),
            Some(o) if o != p => change(out, "partners", format!("partner {id}"), format!("{o} → {p}"), true),
            Some(_) => {}
        }
    }
    for id in old.keys().filter(|i| !new.contains_key(*i)) {
        change(out, "partners", format!("partner {id}"), "removed", true);
    }
    let (a, b) = (&base.file.privacy, &head.file.privacy);
    let mut setting = |label: &str, x: String, y: String| {
        if x != y {
            change(out, "privacy", "lakehouse.yaml", format!("{label}: {x} → {y}"), true);
        }
    };
    setting("min_group_size", a.min_group_size.to_string(), b.min_group_size.to_string());
    setting("min_generalization", format!("{:?}", a.min_generalization), format!("{:?}", b.min_generalization));
    setting(
        "domains",
        a.domains.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
        b.domains.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
    );
    setting("keys", format!("{:?}", a.keys), format!("{:?}", b.keys));
}

fn access(base: &Project, head: &Project, out: &mut Vec<Change>) {
    let roles = |p: &Project| -> BTreeMap<String, (Option<String>, BTreeSet<String>)> {
        p.policy
            .roles
            .iter()
            .map(|(n, r)| {
                let grants = r
                    .spec
                    .grants
                    .iter()
                    .map(|g| {
                        let mut s = g.table.clone();
                        if let Some(rows) = &g.rows {
                            s.push_str(&format!(" rows: {rows}"));
                        }
                        if !g.masks.is_empty() {
                            let masks: Vec<String> = g
                                .masks
                                .iter()
                                .map(|(c, e)| format!("{c} = {}", e.as_deref().unwrap_or("null")))
                                .collect();
                            s.push_str(&format!(" masks: {}", masks.join(", ")));
                        }
                        if let Some(a) = &g.approval {
                            s.push_str(&format!(" approval {a}"));
                        }
                        s
                    })
                    .collect();
                (n.clone(), (r.spec.partner.clone(), grants))
            })
            .collect()
    };
    let (old, new) = (roles(base), roles(head));
    for (name, (partner, grants)) in &new {
        let subject = format!("role {name}");
        let Some((old_partner, old_grants)) = old.get(name) else {
            let what = format!(
                "new role{}: {}",
                partner.as_deref().map(|p| format!(" of partner {p}")).unwrap_or_default(),
                grants.iter().cloned().collect::<Vec<_>>().join("; ")
            );
            change(out, "access", subject, what, true);
            continue;
        };
        if old_partner != partner {
            change(out, "access", &subject, format!("partner {} → {}", fmt_opt(old_partner), fmt_opt(partner)), true);
        }
        for g in grants.difference(old_grants) {
            change(out, "access", &subject, format!("grant added: {g}"), true);
        }
        for g in old_grants.difference(grants) {
            change(out, "access", &subject, format!("grant removed: {g}"), false);
        }
    }
    for name in old.keys().filter(|n| !new.contains_key(*n)) {
        change(out, "access", format!("role {name}"), "removed", false);
    }
}

/// Model changes; returns the models that rebuild in full.
fn models(base: &Project, head: &Project, out: &mut Vec<Change>) -> Vec<String> {
    let plan = |p: &Project| Plan::build(p, &BTreeMap::new(), &mut Default::default());
    let (old_plan, new_plan) = (plan(base), plan(head));
    let by_target =
        |p: &Project| -> BTreeMap<String, LoadedModel> { p.models.iter().map(|m| (m.target(), m.clone())).collect() };
    let (old, new) = (by_target(base), by_target(head));
    let mut rebuilt: BTreeSet<String> = BTreeSet::new();
    for (target, m) in &new {
        let cells = |m: &LoadedModel| m.sidecar.as_ref().and_then(|s| s.small_cells.as_ref()).map(cells_text);
        let inputs = |plan: &Plan| -> BTreeSet<String> {
            plan.models.get(target).map(|x| x.rendered.inputs.iter().cloned().collect()).unwrap_or_default()
        };
        let gold = target.starts_with("gold.");
        let Some(o) = old.get(target) else {
            let reads = inputs(&new_plan).into_iter().collect::<Vec<_>>().join(", ");
            let mut what = format!("new model reading {reads}");
            if gold {
                what.push_str(&format!("; small cells: {}", cells(m).unwrap_or_else(|| "none".into())));
            }
            change(out, "models", target, what, true);
            rebuilt.insert(target.clone());
            continue;
        };
        if o.sql != m.sql {
            change(out, "models", target, "SQL changed", false);
            rebuilt.insert(target.clone());
        }
        if cells(o) != cells(m) {
            change(
                out,
                "models",
                target,
                format!("small cells: {} → {}", fmt_opt(&cells(o)), fmt_opt(&cells(m))),
                true,
            );
            rebuilt.insert(target.clone());
        } else if o.sidecar_text != m.sidecar_text {
            change(out, "models", target, "sidecar changed (documentation, audits, min_interval)", false);
            rebuilt.insert(target.clone());
        }
        let (a, b) = (inputs(&old_plan), inputs(&new_plan));
        for i in b.difference(&a) {
            change(out, "dag", target, format!("now reads {i}"), true);
        }
        for i in a.difference(&b) {
            change(out, "dag", target, format!("no longer reads {i}"), false);
        }
    }
    for target in old.keys().filter(|t| !new.contains_key(*t)) {
        change(out, "models", target, "model removed (its table stays in the lake until dropped)", false);
    }
    // A model rebuilt in full rewrites its table: the models reading it rebuild in full after it.
    new_plan.with_downstream(&rebuilt)
}

impl Review {
    /// The review as text (`markdown`: for a pull-request comment).
    pub fn render(&self, markdown: bool) -> String {
        let mut out = String::new();
        if markdown {
            out.push_str(&format!("## lakehouse plan (against `{}`)\n", self.base));
        } else {
            out.push_str(&format!("lakehouse plan against {}\n", self.base));
        }
        if self.changes.is_empty() {
            out.push_str("No change to sources, models, partners, privacy settings or the access policy.\n");
            return out;
        }
        let areas = [
            ("sources", "Sources"),
            ("models", "Models"),
            ("dag", "DAG"),
            ("access", "Access policy"),
            ("partners", "Partners"),
            ("privacy", "Privacy settings"),
        ];
        for (area, title) in areas {
            let items: Vec<&Change> = self.changes.iter().filter(|c| c.area == area).collect();
            if items.is_empty() {
                continue;
            }
            out.push_str(&if markdown { format!("\n### {title}\n\n") } else { format!("\n{title}\n") });
            for c in items {
                let mark = if c.privacy { if markdown { " **[privacy]**" } else { "  [privacy]" } } else { "" };
                if markdown {
                    out.push_str(&format!("- `{}`: {}{mark}\n", c.subject, c.what.replace('|', "\\|")));
                } else {
                    out.push_str(&format!("  {}: {}{mark}\n", c.subject, c.what));
                }
            }
        }
        if !self.full_rebuilds.is_empty() {
            let list = self.full_rebuilds.join(", ");
            out.push_str(&if markdown {
                format!("\n### Full rebuilds on the next run\n\n{list}\n")
            } else {
                format!("\nFull rebuilds on the next run\n  {list}\n")
            });
        }
        if !self.preview.is_empty() {
            out.push_str(if markdown {
                "\n### Preview on the current lake\n\n| model | rows now | rows after |\n|---|---:|---:|\n"
            } else {
                "\nPreview on the current lake (rows now → rows after)\n"
            });
            for p in &self.preview {
                let now = p.rows_now.map_or("not built".to_string(), |n| n.to_string());
                let after = match &p.rows_after {
                    Ok(n) => n.to_string(),
                    Err(why) => format!("cannot compute: {why}"),
                };
                out.push_str(&if markdown {
                    format!("| `{}` | {now} | {} |\n", p.model, after.replace('|', "\\|"))
                } else {
                    format!("  {}: {now} → {after}\n", p.model)
                });
            }
        }
        let n = match self.changes.iter().filter(|c| c.privacy).count() {
            1 => "1 privacy-relevant change".to_string(),
            n => format!("{n} privacy-relevant changes"),
        };
        out.push('\n');
        match (&self.change_set, &self.approval) {
            (None, _) => out.push_str("No privacy-relevant change: no DPO approval is needed.\n"),
            (Some(h), Some(a)) => out.push_str(&format!(
                "{n}, change set `{h}`: approved by {} ({}{}).\n",
                a.approver,
                a.reference,
                a.date.as_deref().map(|d| format!(", {d}")).unwrap_or_default()
            )),
            (Some(h), None) => {
                out.push_str(&format!(
                    "{n}, change set `{h}`: NOT APPROVED. The DPO approves them with an entry \
                     under `approvals:` in approvals.yaml (`version: 1` first):\n"
                ));
                let entry = format!(
                    "  - {{ change_set: {h}, approver: <name>, reference: <approval reference>, date: <date> }}"
                );
                out.push_str(&if markdown { format!("\n```yaml\n{entry}\n```\n") } else { format!("{entry}\n") });
            }
        }
        out
    }
}
