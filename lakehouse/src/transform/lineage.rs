//! Column lineage from DataFusion's logical plan (not from the SQL text): for each output column of a model,
//! the input columns it is computed from, how (identity, transformation, aggregation), and whether a privacy
//! function lies on the way (masked); plus the input columns used indirectly (filters, joins, group by, window
//! partitions, sorts).
//!
//! [`check_privacy`] composes model lineages down to bronze: a silver or gold column that depends, without a
//! privacy function on the path, on a bronze column that is `pii: quasi` or `pii: direct` kept in clear is an
//! error. (`direct` columns pseudonymized at landing are masked already.)

use std::collections::{BTreeMap, BTreeSet};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};

use catalog::lineage::{EdgeKind, IndirectKind, Lineage, Source};

use crate::manifest::{Bucket, MinGeneralization};

type Cols = Vec<BTreeSet<Source>>;

/// The lineage of a (analyzed, unoptimized) logical plan.
///
/// A generalization counts as masking only when it is at least as coarse as `minimums` (a 1 m grid cell hides
/// nothing); `pseudonymize` always does.
pub fn lineage(plan: &LogicalPlan, minimums: &MinGeneralization) -> Lineage {
    let mut w = Walker { indirect: BTreeSet::new(), minimums };
    let cols = walk(plan, &mut w);
    let names = plan.schema().fields().iter().map(|f| f.name().clone());
    Lineage { columns: names.zip(cols).collect(), indirect: w.indirect }
}

/// What a walk over a plan carries: the indirect uses found so far and the generalization minimums.
struct Walker<'a> {
    indirect: BTreeSet<(IndirectKind, String, String)>,
    minimums: &'a MinGeneralization,
}

/// Whether a call of a privacy function masks what it reads: `pseudonymize` always; `geo_cell`, `age_band` and
/// `time_bucket` only with a literal size at least the project's minimum.
fn masks(name: &str, args: &[Expr], min: &MinGeneralization) -> bool {
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;
    fn literal(e: Option<&Expr>) -> Option<&ScalarValue> {
        match e? {
            Expr::Literal(v, _) => Some(v),
            Expr::Cast(c) => literal(Some(&c.expr)),
            Expr::Alias(a) => literal(Some(&a.expr)),
            _ => None,
        }
    }
    let int = |i: usize| match literal(args.get(i))?.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(v) => v,
        _ => None,
    };
    match name {
        "pseudonymize" => true,
        "geo_cell" => int(2).is_some_and(|m| m >= i64::from(min.cell_meters)),
        "age_band" => int(1).is_some_and(|y| y >= i64::from(min.age_band_years)),
        "time_bucket" => match literal(args.get(1)) {
            Some(ScalarValue::Utf8(Some(u)) | ScalarValue::Utf8View(Some(u)) | ScalarValue::LargeUtf8(Some(u))) => {
                Bucket::parse(u).is_some_and(|u| u >= min.time_bucket)
            }
            _ => false,
        },
        _ => false,
    }
}

