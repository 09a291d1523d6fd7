//! Erasure of a data subject (GDPR art. 17): `lakehouse erase`.
//!
//! A person is named by a clear value of one of a domain's identifiers (`--value`), pseudonymized here with every
//! key of the domain — the current one and the ones rotated out — under each normalization the domain's columns
//! use, or by a known pseudonym (`--token`). The clear value is never written: not in a table, a log, an event,
//! a Delta predicate (the rows are matched by functions whose names only reach the commit's predicate), nor in
//! the evidence.
//!
//! What is erased, in dependency order, each table under its scheduler lock:
//! 1. bronze tables (and `explode` child tables) with a `pii: direct` column of the domain: the rows holding one
//!    of the pseudonyms (a `keep_clear` column: the rows whose value has one of them once pseudonymized);
//! 2. the quarantine of those sources: the records whose `subjects` (the pseudonyms of their identifiers, kept
//!    beside the encrypted raw text) hold one; with `--value`, also the records whose decrypted raw text holds the
//!    value as a word (records that could not be split into fields have no `subjects`);
//! 3. the models, in DAG order: a model with a column that is, through column lineage, an identity copy of such a
//!    pseudonym column loses the rows that hold one; any other model reading an erased table is rebuilt in full
//!    (the gold aggregates).
//!
//! Then every table touched is purged: VACUUM of every file the current version does not reference (retention
//! zero), a checkpoint at the current version, and the log entries before it deleted — no earlier version, and
//! no file statistic of one, can bring the rows back. Each table's step is appended to `system.erasures` (request
//! id, table, versions before and after, rows deleted, files and log entries removed, key ids; never an
//! identifier) as soon as it is done: a crash mid-way is resumed by running the same request again (each step is
//! idempotent) and the report sums every attempt's steps.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use catalog::lineage::EdgeKind;
use chrono::{DateTime, Utc};
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::ident;
use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;
use serde::{Deserialize, Serialize};

use crate::Lakehouse;
use crate::manifest::{Encoding, Normalize, Pii};
use crate::privacy::{Key, Pseudonymizer, QUARANTINE_DOMAIN};
use crate::schedule::lock::{self, TargetLock};
use crate::storage::rows;
use crate::storage::timestamp_type;
use crate::transform::Plan;
use crate::transform::run::RunOptions;

/// Whom to erase.
#[derive(Clone)]
pub enum Subject {
    /// A clear value of one of the domain's identifiers (never printed: `Debug` hides it).
    Value(String),
    /// A pseudonym of the domain (64 hex digits).
    Token(String),
}

impl std::fmt::Debug for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Value(_) => f.write_str("Value(<redacted>)"),
            Self::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// An erasure request.
#[derive(Debug, Clone)]
pub struct Request {
    /// The DPO's reference of the data subject's request (the evidence is kept under it).
    pub id: String,
    pub domain: String,
    pub subject: Subject,
    /// Count what would be erased; change nothing.
    pub dry_run: bool,
}

/// One table's step of an erasure: a row of `system.erasures`. Holds no identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub request_id: String,
    pub erased_at: DateTime<Utc>,
    pub domain: String,
    /// `bronze.x`, `bronze.x__quarantine`, `silver.y`, `gold.z`.
    pub table: String,
    /// `delete` (rows holding the subject's pseudonyms) or `rebuild` (a model recomputed from erased inputs).
    pub action: String,
    pub version_before: Option<u64>,
    pub version_after: Option<u64>,
    pub rows_deleted: u64,
    /// Data files deleted from storage by the purge.
    pub files_removed: u64,
    /// `_delta_log` entries (commits, checkpoints) deleted by the purge.
    pub log_entries_removed: u64,
    /// The key ids (with fingerprints) whose pseudonyms were looked for, space-separated.
    pub key_ids: String,
    /// `host:pid` of the process.
    pub process: String,
}

/// The columns of `system.erasures`.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("request_id", DataType::Utf8, false),
        Field::new("erased_at", timestamp_type(), false),
        Field::new("domain", DataType::Utf8, false),
        Field::new("table", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("version_before", DataType::Int64, true),
        Field::new("version_after", DataType::Int64, true),
        Field::new("rows_deleted", DataType::Int64, false),
        Field::new("files_removed", DataType::Int64, false),
        Field::new("log_entries_removed", DataType::Int64, false),
        Field::new("key_ids", DataType::Utf8, false),
        Field::new("process", DataType::Utf8, false),
    ]))
}