fn walk(plan: &LogicalPlan, w: &mut Walker<'_>) -> Cols {
    match plan {
        LogicalPlan::TableScan(scan) => {
            let table = scan.table_name.to_string();
            plan.schema()
                .fields()
                .iter()
                .map(|f| {
                    BTreeSet::from([Source {
                        table: table.clone(),
                        column: f.name().clone(),
                        kind: EdgeKind::Identity,
                        masked: false,
                    }])
                })
                .collect()
        }
        LogicalPlan::Projection(p) => {
            let input = walk(&p.input, w);
            p.expr.iter().map(|e| expr_sources(e, &p.input, &input, w)).collect()
        }
        LogicalPlan::Filter(f) => {
            let input = walk(&f.input, w);
            use_indirectly(&f.predicate, &f.input, &input, IndirectKind::Filter, w);
            input
        }
        LogicalPlan::Aggregate(a) => fit(aggregate(a, w), plan),
        LogicalPlan::Window(win) => {
            let mut out = walk(&win.input, w);
            let input = out.clone();
            for e in &win.window_expr {
                if let Expr::WindowFunction(f) = strip_alias(e) {
                    for p in f.params.partition_by.iter().chain(f.params.order_by.iter().map(|s| &s.expr)) {
                        use_indirectly(p, &win.input, &input, IndirectKind::Window, w);
                    }
                }
                out.push(expr_sources(e, &win.input, &input, w));
            }
            fit(out, plan)
        }
        LogicalPlan::Join(j) => fit(join(j, plan, w), plan),
        LogicalPlan::Union(u) => {
            let inputs: Vec<Cols> = u.inputs.iter().map(|i| walk(i, w)).collect();
            let n = plan.schema().fields().len();
            (0..n).map(|i| inputs.iter().filter_map(|c| c.get(i)).flatten().cloned().collect()).collect()
        }
        LogicalPlan::Sort(s) => {
            let input = walk(&s.input, w);
            for e in &s.expr {
                use_indirectly(&e.expr, &s.input, &input, IndirectKind::Sort, w);
            }
            input
        }
        other => {
            // Pass-through nodes (aliases, limits, distinct, repartition, subqueries) keep their input's columns.
            let inputs = other.inputs();
            let walked: Vec<Cols> = inputs.iter().map(|i| walk(i, w)).collect();
            let n = plan.schema().fields().len();
            match walked.as_slice() {
                [only] if only.len() == n => only.clone(),
                _ => {
                    // Unknown shape: every output column depends on every input column (conservative).
                    let all: BTreeSet<Source> = walked
                        .iter()
                        .flatten()
                        .flatten()
                        .map(|s| Source { kind: s.kind.max(EdgeKind::Transformation), ..s.clone() })
                        .collect();
                    vec![all; n]
                }
            }
        }
    }
}

/// Group keys (used indirectly, and outputs), then aggregates. `count(*)` reads no column: it depends on the
/// rows of every table the input reads (column `*`).
fn aggregate(a: &datafusion::logical_expr::Aggregate, w: &mut Walker<'_>) -> Cols {
    let input = walk(&a.input, w);
    let mut out: Cols = Vec::new();
    for g in &a.group_expr {
        use_indirectly(g, &a.input, &input, IndirectKind::GroupBy, w);
        out.push(expr_sources(g, &a.input, &input, w));
    }
    let tables: BTreeSet<String> = input.iter().flatten().map(|s| s.table.clone()).collect();
    for e in &a.aggr_expr {
        let mut sources = expr_sources(e, &a.input, &input, w);
        if sources.is_empty() {
            sources = tables
                .iter()
                .map(|t| Source { table: t.clone(), column: "*".into(), kind: EdgeKind::Aggregation, masked: false })
                .collect();
        }
        out.push(sources);
    }
    out
}

/// Join keys and filter (used indirectly), then the columns of both sides (or of one, for semi and anti joins).
fn join(j: &datafusion::logical_expr::Join, plan: &LogicalPlan, w: &mut Walker<'_>) -> Cols {
    let left = walk(&j.left, w);
    let right = walk(&j.right, w);
    for (l, r) in &j.on {
        use_indirectly(l, &j.left, &left, IndirectKind::Join, w);
        use_indirectly(r, &j.right, &right, IndirectKind::Join, w);
    }
    let both: Cols = left.iter().chain(right.iter()).cloned().collect();
    if let Some(f) = &j.filter {
        // A join filter refers to both sides: resolve it against the joined schema.
        let mut seen = BTreeSet::new();
        collect(f, plan, &both, false, &mut seen, w);
        for s in seen {
            w.indirect.insert((IndirectKind::Join, s.table, s.column));
        }
    }
    let n = plan.schema().fields().len();
    if n == left.len() + right.len() {
        both
    } else if n >= left.len() && n <= left.len() + 1 {
        left
    } else {
        right
    }
}

/// Pads or cuts to the plan's column count (internal columns such as `__grouping_id`).
fn fit(mut cols: Cols, plan: &LogicalPlan) -> Cols {
    cols.resize(plan.schema().fields().len(), BTreeSet::new());
    cols
}

fn strip_alias(e: &Expr) -> &Expr {
    match e {
        Expr::Alias(a) => strip_alias(&a.expr),
        other => other,
    }
}

/// The sources of an output expression.
fn expr_sources(e: &Expr, input: &LogicalPlan, cols: &Cols, w: &mut Walker<'_>) -> BTreeSet<Source> {
    let bare = strip_alias(e);
    let level = if matches!(bare, Expr::Column(_)) {
        EdgeKind::Identity
    } else if contains_aggregate(bare) {
        EdgeKind::Aggregation
    } else {
        EdgeKind::Transformation
    };
    let mut out = BTreeSet::new();
    collect(bare, input, cols, false, &mut out, w);
    out.into_iter().map(|s| Source { kind: s.kind.max(level), ..s }).collect()
}

fn contains_aggregate(e: &Expr) -> bool {
    let mut found = false;
    let _ = e.apply(|x| {
        if matches!(x, Expr::AggregateFunction(_) | Expr::WindowFunction(_)) {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Collects the input columns `e` reads, marking those read inside a privacy function.
fn collect(e: &Expr, input: &LogicalPlan, cols: &Cols, masked: bool, out: &mut BTreeSet<Source>, w: &mut Walker<'_>) {
    match e {
        Expr::Column(c) => {
            if let Ok(i) = input.schema().index_of_column(c)
                && let Some(sources) = cols.get(i)
            {
                out.extend(sources.iter().map(|s| Source { masked: s.masked || masked, ..s.clone() }));
            }
        }
        Expr::ScalarFunction(f) => {
            let masking = masked || masks(f.func.name(), &f.args, w.minimums);
            for a in &f.args {
                collect(a, input, cols, masking, out, w);
            }
        }
        Expr::ScalarSubquery(s) | Expr::Exists(datafusion::logical_expr::expr::Exists { subquery: s, .. }) => {
            subquery_indirect(&s.subquery, w);
        }
        Expr::InSubquery(s) => {
            collect(&s.expr, input, cols, masked, out, w);
            subquery_indirect(&s.subquery.subquery, w);
        }
        other => {
            let _ = other.apply_children(|child| {
                collect(child, input, cols, masked, out, w);
                Ok(TreeNodeRecursion::Continue)
            });
        }
    }
}

/// Every column a subquery outputs is used as a filter.
fn subquery_indirect(plan: &LogicalPlan, w: &mut Walker<'_>) {
    for sources in walk(plan, w) {
        for s in sources {
            w.indirect.insert((IndirectKind::Filter, s.table, s.column));
        }
    }
}

fn use_indirectly(e: &Expr, input: &LogicalPlan, cols: &Cols, kind: IndirectKind, w: &mut Walker<'_>) {
    let mut seen = BTreeSet::new();
    collect(e, input, cols, false, &mut seen, w);
    for s in seen {
        w.indirect.insert((kind, s.table, s.column));
    }
}

/// A bronze column that must not reach silver or gold unmasked, and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sensitive {
    /// `bronze.x.col`.
    pub column: String,
    /// `quasi`, or `direct (kept in clear)`.
    pub class: String,
}

/// Unmasked paths from model columns to sensitive bronze columns, built model by model in DAG order.
#[derive(Debug, Default)]
pub struct PrivacyCheck {
    /// `table.column` → the sensitive bronze columns it exposes, with the path (`silver.x.a ← bronze.y.b`).
    exposes: BTreeMap<String, BTreeSet<(Sensitive, String)>>,
}

/// A violation: an output column that exposes a sensitive bronze column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub column: String,
    pub sensitive: Sensitive,
    pub path: String,
}

impl std::fmt::Display for Leak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "column `{}` exposes {} (pii: {}) without a privacy function: {}",
            self.column, self.sensitive.column, self.sensitive.class, self.path
        )
    }
}