/// `system.erasures`: the evidence of every erasure.
pub const ERASURES: rows::RowTable = rows::RowTable {
    layer: "system",
    name: "erasures",
    description: "Erasures of data subjects (GDPR art. 17): one row per table and attempt, no identifier",
    schema,
};

/// What an erasure did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub request_id: String,
    pub domain: String,
    pub dry_run: bool,
    /// The key ids whose pseudonyms were looked for.
    pub key_ids: Vec<String>,
    /// Every step of the request, earlier attempts included (a dry run: what would be done).
    pub steps: Vec<Step>,
    /// Units archived by the sources erased from (API pages, database chunks, stream batches), encrypted, which
    /// may hold the subject: they are deleted by retention, not by an erasure.
    pub archived_units: u64,
}

/// Why an erasure could not be done.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    /// A mistake in the request (exit 1).
    #[error("{0}")]
    Request(String),
    /// Another process holds a table's lock.
    #[error("{table} is being written by another process (its lock is held): run the erasure again once it is done")]
    Busy { table: String },
    #[error("{table}: {message}")]
    Table { table: String, message: String },
    #[error(transparent)]
    Storage(#[from] crate::storage::StorageError),
}

impl EraseError {
    pub fn is_user_error(&self) -> bool {
        matches!(self, Self::Request(_) | Self::Busy { .. })
    }
}

/// How the rows of a table are matched.
#[derive(Debug, Clone)]
enum Action {
    /// Rows whose pseudonym column holds a token, or whose clear (`keep_clear`) column pseudonymizes to one.
    Delete { tokens: Vec<String>, clear: Vec<(String, Normalize)> },
    /// A quarantine: records whose `subjects` hold a token (or whose raw text, in the source's encoding, holds
    /// the value).
    Quarantine(Encoding),
    /// A model without the subject's columns that reads an erased table.
    Rebuild,
}

#[derive(Debug, Clone)]
struct Target {
    /// `layer.name`.
    table: String,
    /// The lock it is written under (`bronze.<source>` for a source's tables).
    lock: String,
    action: Action,
}