impl Leak {
    /// What to do about a leak, with the project's minimum generalizations.
    pub fn hint(min: &MinGeneralization) -> String {
        format!(
            "generalize it (geo_cell of at least {} m, age_band of at least {} years, time_bucket of at least \
             '{}'; see privacy.min_generalization), pseudonymize it, or leave it out",
            min.cell_meters,
            min.age_band_years,
            min.time_bucket.as_str()
        )
    }
}

impl PrivacyCheck {
    /// Declares the sensitive bronze columns.
    pub fn new(sensitive: impl IntoIterator<Item = Sensitive>) -> Self {
        let mut exposes: BTreeMap<String, BTreeSet<(Sensitive, String)>> = BTreeMap::new();
        for s in sensitive {
            exposes.entry(s.column.clone()).or_default().insert((s.clone(), s.column.clone()));
        }
        Self { exposes }
    }

    /// Adds a model's lineage; returns its leaking columns and its indirect uses of sensitive columns.
    pub fn add(&mut self, target: &str, lineage: &Lineage) -> (Vec<Leak>, Vec<(IndirectKind, Sensitive, String)>) {
        let mut leaks = Vec::new();
        for (name, sources) in &lineage.columns {
            let key = format!("{target}.{name}");
            let mut exposed = BTreeSet::new();
            for s in sources.iter().filter(|s| !s.masked) {
                if let Some(up) = self.exposes.get(&format!("{}.{}", s.table, s.column)) {
                    for (sens, path) in up {
                        exposed.insert((sens.clone(), format!("{key} ← {path}")));
                    }
                }
            }
            for (sens, path) in &exposed {
                leaks.push(Leak { column: name.clone(), sensitive: sens.clone(), path: path.clone() });
            }
            if !exposed.is_empty() {
                self.exposes.insert(key, exposed);
            }
        }
        let mut uses = Vec::new();
        for (kind, table, column) in &lineage.indirect {
            if let Some(up) = self.exposes.get(&format!("{table}.{column}")) {
                for (sens, path) in up {
                    uses.push((*kind, sens.clone(), path.clone()));
                }
            }
        }
        uses.sort();
        uses.dedup();
        (leaks, uses)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::datasource::MemTable;

    use super::*;

    async fn lineage_of(sql: &str) -> Lineage {
        let project = crate::manifest::ProjectFile::with_domains(&["police"]);
        let ctx = crate::session::new_session(crate::session::Functions::Planning, &project);
        let s = |cols: &[(&str, DataType)]| {
            Arc::new(Schema::new(cols.iter().map(|(n, t)| Field::new(*n, t.clone(), true)).collect::<Vec<_>>()))
        };
        let inc = s(&[
            ("id", DataType::Utf8),
            ("lat", DataType::Float64),
            ("lon", DataType::Float64),
            ("cat", DataType::Utf8),
            ("arr", DataType::Int64),
        ]);
        let ev = s(&[("event_id", DataType::Utf8), ("arr", DataType::Int64), ("title", DataType::Utf8)]);
        ctx.register_table("bronze.inc", Arc::new(MemTable::try_new(inc, vec![vec![]]).unwrap())).unwrap();
        ctx.register_table("bronze.ev", Arc::new(MemTable::try_new(ev, vec![vec![]]).unwrap())).unwrap();
        lineage(crate::session::sql(&ctx, sql).await.unwrap().logical_plan(), &MinGeneralization::default())
    }

    fn src(table: &str, column: &str, kind: EdgeKind, masked: bool) -> Source {
        Source { table: table.into(), column: column.into(), kind, masked }
    }

    fn col<'a>(l: &'a Lineage, name: &str) -> &'a BTreeSet<Source> {
        &l.columns.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("{name} in {l:?}")).1
    }

    #[tokio::test]
    async fn identity_transformation_and_masking() {
        let l = lineage_of("SELECT id AS incident, lat + 1 AS moved, geo_cell(lat, lon, 1000) AS cell FROM bronze.inc")
            .await;
        assert_eq!(col(&l, "incident"), &BTreeSet::from([src("bronze.inc", "id", EdgeKind::Identity, false)]));
        assert_eq!(col(&l, "moved"), &BTreeSet::from([src("bronze.inc", "lat", EdgeKind::Transformation, false)]));
        assert_eq!(
            col(&l, "cell"),
            &BTreeSet::from([
                src("bronze.inc", "lat", EdgeKind::Transformation, true),
                src("bronze.inc", "lon", EdgeKind::Transformation, true)
            ])
        );
    }

    #[tokio::test]
    async fn aggregates_filters_and_group_by() {
        let l = lineage_of(
            "SELECT arr, count(*) AS n, avg(lat) AS mean_lat FROM bronze.inc WHERE cat = 'vol' GROUP BY arr",
        )
        .await;
        assert_eq!(col(&l, "arr"), &BTreeSet::from([src("bronze.inc", "arr", EdgeKind::Identity, false)]));
        assert_eq!(col(&l, "mean_lat"), &BTreeSet::from([src("bronze.inc", "lat", EdgeKind::Aggregation, false)]));
        assert!(l.indirect.contains(&(IndirectKind::Filter, "bronze.inc".into(), "cat".into())));
        assert!(l.indirect.contains(&(IndirectKind::GroupBy, "bronze.inc".into(), "arr".into())));
    }

    #[tokio::test]
    async fn joins_ctes_and_unions() {
        let l = lineage_of(
            "WITH e AS (SELECT arr, title FROM bronze.ev) \
             SELECT i.id, e.title FROM bronze.inc i JOIN e ON i.arr = e.arr \
             UNION ALL SELECT event_id, title FROM bronze.ev",
        )
        .await;
        assert_eq!(
            col(&l, "id"),
            &BTreeSet::from([
                src("bronze.ev", "event_id", EdgeKind::Identity, false),
                src("bronze.inc", "id", EdgeKind::Identity, false)
            ])
        );
        assert_eq!(col(&l, "title"), &BTreeSet::from([src("bronze.ev", "title", EdgeKind::Identity, false)]));
        assert!(l.indirect.contains(&(IndirectKind::Join, "bronze.inc".into(), "arr".into())));
        assert!(l.indirect.contains(&(IndirectKind::Join, "bronze.ev".into(), "arr".into())));
    }

    #[tokio::test]
    async fn leaks_are_followed_through_models() {
        let quasi = |c: &str| Sensitive { column: format!("bronze.inc.{c}"), class: "quasi".into() };
        let mut check = PrivacyCheck::new([quasi("lat"), quasi("lon")]);
        let silver = lineage_of("SELECT id, lat AS y, geo_cell(lat, lon, 200) AS cell FROM bronze.inc").await;
        let (leaks, _) = check.add("silver.s", &silver);
        assert_eq!(leaks.len(), 1);
        assert_eq!(leaks[0].path, "silver.s.y ← bronze.inc.lat");
        // A gold model aggregating the leaked column leaks too; one filtering on it is reported as a use.
        let gold = Lineage {
            columns: vec![("top".into(), BTreeSet::from([src("silver.s", "y", EdgeKind::Aggregation, false)]))],
            indirect: BTreeSet::from([(IndirectKind::Filter, "silver.s".into(), "y".into())]),
        };
        let (leaks, uses) = check.add("gold.g", &gold);
        assert_eq!(leaks[0].path, "gold.g.top ← silver.s.y ← bronze.inc.lat");
        assert_eq!(uses[0].0, IndirectKind::Filter);
    }
}