/// Runs an erasure request.
pub async fn erase(lh: &Lakehouse, req: &Request) -> Result<Report, EraseError> {
    if req.domain == QUARANTINE_DOMAIN || !lh.project.file.privacy.domains.iter().any(|d| d.as_str() == req.domain) {
        return Err(EraseError::Request(format!(
            "unknown domain `{}`: the project declares {}",
            req.domain,
            lh.project.file.privacy.domains.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    let keys = lh.keys.all(&req.domain).map_err(|e| EraseError::Request(e.to_string()))?.to_vec();
    let plan = Plan::quiet(&lh.project)
        .await
        .ok_or_else(|| EraseError::Request("the project's models do not plan: `lakehouse validate` says why".into()))?;
    let (targets, sources) = targets(lh, &plan, &req.domain);
    if targets.is_empty() {
        return Err(EraseError::Request(format!(
            "no source has a `pii: direct` column of domain `{}`: there is nothing to erase by it",
            req.domain
        )));
    }
    let tokens = tokens(lh, req, &keys)?;
    let matcher = Matcher {
        tokens: Arc::new(tokens),
        value: match &req.subject {
            Subject::Value(v) => Some(casefold(v.trim())),
            Subject::Token(_) => None,
        },
        quarantine_keys: lh.keys.all(QUARANTINE_DOMAIN).map(<[Key]>::to_vec).unwrap_or_default(),
        keys,
        phone_country: lh.project.file.privacy.phone_country,
    };
    let key_ids: Vec<String> = matcher.keys.iter().map(|k| k.id.clone()).collect();
    let mut report = Report {
        request_id: req.id.clone(),
        domain: req.domain.clone(),
        dry_run: req.dry_run,
        key_ids: key_ids.clone(),
        steps: Vec::new(),
        archived_units: archived_units(lh, &sources).await,
    };
    let step = |table: &str, action: &str| Step {
        request_id: req.id.clone(),
        erased_at: Utc::now(),
        domain: req.domain.clone(),
        table: table.to_string(),
        action: action.to_string(),
        version_before: None,
        version_after: None,
        rows_deleted: 0,
        files_removed: 0,
        log_entries_removed: 0,
        key_ids: key_ids.join(" "),
        process: crate::runlog::process_name(),
    };
    if req.dry_run {
        for t in &targets {
            let mut s = step(&t.table, action_name(&t.action));
            if let Some(table) = lh.warehouse.open_table(&t.table).await? {
                s.version_before = table.version();
                if let Some(predicate) = matcher.predicate(&t.action) {
                    s.rows_deleted = rows::count_table(&table, Some(predicate))
                        .await
                        .map_err(|e| table_err(&t.table)(e.to_string()))?;
                }
            }
            report.steps.push(s);
        }
        return Ok(report);
    }
    let _locks = take_locks(lh, &targets).await?;
    let options = RunOptions { full_refresh: true, vars: BTreeMap::new() };
    for t in &targets {
        let Some(table) = lh.warehouse.open_table(&t.table).await? else { continue };
        let mut s = step(&t.table, action_name(&t.action));
        s.version_before = table.version();
        let table = match matcher.predicate(&t.action) {
            Some(predicate) => {
                let n = rows::count_table(&table, Some(predicate.clone()))
                    .await
                    .map_err(|e| table_err(&t.table)(e.to_string()))?;
                // The rows an attempt deleted before it stopped, without purging the table.
                let unpurged = unpurged_erasure(&table).await;
                if n == 0 && unpurged.is_none() {
                    continue;
                }
                s.rows_deleted = n + unpurged.unwrap_or(0);
                if n > 0 {
                    let (table, _) = table
                        .delete()
                        .with_predicate(predicate)
                        .await
                        .map_err(|e| table_err(&t.table)(e.to_string()))?;
                    tracing::info!(table = %t.table, rows = n, "erased rows");
                    crate::fault::abort_at("erase-after-delete");
                    table
                } else {
                    table
                }
            }
            None => {
                let reports = crate::transform::run::run(lh, &plan, std::slice::from_ref(&t.table), &options).await;
                if let Some(crate::transform::run::Outcome::Failed { error, .. }) = reports.first().map(|r| &r.outcome)
                {
                    return Err(table_err(&t.table)(format!("rebuild failed: {error}")));
                }
                lh.warehouse.open_table(&t.table).await?.ok_or_else(|| EraseError::Table {
                    table: t.table.clone(),
                    message: "the rebuilt table is gone".into(),
                })?
            }
        };
        let (table, files, logs) = purge(table).await.map_err(table_err(&t.table))?;
        s.files_removed = files;
        s.log_entries_removed = logs;
        s.version_after = table.version();
        s.erased_at = Utc::now();
        ERASURES
            .append(&lh.warehouse, std::slice::from_ref(&s))
            .await
            .map_err(|e| EraseError::Table { table: "system.erasures".into(), message: e.to_string() })?;
    }
    report.steps = ERASURES
        .read(&lh.warehouse, Some(ident("request_id").eq(datafusion::prelude::lit(req.id.clone()))), &["erased_at"])
        .await
        .map_err(|e| EraseError::Table { table: "system.erasures".into(), message: e.to_string() })?;
    Ok(report)
}

/// The rows deleted by erasures whose deletion the table's log still holds: an attempt deleted them and stopped
/// before the purge (which removes that entry with the ones before its checkpoint), so older files and log
/// entries still hold them. `None` when there is none.
async fn unpurged_erasure(table: &DeltaTable) -> Option<u64> {
    use futures::StreamExt;
    let history: Vec<_> = table.history(None).collect().await;
    let deletions: Vec<u64> = history
        .into_iter()
        .flatten()
        .filter(|c| {
            c.operation.as_deref() == Some("DELETE")
                && c.operation_parameters
                    .as_ref()
                    .and_then(|p| p.get("predicate"))
                    .is_some_and(|p| p.to_string().contains("erased_"))
        })
        .map(|c| {
            c.info.get("operationMetrics").and_then(|m| m.get("num_deleted_rows")).and_then(|n| n.as_u64()).unwrap_or(0)
        })
        .collect();
    (!deletions.is_empty()).then(|| deletions.iter().sum())
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Delete { .. } | Action::Quarantine(_) => "delete",
        Action::Rebuild => "rebuild",
    }
}

fn table_err(table: &str) -> impl Fn(String) -> EraseError + '_ {
    move |message| EraseError::Table { table: table.to_string(), message }
}

/// The tables to erase from, in order (bronze, quarantines, then models in DAG order), and the sources involved.
fn targets(lh: &Lakehouse, plan: &Plan, domain: &str) -> (Vec<Target>, Vec<String>) {
    let mut out = Vec::new();
    let mut sources = Vec::new();
    // `layer.table.column` of the columns holding the domain's pseudonyms.
    let mut token_columns: BTreeSet<String> = BTreeSet::new();
    let mut erased: BTreeSet<String> = BTreeSet::new();
    for src in &lh.project.sources {
        let name = src.manifest.name.to_string();
        let lock = format!("bronze.{name}");
        let mut any = false;
        for t in src.manifest.tables() {
            let (mut tokens, mut clear) = (Vec::new(), Vec::new());
            for (col, c) in &t.columns {
                if c.pii != Pii::Direct || c.domain.as_ref().is_none_or(|d| d.as_str() != domain) {
                    continue;
                }
                if c.keep_clear.is_some() {
                    clear.push((col.to_string(), c.normalize));
                } else {
                    tokens.push(col.to_string());
                    token_columns.insert(format!("bronze.{}.{col}", t.name));
                }
            }
            if tokens.is_empty() && clear.is_empty() {
                continue;
            }
            any = true;
            let table = format!("bronze.{}", t.name);
            erased.insert(table.clone());
            out.push(Target { table, lock: lock.clone(), action: Action::Delete { tokens, clear } });
        }
        if any {
            let encoding = match src.manifest.format() {
                crate::manifest::Format::Csv { encoding, .. } => *encoding,
                _ => Encoding::Utf8,
            };
            out.push(Target {
                table: format!("bronze.{name}__quarantine"),
                lock,
                action: Action::Quarantine(encoding),
            });
            sources.push(name);
        }
    }
    for target in &plan.order {
        let model = &plan.models[target];
        let copies: Vec<String> = plan
            .lineage
            .get(target)
            .map(|l| {
                l.columns
                    .iter()
                    .filter(|(_, from)| {
                        from.iter().any(|s| {
                            s.kind == EdgeKind::Identity && token_columns.contains(&format!("{}.{}", s.table, s.column))
                        })
                    })
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default();
        if !copies.is_empty() {
            token_columns.extend(copies.iter().map(|c| format!("{target}.{c}")));
            out.push(Target {
                table: target.clone(),
                lock: target.clone(),
                action: Action::Delete { tokens: copies, clear: Vec::new() },
            });
        } else if model.rendered.inputs.iter().any(|i| erased.contains(i)) {
            out.push(Target { table: target.clone(), lock: target.clone(), action: Action::Rebuild });
        } else {
            continue;
        }
        erased.insert(target.clone());
    }
    (out, sources)
}

/// The pseudonyms to look for: the token given, or the value's under every key of the domain and every
/// normalization its columns use.
fn tokens(lh: &Lakehouse, req: &Request, keys: &[Key]) -> Result<HashSet<String>, EraseError> {
    match &req.subject {
        Subject::Token(t) => {
            let t = t.trim().to_ascii_lowercase();
            if t.len() != 64 || !t.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(EraseError::Request(
                    "--token: a pseudonym is 64 hexadecimal digits (as in a `pii: direct` column of bronze or silver)"
                        .into(),
                ));
            }
            Ok(HashSet::from([t]))
        }
        Subject::Value(v) => {
            let mut normalizations: Vec<Normalize> = Vec::new();
            for src in &lh.project.sources {
                for t in src.manifest.tables() {
                    for (_, c) in &t.columns {
                        if c.pii == Pii::Direct
                            && c.domain.as_ref().is_some_and(|d| d.as_str() == req.domain)
                            && !normalizations.contains(&c.normalize)
                        {
                            normalizations.push(c.normalize);
                        }
                    }
                }
            }
            let mut out = HashSet::new();
            let mut hex = String::new();
            for key in keys {
                for n in &normalizations {
                    let mut p = Pseudonymizer::new(key, *n, lh.project.file.privacy.phone_country);
                    if p.pseudonym_into(v, &mut hex) {
                        out.insert(hex.clone());
                    }
                }
            }
            if out.is_empty() {
                return Err(EraseError::Request(format!(
                    "--value: nothing is left of the value once normalized as the identifiers of domain `{}` are \
                     ({}): check it (it is not shown)",
                    req.domain,
                    normalizations.iter().map(|n| format!("{n:?}").to_lowercase()).collect::<Vec<_>>().join(", ")
                )));
            }
            Ok(out)
        }
    }
}

/// Takes the lock of every table written, in a fixed order (no two erasures can deadlock).
async fn take_locks(lh: &Lakehouse, targets: &[Target]) -> Result<Vec<TargetLock>, EraseError> {
    let names: BTreeSet<&str> = targets.iter().map(|t| t.lock.as_str()).collect();
    let mut held = Vec::new();
    for name in names {
        match lock::wait_for_lock(&lh.warehouse, name).await? {
            Some(l) => held.push(l),
            None => return Err(EraseError::Busy { table: name.to_string() }),
        }
    }
    Ok(held)
}

/// The units archived under `archive/<source>/` of the sources erased from.
async fn archived_units(lh: &Lakehouse, sources: &[String]) -> u64 {
    let mut n = 0;
    for name in sources {
        let url = crate::connector::archive_url(&lh.warehouse, name);
        let Ok((store, prefix)) = lh.warehouse.object_store(&url) else { continue };
        n += crate::connector::list_archive(store.as_ref(), &prefix).await.map_or(0, |l| l.len() as u64);
    }
    n
}

/// Removes every trace of the versions before the current one: the data files it does not reference (VACUUM,
/// retention zero), then the log entries before a checkpoint of it. Returns the table and the files and log
/// entries removed.
async fn purge(table: DeltaTable) -> Result<(DeltaTable, u64, u64), String> {
    let (mut table, metrics) = table
        .vacuum()
        .with_retention_period(chrono::Duration::zero())
        .with_enforce_retention_duration(false)
        .with_mode(VacuumMode::Full)
        .await
        .map_err(|e| format!("vacuum: {e}"))?;
    table.update_state().await.map_err(|e| format!("reloading: {e}"))?;
    deltalake::checkpoints::create_checkpoint(&table, None).await.map_err(|e| format!("checkpoint: {e}"))?;
    let version = table.version().ok_or("the table has no version")?;
    // Every entry before the checkpoint, however recent (the cutoff is in the future).
    let cutoff = (Utc::now() + chrono::Duration::days(1)).timestamp_millis();
    let logs = deltalake::checkpoints::cleanup_expired_logs_for(version, table.log_store().as_ref(), cutoff, None)
        .await
        .map_err(|e| format!("removing old log entries: {e}"))?;
    Ok((table, metrics.files_deleted.len() as u64, logs as u64))
}

/// Builds the predicates that find the subject's rows.
struct Matcher {
    tokens: Arc<HashSet<String>>,
    /// `--value`, casefolded: looked for in the quarantine's raw text.
    value: Option<String>,
    /// The keys of the domain (pseudonyms of `keep_clear` columns).
    keys: Vec<Key>,
    quarantine_keys: Vec<Key>,
    phone_country: Option<crate::manifest::PhoneCountry>,
}

impl Matcher {
    /// The predicate of an action (`None`: a rebuild).
    fn predicate(&self, action: &Action) -> Option<Expr> {
        let udf = |how: How, args: Vec<Expr>| ScalarUDF::new_from_impl(Match::new(how, self.tokens.clone())).call(args);
        match action {
            Action::Rebuild => None,
            Action::Quarantine(encoding) => Some(udf(
                How::Quarantine { keys: self.quarantine_keys.clone(), value: self.value.clone(), encoding: *encoding },
                vec![ident("subjects"), ident("raw"), ident("raw_key_id")],
            )),
            Action::Delete { tokens, clear } => {
                let tokens = tokens.iter().map(|c| udf(How::Token, vec![ident(c)]));
                let clear = clear.iter().map(|(c, n)| {
                    let ps = self.keys.iter().map(|k| Pseudonymizer::new(k, *n, self.phone_country)).collect();
                    udf(How::Clear(Arc::new(Mutex::new(ps))), vec![ident(c)])
                });
                tokens.chain(clear).reduce(Expr::or)
            }
        }
    }
}

/// How a [`Match`] reads its arguments.
#[derive(Clone)]
enum How {
    /// A pseudonym column.
    Token,
    /// A clear column, pseudonymized with each of the domain's keys.
    Clear(Arc<Mutex<Vec<Pseudonymizer>>>),
    /// `(subjects, raw, raw_key_id)` of a quarantine, whose raw records are in `encoding`.
    Quarantine { keys: Vec<Key>, value: Option<String>, encoding: Encoding },
}

/// The functions of the erasure predicates (`erased_pseudonym`, `erased_clear`, `erased_quarantined`): true for
/// the subject's rows. Their names, not their tokens, are what a Delta commit records of the predicate.
struct Match {
    how: How,
    tokens: Arc<HashSet<String>>,
    signature: Signature,
}

impl Match {
    fn new(how: How, tokens: Arc<HashSet<String>>) -> Self {
        let arity = if matches!(how, How::Quarantine { .. }) { 3 } else { 1 };
        Self { how, tokens, signature: Signature::any(arity, Volatility::Immutable) }
    }
}

impl std::fmt::Debug for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}(<{} tokens>)", self.name(), self.tokens.len())
    }
}

impl PartialEq for Match {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}
impl Eq for Match {}
impl Hash for Match {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name().hash(state);
    }
}

fn strings(v: &ColumnarValue, rows: usize) -> DfResult<ArrayRef> {
    Ok(arrow::compute::cast(&v.to_array(rows)?, &DataType::Utf8)?)
}

impl ScalarUDFImpl for Match {
    fn name(&self) -> &str {
        match self.how {
            How::Token => "erased_pseudonym",
            How::Clear(_) => "erased_clear",
            How::Quarantine { .. } => "erased_quarantined",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Boolean)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        let rows = args.number_rows;
        let out: BooleanArray = match &self.how {
            How::Token => {
                let a = strings(&args.args[0], rows)?;
                a.as_string::<i32>().iter().map(|v| Some(v.is_some_and(|v| self.tokens.contains(v)))).collect()
            }
            How::Clear(ps) => {
                let a = strings(&args.args[0], rows)?;
                let mut ps = ps.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut hex = String::new();
                a.as_string::<i32>()
                    .iter()
                    .map(|v| {
                        Some(v.is_some_and(|v| {
                            ps.iter_mut().any(|p| p.pseudonym_into(v, &mut hex) && self.tokens.contains(&hex))
                        }))
                    })
                    .collect()
            }
            How::Quarantine { keys, value, encoding } => {
                let subjects = strings(&args.args[0], rows)?;
                let raw = arrow::compute::cast(&args.args[1].to_array(rows)?, &DataType::Binary)?;
                let key_ids = strings(&args.args[2], rows)?;
                let (subjects, raw, key_ids) =
                    (subjects.as_string::<i32>(), raw.as_binary::<i32>(), key_ids.as_string::<i32>());
                (0..rows)
                    .map(|i| {
                        let by_token =
                            subjects.is_valid(i) && subjects.value(i).split(' ').any(|t| self.tokens.contains(t));
                        let by_text = || {
                            let (Some(value), true, true) = (value, raw.is_valid(i), key_ids.is_valid(i)) else {
                                return false;
                            };
                            let Some(key) = keys.iter().find(|k| k.id == key_ids.value(i)) else { return false };
                            crate::privacy::decrypt(key, raw.value(i)).is_some_and(|plain| {
                                let text = crate::format::decode(&plain, *encoding)
                                    .unwrap_or_else(|_| String::from_utf8_lossy(&plain));
                                holds_word(&casefold(&text), value)
                            })
                        };
                        Some(by_token || by_text())
                    })
                    .collect()
            }
        };
        Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
    }
}

fn casefold(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Whether `text` holds `word` with no letter or digit on either side.
fn holds_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(char::is_alphanumeric) && !after.is_some_and(char::is_alphanumeric)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_found_whole() {
        assert!(holds_word("a;jean dupont;0612", "jean dupont"));
        assert!(holds_word("jean dupont", "jean dupont"));
        assert!(!holds_word("jean duponte;x", "jean dupont"));
        assert!(!holds_word("xjean dupont", "jean dupont"));
        assert!(holds_word("{\"name\":\"élodie\"}", "élodie"));
        assert!(!holds_word("anything", ""));
    }
}
