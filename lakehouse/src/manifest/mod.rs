//! The YAML loader: `lakehouse.yaml` and `sources/*.yaml` into typed, validated manifests.
//!
//! serde_yaml lives only in this module. Loading is two-pass (kamu-cli's `serdes.rs`): the `version` field is
//! read first, then the typed body with `deny_unknown_fields` everywhere, so an unknown field or variant fails at
//! its own line. Cross-field and cross-file checks (unknown partner, missing agreement, direct identifier without
//! a key domain, duplicate names, …) then run on everything that parsed, and every problem is reported at once.

pub mod diag;
pub mod dropzone;
pub mod model;
pub mod names;
pub mod policy;
pub mod project;
pub mod source;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use diag::{Diagnostic, Diagnostics};
pub use model::{AuditTest, Layer, LoadedModel, ModelSidecar, Severity, SmallCells};
pub use names::{
    ColumnName, CronSchedule, DomainName, Duration, PartnerId, PhoneCountry, Retention, TableName, TimeZone,
};
pub use project::{
    Bucket, KeySource, MinGeneralization, PROJECT_FILE, Partner, PartnerKind, ProjectFile, ReadLimits, ServeSettings,
    StorageSettings, TlsFiles,
};
pub use source::{
    ApiKeyIn, BronzeTable, ChangedFiles, Column, ColumnType, Compression, Connector, Encoding, Explode, Format,
    HttpAuth, HttpConnector, HttpCursor, HttpMethod, InputNames, LegalBasis, Load, LoadMode, MqttConnector,
    NatsConnector, Normalize, OnBadRecord, OnNewField, Pagination, Pii, PostgresConnector, PostgresCursor, Retry,
    Sheet, SourceManifest, StreamBatch,
};

/// A loaded, validated project: the project file and its source manifests.
#[derive(Debug, Clone)]
pub struct Project {
    /// Absolute project directory.
    pub dir: PathBuf,
    pub file: ProjectFile,
    pub sources: Vec<LoadedSource>,
    /// Transform models found under `transforms/`, sorted by layer and name.
    pub models: Vec<LoadedModel>,
    /// What is valid but probably not meant (printed by `lakehouse validate`).
    pub notes: Vec<Diagnostic>,
    /// Who reads what (`access/*.yaml`), as written (`crate::access` checks it against the tables' schemas).
    pub policy: policy::Policy,
}

/// A source manifest with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedSource {
    /// Path relative to the project directory, as shown in messages.
    pub path: PathBuf,
    pub manifest: SourceManifest,
    /// SHA-256 of the manifest text, recorded with every run so lineage pins the exact manifest.
    pub content_hash: String,
}

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Invalid(Diagnostics),
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Deserialize)]
struct VersionProbe {
    version: Option<serde_yaml::Value>,
}

impl Project {
    /// Loads and validates the project in `dir`: all problems are returned together, sorted.
    pub fn load(dir: &Path) -> Result<Self, LoadError> {
        match Self::load_partial(dir)? {
            (Some(p), diags) if diags.is_empty() => Ok(p),
            (_, diags) => Err(LoadError::Invalid(diags.sorted())),
        }
    }

    /// Loads what can be loaded: the project (when its file parsed) with the sources and models that parsed,
    /// and every problem found. Lets later phases (transform planning) add their problems to the same report.
    pub fn load_partial(dir: &Path) -> Result<(Option<Self>, Diagnostics), LoadError> {
        let dir = std::path::absolute(dir).map_err(|source| LoadError::Io { path: dir.to_path_buf(), source })?;
        let mut diags = Diagnostics::default();
        let project_path = PathBuf::from(PROJECT_FILE);
        let text = std::fs::read_to_string(dir.join(PROJECT_FILE)).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => LoadError::Invalid(Diagnostics(vec![
                Diagnostic::new(&project_path, "", format!("no {PROJECT_FILE} in {}", dir.display()))
                    .hint("run lakehouse in the project directory or pass --project DIR"),
            ])),
            _ => LoadError::Io { path: dir.join(PROJECT_FILE), source },
        })?;
        let file = parse_versioned::<ProjectFile>(&project_path, &text, &mut diags);
        if let Some(file) = &file {
            validate_project(&dir, &project_path, &text, file, &mut diags);
        }

        let sources_dir = file.as_ref().map_or_else(|| PathBuf::from("sources"), |f| f.sources.clone());
        let mut sources = Vec::new();
        let paths = yaml_files(&dir.join(&sources_dir))
            .map_err(|source| LoadError::Io { path: dir.join(&sources_dir), source })?;
        let mut texts = BTreeMap::new();
        for path in paths {
            let rel = path.strip_prefix(&dir).unwrap_or(&path).to_path_buf();
            let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io { path: path.clone(), source })?;
            if let Some(manifest) = parse_versioned::<SourceManifest>(&rel, &text, &mut diags) {
                let content_hash = hex::encode(Sha256::digest(text.as_bytes()));
                texts.insert(rel.clone(), text);
                sources.push(LoadedSource { path: rel, manifest, content_hash });
            }
        }
        if let Some(file) = &file {
            validate_sources(&dir, file, &sources, &texts, &mut diags);
        }
        let notes = source_notes(&sources, &texts);
        let transforms_dir = file.as_ref().map_or_else(|| PathBuf::from("transforms"), |f| f.transforms.clone());
        let models = load_models(&dir, &transforms_dir, &mut diags)?;
        let access_dir = file.as_ref().map_or_else(|| PathBuf::from("access"), |f| f.access.clone());
        let policy = policy::Policy::load(&dir, &access_dir, &mut diags)
            .map_err(|source| LoadError::Io { path: dir.join(&access_dir), source })?;
        Ok((file.map(|file| Self { dir, file, sources, models, notes, policy }), diags))
    }

    /// How long tables keep their Delta log: `log_retention` of `lakehouse.yaml`, else the longest source
    /// retention and at least 10 years (`forever` when a source keeps its data forever).
    pub fn log_retention(&self) -> Retention {
        if let Some(r) = self.file.log_retention {
            return r;
        }
        let floor = Retention::Years(10);
        self.sources.iter().map(|s| s.manifest.retention).fold(floor, |a, b| match (a.max_days(), b.max_days()) {
            (None, _) => a,
            (_, None) => b,
            (Some(x), Some(y)) if y > x => b,
            _ => a,
        })
    }

    /// The source that writes a bronze table: `bronze.<name>`, or one of its child tables
    /// `bronze.<name>__<child>` (`explode`).
    pub fn source_of(&self, table: &str) -> Option<&LoadedSource> {
        let name = table.strip_prefix("bronze.")?;
        self.sources.iter().find(|s| s.manifest.table(name).is_some())
    }

    /// The sources named (all when `names` is empty), or an error naming the unknown ones.
    pub fn select_sources(&self, names: &[String]) -> Result<Vec<&LoadedSource>, Diagnostics> {
        if names.is_empty() {
            return Ok(self.sources.iter().collect());
        }
        let mut out = Vec::new();
        let mut diags = Diagnostics::default();
        for name in names {
            match self.sources.iter().find(|s| s.manifest.name.as_str() == name) {
                Some(s) => out.push(s),
                None => {
                    let known = self.sources.iter().map(|s| s.manifest.name.as_str());
                    let mut d = Diagnostic::new("", "", format!("no source named `{name}`"));
                    d.file = PathBuf::from("<command line>");
                    d = match diag::did_you_mean(name, known) {
                        Some(m) => d.hint(format!("did you mean `{m}`?")),
                        None => d.hint("`lakehouse validate` lists the sources"),
                    };
                    diags.push(d);
                }
            }
        }
        if diags.is_empty() { Ok(out) } else { Err(diags) }
    }
}

/// Finds `transforms/{silver,gold}/*.sql` and their sidecars.
fn load_models(dir: &Path, transforms: &Path, diags: &mut Diagnostics) -> Result<Vec<LoadedModel>, LoadError> {
    let root = dir.join(transforms);
    let mut models = Vec::new();
    let Ok(entries) = std::fs::read_dir(&root) else { return Ok(models) };
    let mut layer_dirs: Vec<PathBuf> =
        entries.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    layer_dirs.sort();
    for layer_dir in layer_dirs {
        let dir_name = layer_dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let rel_dir = transforms.join(&dir_name);
        let layer = match Layer::parse(&dir_name) {
            Some(Layer::Bronze) => {
                diags.push(
                    Diagnostic::new(&rel_dir, "", "bronze tables are written by ingestion, not by transforms")
                        .hint("declare a source manifest in sources/, or move the model to silver/"),
                );
                continue;
            }
            Some(layer) => layer,
            None if dir_name == "macros" => continue,
            None => {
                diags.push(
                    Diagnostic::new(&rel_dir, "", format!("unknown transforms directory `{dir_name}`"))
                        .hint("models go in transforms/silver/ or transforms/gold/, macros in transforms/macros/"),
                );
                continue;
            }
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&layer_dir)
            .map_err(|source| LoadError::Io { path: layer_dir.clone(), source })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|source| LoadError::Io { path: p.to_path_buf(), source });
        for file in &files {
            let rel = rel_dir.join(file.file_name().unwrap_or_default());
            let (stem, ext) = (
                file.file_stem().and_then(|s| s.to_str()).unwrap_or_default(),
                file.extension().and_then(|s| s.to_str()).unwrap_or_default(),
            );
            match ext {
                "sql" => {}
                "yaml" | "yml" => {
                    if !files
                        .iter()
                        .any(|f| f.file_stem() == file.file_stem() && f.extension().is_some_and(|e| e == "sql"))
                    {
                        diags.push(
                            Diagnostic::new(
                                &rel,
                                "",
                                format!("sidecar without a model: there is no {stem}.sql beside it"),
                            )
                            .hint("rename it after its model, or remove it"),
                        );
                    }
                    continue;
                }
                _ => continue,
            }
            if let Err(message) = names::check_identifier(stem, "model name") {
                diags.push(Diagnostic::new(&rel, "", message).hint("rename the file"));
                continue;
            }
            let sql = read(file)?;
            let (mut sidecar, mut sidecar_path, mut sidecar_text) = (None, None, None);
            for ext in ["yaml", "yml"] {
                let side = file.with_extension(ext);
                if side.is_file() {
                    let side_rel = rel_dir.join(side.file_name().unwrap_or_default());
                    let text = read(&side)?;
                    sidecar = model::parse_sidecar(&side_rel, &text, diags);
                    if let Some(s) = &sidecar {
                        validate_sidecar(layer, &side_rel, &text, s, diags);
                    }
                    sidecar_path = Some(side_rel);
                    sidecar_text = Some(text);
                    break;
                }
            }
            if layer == Layer::Gold && sidecar_path.is_none() {
                diags.push(
                    Diagnostic::new(&rel, "", "a gold model needs a sidecar declaring its small-cell suppression")
                        .hint(format!(
                            "add {stem}.yaml with `version: 1` and `small_cells: {{ count: <count column> }}`"
                        )),
                );
            }
            models.push(LoadedModel {
                layer,
                name: stem.to_string(),
                template: format!("{dir_name}/{stem}.sql"),
                path: rel,
                sql,
                sidecar,
                sidecar_path,
                sidecar_text,
            });
        }
    }
    Ok(models)
}

fn validate_sidecar(layer: Layer, path: &Path, text: &str, s: &ModelSidecar, diags: &mut Diagnostics) {
    let at = |p: &[&str]| diag::locate(text, p);
    match (&s.small_cells, layer) {
        (None, Layer::Gold) => diags.push(
            Diagnostic::new(path, "small_cells", "a gold model must declare its small-cell suppression")
                .at((1, 1))
                .hint("add `small_cells: { count: <count column> }`, or `small_cells: { exempt: <why> }` when no cell counts people"),
        ),
        (Some(_), Layer::Silver) => diags.push(
            Diagnostic::new(path, "small_cells", "small-cell suppression applies to gold models only")
                .at(at(&["small_cells"]))
                .hint("remove it, or move the model to gold/"),
        ),
        (Some(sc), _) if sc.count.is_some() == sc.exempt.is_some() => diags.push(
            Diagnostic::new(path, "small_cells", "set exactly one of `count` and `exempt`")
                .at(at(&["small_cells"])),
        ),
        (Some(sc), _) if sc.exempt.is_some() && !sc.measures.is_empty() => diags.push(
            Diagnostic::new(path, "small_cells.measures", "`measures` needs `count`, not `exempt`")
                .at(at(&["small_cells", "measures"])),
        ),
        _ => {}
    }
    for (i, t) in s.tests.iter().enumerate() {
        let empty = match t {
            AuditTest::NotNull { columns, .. } | AuditTest::Unique { columns, .. } => columns.is_empty(),
            AuditTest::RowCount { min, max, .. } => min.is_none() && max.is_none(),
            _ => false,
        };
        if empty {
            diags.push(
                Diagnostic::new(path, format!("tests.{i}"), format!("`{}` checks nothing", t.label()))
                    .at(at(&["tests", &i.to_string()]))
                    .hint("name at least one column, or set `min` / `max`"),
            );
        }
    }
}

/// The key domain whose key encrypts quarantined raw records: reserved, a manifest cannot declare it.
pub const QUARANTINE_DOMAIN: &str = "quarantine";

/// Expands a leading `~/` to the home directory.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Checks a strptime format string (`format:` of date and timestamp columns).
pub fn check_strptime(fmt: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(fmt).any(|i| matches!(i, Item::Error)) {
        Err(format!("invalid strptime format `{fmt}`"))
    } else {
        Ok(())
    }
}

/// Reads `version` first, then the typed body.
/// Parses one source manifest's text (version, then the typed body), without the project's cross-file checks.
pub fn parse_source(path: &Path, text: &str) -> Result<SourceManifest, Diagnostics> {
    let mut diags = Diagnostics::default();
    parse_versioned(path, text, &mut diags).ok_or(diags)
}

/// The `*.yaml` / `*.yml` files of a directory, sorted; none when there is no such directory.
pub(crate) fn yaml_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut paths: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(Result::ok).map(|e| e.path()).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    paths.retain(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")));
    paths.sort();
    Ok(paths)
}

pub(crate) fn parse_versioned<T: serde::de::DeserializeOwned>(
    path: &Path,
    text: &str,
    diags: &mut Diagnostics,
) -> Option<T> {
    let probe: VersionProbe = match serde_yaml::from_str(text) {
        Ok(p) => p,
        Err(e) => {
            // Not even a YAML mapping: report the syntax error.
            diags.push(diag::from_yaml_error(path, text, &e));
            return None;
        }
    };
    match probe.version {
        Some(serde_yaml::Value::Number(n)) if n.as_u64() == Some(1) => {}
        Some(other) => {
            let shown = serde_yaml::to_string(&other).unwrap_or_default();
            diags.push(
                Diagnostic::new(path, "version", format!("unsupported version `{}`", shown.trim()))
                    .at(diag::locate(text, &["version"]))
                    .hint("this lakehouse reads version 1"),
            );
            return None;
        }
        None => {
            diags.push(Diagnostic::new(path, "version", "missing field `version`").at((1, 1)).hint("add `version: 1`"));
            return None;
        }
    }
    match serde_yaml::from_str::<T>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let mut d = diag::from_yaml_error(path, text, &e);
            d.hint = hint_for(&d.message).or(d.hint);
            let first = d.clone();
            diags.push(d);
            diags.extend(further_errors::<T>(path, text, first));
            None
        }
    }
}

/// The structural errors after the first one: deserialization stops at the first, so the part of the document
/// at fault is removed and the rest deserialized again, until it passes (or nothing can be removed). Each error
/// is located in the original text by its field path. A field missing only because an error removed it is not
/// reported again.
fn further_errors<T: serde::de::DeserializeOwned>(path: &Path, text: &str, first: Diagnostic) -> Vec<Diagnostic> {
    let Ok(mut value) = serde_yaml::from_str::<serde_yaml::Value>(text) else { return Vec::new() };
    let mut found: Vec<Diagnostic> = Vec::new();
    let mut removed: Vec<String> = Vec::new();
    let mut fault = first;
    // A bound on the rounds: each removes one node, and a manifest has few.
    for _ in 0..200 {
        if fault.field.is_empty() || !diag::remove_path(&mut value, &fault.field) {
            break;
        }
        removed.push(fault.field.clone());
        // Reparsed from text, so that serde_yaml names the field path of the next error.
        let Ok(retext) = serde_yaml::to_string(&value) else { break };
        let Err(e) = serde_yaml::from_str::<T>(&retext) else { break };
        let mut d = diag::from_yaml_error(path, &retext, &e);
        d.hint = hint_for(&d.message).or(d.hint);
        if let Some(missing) = d.message.strip_prefix("missing field `").and_then(|m| m.split('`').next()) {
            let full = if d.field.is_empty() { missing.to_string() } else { format!("{}.{missing}", d.field) };
            if d.field.is_empty() && removed.contains(&full) {
                break;
            }
            if removed.contains(&full) {
                // Its container is incomplete because of an error already reported: drop it and go on.
                fault = Diagnostic { message: String::new(), ..d };
                continue;
            }
        }
        let segments: Vec<&str> = d.field.split(['.', '[', ']']).filter(|s| !s.is_empty()).collect();
        let at = if segments.is_empty() { (0, 0) } else { diag::locate(text, &segments) };
        d = d.at(at);
        if found.iter().any(|f| f.field == d.field && f.message == d.message) {
            break;
        }
        found.push(d.clone());
        fault = d;
    }
    found
}

fn hint_for(message: &str) -> Option<String> {
    // The backticked words of a message: the value at fault first, then the expected ones.
    let quoted: Vec<&str> = message.split('`').skip(1).step_by(2).collect();
    let suggestion = || {
        let (word, expected) = quoted.split_first()?;
        diag::did_you_mean(word, expected.iter().copied()).map(|s| format!("did you mean `{s}`? "))
    };
    if message.starts_with("unknown field") {
        Some(format!(
            "{}remove the field or fix its spelling; `lakehouse schema` prints every allowed field",
            suggestion().unwrap_or_default()
        ))
    } else if message.starts_with("unknown variant") {
        Some(suggestion().map_or_else(|| "use one of the expected values".into(), |s| s.trim_end().to_string()))
    } else if message.ends_with("expected u8") || message.ends_with("expected u32") || message.ends_with("expected u64")
    {
        Some("write a whole number".into())
    } else if message.ends_with("expected an array of length 2") {
        Some("write a pair, e.g. `range: [0, 100]`".into())
    } else if message.starts_with("missing field") {
        Some("add the field; `lakehouse schema` documents it".into())
    } else {
        None
    }
}

fn validate_project(dir: &Path, path: &Path, text: &str, file: &ProjectFile, diags: &mut Diagnostics) {
    let at = |p: &[&str]| diag::locate(text, p);
    if !(file.warehouse.starts_with("file://") || file.warehouse.starts_with("s3://")) {
        diags.push(
            Diagnostic::new(path, "warehouse", format!("unsupported warehouse URL `{}`", file.warehouse))
                .at(at(&["warehouse"]))
                .hint("use `file://./warehouse` or `s3://bucket/prefix`"),
        );
    }
    if !(file.catalog.starts_with("sqlite://") || file.catalog.starts_with("postgres://")) {
        diags.push(
            Diagnostic::new(path, "catalog", format!("unsupported catalog URL `{}`", file.catalog))
                .at(at(&["catalog"]))
                .hint("use `sqlite://./.lakehouse/catalog.db` or `postgres://user@host/db`"),
        );
    }
    if let Some(ol) = &file.openlineage {
        if ol.directory.is_none() && ol.url.is_none() {
            diags.push(
                Diagnostic::new(path, "openlineage", "OpenLineage events need a `directory`, a `url` or both")
                    .at(at(&["openlineage"])),
            );
        }
        if let Some(u) = &ol.url
            && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            diags.push(
                Diagnostic::new(path, "openlineage.url", format!("`{u}` is not an http(s) URL"))
                    .at(at(&["openlineage", "url"]))
                    .hint("e.g. http://marquez:5000/api/v1/lineage"),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, p) in file.partners.iter().enumerate() {
        if !seen.insert(p.id.as_str()) {
            diags.push(
                Diagnostic::new(path, format!("partners.{i}.id"), format!("partner `{}` is declared twice", p.id))
                    .at(at(&["partners", &i.to_string(), "id"])),
            );
        }
    }
    let mut seen = BTreeSet::new();
    for (i, d) in file.privacy.domains.iter().enumerate() {
        if d.as_str() == QUARANTINE_DOMAIN {
            diags.push(
                Diagnostic::new(
                    path,
                    format!("privacy.domains.{i}"),
                    "`quarantine` is reserved for the key that encrypts quarantined records",
                )
                .at(at(&["privacy", "domains"]))
                .hint("choose another domain name"),
            );
        }
        if !seen.insert(d.as_str()) {
            diags.push(
                Diagnostic::new(path, format!("privacy.domains.{i}"), format!("domain `{d}` is declared twice"))
                    .at(at(&["privacy", "domains"])),
            );
        }
    }
    validate_drop_zones(dir, path, text, file, diags);
    if let KeySource::File { path: key_path, .. } = &file.privacy.keys {
        let resolved = expand_home(key_path);
        if !resolved.is_absolute() {
            diags.push(
                Diagnostic::new(path, "privacy.keys.path", format!("key file path `{key_path}` is relative"))
                    .at(at(&["privacy", "keys", "path"]))
                    .hint("use an absolute path or `~/…` outside the project, e.g. `~/.config/lakehouse/keys`"),
            );
        } else if resolved.starts_with(dir) {
            diags.push(
                Diagnostic::new(path, "privacy.keys.path", "the key file is inside the project directory")
                    .at(at(&["privacy", "keys", "path"]))
                    .hint("keys must never be in the repository: move the file outside it, e.g. `~/.config/lakehouse/keys`"),
            );
        }
    }
}

/// Drop zones resolve, and none holds (or lies in) the warehouse, the project's state or the key file.
fn validate_drop_zones(dir: &Path, path: &Path, text: &str, file: &ProjectFile, diags: &mut Diagnostics) {
    let mut protected: Vec<(&str, dropzone::Zone)> = Vec::new();
    if let Ok(w) = dropzone::Zone::resolve(dir, &file.warehouse) {
        protected.push(("the warehouse", w));
    }
    if let Ok(state) = dropzone::Zone::resolve(dir, ".lakehouse") {
        protected.push(("the project's state directory `.lakehouse`", state));
    }
    if let KeySource::File { path: key_path, .. } = &file.privacy.keys {
        let key = expand_home(key_path);
        protected.push(("the key file", dropzone::Zone::Local(dropzone::resolve_local(&key))));
    }
    for (i, root) in file.drop_zones.iter().enumerate() {
        let at = diag::locate(text, &["drop_zones", &i.to_string()]);
        match dropzone::Zone::resolve(dir, root) {
            Err(reason) => diags.push(
                Diagnostic::new(path, format!("drop_zones.{i}"), format!("unsupported drop zone `{root}`: {reason}"))
                    .at(at)
                    .hint("use a directory (relative to the project), `file:///abs/dir` or `s3://bucket/prefix`"),
            ),
            Ok(zone) => {
                for (what, p) in &protected {
                    if p.is_within(&zone) || zone.is_within(p) {
                        diags.push(
                            Diagnostic::new(
                                path,
                                format!("drop_zones.{i}"),
                                format!("drop zone `{root}` overlaps {what}"),
                            )
                            .at(at)
                            .hint("a drop zone holds partner files only: give it a directory of its own"),
                        );
                    }
                }
            }
        }
    }
}

fn validate_sources(
    dir: &Path,
    project: &ProjectFile,
    sources: &[LoadedSource],
    texts: &BTreeMap<PathBuf, String>,
    diags: &mut Diagnostics,
) {
    let mut names: BTreeMap<&str, &Path> = BTreeMap::new();
    for src in sources {
        let (m, path) = (&src.manifest, src.path.as_path());
        let text = texts.get(path).map(String::as_str).unwrap_or_default();
        validate_schedule(project, m, path, text, diags);
        if let Some(first) = names.insert(m.name.as_str(), path) {
            diags.push(
                Diagnostic::new(path, "name", format!("source `{}` is also declared in {}", m.name, first.display()))
                    .at(diag::locate(text, &["name"]))
                    .hint("source names must be unique: each one is a bronze table"),
            );
        }
        validate_identity(project, m, path, text, diags);
        validate_connector(dir, project, m, path, text, diags);
        validate_format(m, path, text, diags);
        validate_columns(project, m, path, text, diags);
    }
}

/// Retention against the project's log retention, and retries.
fn validate_schedule(project: &ProjectFile, m: &SourceManifest, path: &Path, text: &str, diags: &mut Diagnostics) {
    let at = |p: &[&str]| diag::locate(text, p);
    let err = |field: String, msg: String, loc: (usize, usize)| Diagnostic::new(path, field, msg).at(loc);
    let longer = match project.log_retention.map(|l| (m.retention.max_days(), l.max_days())) {
        None | Some((_, None)) => false,
        Some((None, Some(_))) => true,
        Some((Some(data), Some(log))) => data > log,
    };
    if let (true, Some(log_retention)) = (longer, project.log_retention) {
        diags.push(
            err(
                "retention".into(),
                format!(
                    "retention `{}` is longer than the project's `log_retention` ({}): the Delta log, which lineage \
                     and time travel read, would expire before the data",
                    m.retention, log_retention
                ),
                at(&["retention"]),
            )
            .hint("raise `log_retention` in lakehouse.yaml (or leave it out: the default follows the sources), or shorten this retention"),
        );
    }
    if m.schedule.is_continuous() && !m.is_stream() {
        diags.push(
            err(
                "schedule".into(),
                "`schedule: continuous` is for stream sources (`mqtt`, `nats`): this source would be read again \
                 without a pause"
                    .into(),
                at(&["schedule"]),
            )
            .hint("use a crontab, e.g. `*/5 * * * *`"),
        );
    }
    if m.retry.attempts == 0 {
        diags.push(
            err(
                "retry.attempts".into(),
                "`attempts` counts the first run: it must be at least 1".into(),
                at(&["retry", "attempts"]),
            )
            .hint("use `attempts: 1` for no retry"),
        );
    }
    if m.retry.max_backoff.0 < m.retry.backoff.0 {
        diags.push(err(
            "retry.max_backoff".into(),
            "`max_backoff` is shorter than `backoff`".into(),
            at(&["retry", "max_backoff"]),
        ));
    }
}

/// The name against the file name, and the owner against the declared partners (an external one needs an
/// agreement reference).
fn validate_identity(project: &ProjectFile, m: &SourceManifest, path: &Path, text: &str, diags: &mut Diagnostics) {
    let at = |p: &[&str]| diag::locate(text, p);
    let err = |field: String, msg: String, loc: (usize, usize)| Diagnostic::new(path, field, msg).at(loc);
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    if stem != m.name.as_str() {
        diags.push(
            err("name".into(), format!("name `{}` differs from the file name `{stem}`", m.name), at(&["name"]))
                .hint(format!("rename the file to `{}.yaml` or the source to `{stem}`", m.name)),
        );
    }
    match project.partners.iter().find(|p| p.id == m.owner) {
        None => {
            let known = project.partners.iter().map(|p| p.id.as_str());
            let d = err("owner".into(), format!("unknown partner `{}`", m.owner), at(&["owner"]));
            diags.push(match diag::did_you_mean(m.owner.as_str(), known) {
                Some(s) => d.hint(format!("did you mean `{s}`? partners are declared in {PROJECT_FILE}")),
                None => d.hint(format!("declare the partner under `partners:` in {PROJECT_FILE}")),
            });
        }
        Some(p) if p.kind == PartnerKind::External && m.agreement.as_deref().is_none_or(|a| a.trim().is_empty()) => {
            diags.push(
                err(
                    "agreement".into(),
                    format!("partner `{}` is external: the agreement reference is required", p.id),
                    at(&["owner"]),
                )
                .hint("add `agreement: <convention reference>` (e.g. CONV-2018-014)"),
            );
        }
        Some(_) => {}
    }
    if m.purpose.as_deref().is_some_and(|p| p.trim().is_empty()) {
        diags.push(
            err("purpose".into(), "`purpose` is empty".into(), at(&["purpose"]))
                .hint("say why the data is processed (it goes into the register of processing), or leave it out"),
        );
    }
    for (i, s) in m.data_subjects.iter().enumerate() {
        if s.trim().is_empty() {
            diags.push(
                err(format!("data_subjects.{i}"), "an empty category of data subjects".into(), at(&["data_subjects"]))
                    .hint("name the people the records are about (`reporters`, `victims`, `callers`)"),
            );
        }
    }
}

/// Each column's declaration, and key columns for `upsert`.
fn validate_columns(project: &ProjectFile, m: &SourceManifest, path: &Path, text: &str, diags: &mut Diagnostics) {
    let at = |p: &[&str]| diag::locate(text, p);
    let err = |field: String, msg: String, loc: (usize, usize)| Diagnostic::new(path, field, msg).at(loc);
    if m.columns.is_empty() {
        diags.push(
            err("columns".into(), "no columns declared".into(), at(&["columns"])).hint("declare at least one column"),
        );
    }
    let siblings: Vec<&str> = m.columns.keys().map(ColumnName::as_str).collect();
    for (name, col) in &m.columns {
        let site = ColumnSite { path, text, column: vec!["columns", name.as_str()], siblings: siblings.clone() };
        validate_column(project, &site, col, diags);
    }
    validate_explode(project, m, path, text, diags);
    if m.load.mode == LoadMode::Upsert && m.key_columns().is_empty() {
        diags.push(
            err("load.mode".into(), "`upsert` needs key columns".into(), at(&["load", "mode"]))
                .hint("mark the identifying columns with `key: true`"),
        );
    }
    validate_unique(m, path, text, diags);
}

/// `explode`: JSON sources with key columns; child names that are not the side tables'; the element's columns
/// checked like the record's, none named like a key column.
fn validate_explode(project: &ProjectFile, m: &SourceManifest, path: &Path, text: &str, diags: &mut Diagnostics) {
    let keys = m.key_columns();
    if !m.explode.is_empty() {
        let err = |msg: &str| Diagnostic::new(path, "explode", msg).at(diag::locate(text, &["explode"]));
        if !matches!(m.format(), Format::Json { .. } | Format::Ndjson { .. } | Format::Geojson { .. }) {
            diags.push(
                err("`explode` reads arrays of JSON records; this source's format is not JSON")
                    .hint("use `format: { kind: ndjson }` or `{ kind: json }`, or remove `explode`"),
            );
        }
        if keys.is_empty() {
            diags.push(
                err("`explode` needs the record's key columns to link each element's row to its record")
                    .hint("mark the identifying columns of the record with `key: true`"),
            );
        }
    }
    for (child, e) in m.children() {
        let err = |f: &[&str], msg: String| {
            let mut p = vec!["explode", child];
            p.extend_from_slice(f);
            Diagnostic::new(path, p.join("."), msg).at(diag::locate(text, &p))
        };
        if matches!(child, "files" | "quarantine") {
            diags.push(
                err(&[], format!("`{child}` names a side table of bronze.{}", m.name)).hint("choose another name"),
            );
        }
        if e.columns.is_empty() {
            diags.push(err(&["columns"], "no columns declared".into()).hint("declare the fields of each element"));
        }
        let mut siblings: Vec<&str> = keys.clone();
        siblings.extend(e.columns.keys().map(ColumnName::as_str));
        for (name, col) in &e.columns {
            if keys.contains(&name.as_str()) {
                diags.push(
                    err(&["columns", name.as_str()], format!("`{name}` is also a key column of the record"))
                        .hint("the child table holds the record's key columns: name the element's field otherwise"),
                );
            }
            if col.key || col.unique {
                diags.push(err(
                    &["columns", name.as_str()],
                    "`key` and `unique` apply to the record's columns, not to an element's".into(),
                ));
            }
            let column = vec!["explode", child, "columns", name.as_str()];
            validate_column(project, &ColumnSite { path, text, column, siblings: siblings.clone() }, col, diags);
        }
    }
}

/// The manifest's `unique:` list names declared columns, each once.
fn validate_unique(m: &SourceManifest, path: &Path, text: &str, diags: &mut Diagnostics) {
    let Some(cols) = &m.unique else { return };
    let err = |msg: String| Diagnostic::new(path, "unique", msg).at(diag::locate(text, &["unique"]));
    if cols.is_empty() {
        diags.push(err("`unique` lists no column".into()).hint("list the columns no two records may share: [a, b]"));
    }
    let mut seen = BTreeSet::new();
    for c in cols {
        if !m.columns.contains_key(c) {
            let d = err(format!("`unique` names `{c}`, which is not a declared column"));
            diags.push(match diag::did_you_mean(c.as_str(), m.columns.keys().map(ColumnName::as_str)) {
                Some(s) => d.hint(format!("did you mean `{s}`?")),
                None => d.hint("list columns declared under `columns:`"),
            });
        } else if !seen.insert(c.as_str()) {
            diags.push(err(format!("`unique` lists `{c}` twice")));
        }
    }
}

/// What is valid but probably not meant: `key: true` in `append` mode without a uniqueness constraint only
/// makes the columns required.
fn source_notes(sources: &[LoadedSource], texts: &BTreeMap<PathBuf, String>) -> Vec<Diagnostic> {
    let mut notes = Vec::new();
    for src in sources {
        let m = &src.manifest;
        let keys = m.key_columns();
        if m.load.mode != LoadMode::Append || keys.is_empty() || !m.unique_constraints().is_empty() {
            continue;
        }
        let text = texts.get(&src.path).map(String::as_str).unwrap_or_default();
        notes.push(
            Diagnostic::new(
                &src.path,
                format!("columns.{}.key", keys[0]),
                format!(
                    "in `append` mode `key: true` only makes {} required: records with the same key are all kept",
                    keys.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                ),
            )
            .at(diag::locate(text, &["columns", keys[0], "key"]))
            .hint(if keys.len() == 1 {
                format!("add `unique: true` to `{}` to quarantine duplicates, or use `load: {{ mode: upsert }}` to keep the last record of a key", keys[0])
            } else {
                format!("add `unique: [{}]` to quarantine duplicates, or use `load: {{ mode: upsert }}` to keep the last record of a key", keys.join(", "))
            }),
        );
    }
    notes
}

/// Where a column is declared, for its diagnostics: the manifest, the key path of the column (`columns.id`,
/// `explode.contacts.columns.value`), and the names of the other columns of its table.
struct ColumnSite<'a> {
    path: &'a Path,
    text: &'a str,
    column: Vec<&'a str>,
    siblings: Vec<&'a str>,
}

impl<'a> ColumnSite<'a> {
    fn name(&self) -> &str {
        self.column.last().copied().unwrap_or_default()
    }

    /// The field path of one of the column's keys (the column itself for ""), and a function giving the line:col
    /// of such a key in the manifest's text.
    fn paths(&self) -> (impl Fn(&str) -> String + '_, impl Fn(&str) -> (usize, usize) + '_) {
        let base = self.column.join(".");
        let field = move |f: &str| if f.is_empty() { base.clone() } else { format!("{base}.{f}") };
        let at = move |f: &str| {
            let mut p = self.column.clone();
            if !f.is_empty() {
                p.push(f);
            }
            diag::locate(self.text, &p)
        };
        (field, at)
    }
}

/// One column: its privacy declaration, and the options that apply to its type only.
fn validate_column(project: &ProjectFile, site: &ColumnSite<'_>, col: &Column, diags: &mut Diagnostics) {
    let err = |field: String, msg: String, loc: (usize, usize)| Diagnostic::new(site.path, field, msg).at(loc);
    let (field, cat) = site.paths();
    validate_column_privacy(project, site, col, diags);
    if let Some(InputNames::Many(names)) = &col.from {
        let mut seen = BTreeSet::new();
        if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
            diags.push(
                err(field("from"), "`from` lists no name, or an empty one".into(), cat("from"))
                    .hint("give the input field name, or a list of the names it has had: [acc_id, accident_id]"),
            );
        } else if let Some(twice) = names.iter().find(|n| !seen.insert(n.as_str())) {
            diags.push(err(field("from"), format!("`from` lists `{twice}` twice"), cat("from")));
        }
    }
    if col.keep_clear.is_some() && col.pii != Pii::Direct {
        diags.push(err(
            field("keep_clear"),
            "`keep_clear` applies to `pii: direct` columns only".into(),
            cat("keep_clear"),
        ));
    }
    // The options of a list apply to its items.
    let ty = match (col.ty, col.items) {
        (ColumnType::List, Some(items)) => items,
        _ => col.ty,
    };
    validate_nested(project, site, col, diags);
    if col.values.is_some() && ty != ColumnType::String {
        diags.push(err(field("values"), "`values` applies to string columns only".into(), cat("values")));
    }
    if let Some([lo, hi]) = col.range {
        if !ty.is_numeric() {
            diags.push(err(
                field("range"),
                "`range` applies to int, double and decimal columns only".into(),
                cat("range"),
            ));
        } else if lo > hi {
            diags.push(err(field("range"), format!("empty range: {lo} > {hi}"), cat("range")));
        }
    }
    if let Some(fmt) = &col.format {
        if !matches!(ty, ColumnType::Date | ColumnType::Timestamp) {
            diags.push(err(
                field("format"),
                "`format` applies to date and timestamp columns only".into(),
                cat("format"),
            ));
        } else if let Err(e) = check_strptime(fmt) {
            diags.push(
                err(field("format"), e, cat("format")).hint("use chrono strftime codes such as `%d/%m/%Y %H:%M`"),
            );
        }
    }
    if col.timezone.is_some() && ty != ColumnType::Timestamp {
        diags.push(err(field("timezone"), "`timezone` applies to timestamp columns only".into(), cat("timezone")));
    }
    match (ty, col.precision, col.scale) {
        (ColumnType::Decimal, None, _) => diags.push(
            err(field("precision"), "a decimal column needs `precision` (1 to 38)".into(), cat("type"))
                .hint("add e.g. `precision: 12, scale: 2`"),
        ),
        (ColumnType::Decimal, Some(p), s) => {
            let s = s.unwrap_or(0);
            if !(1..=38).contains(&p) || s < 0 || s as u8 > p {
                diags.push(err(
                    field("precision"),
                    format!("invalid decimal({p}, {s}): precision 1 to 38, scale 0 to precision"),
                    cat("precision"),
                ));
            }
        }
        (_, Some(_), _) | (_, _, Some(_)) => diags.push(err(
            field("precision"),
            "`precision` and `scale` apply to decimal columns only".into(),
            cat(if col.precision.is_some() { "precision" } else { "scale" }),
        )),
        _ => {}
    }
}

/// `list` needs scalar `items`, `struct` scalar `fields` without their own privacy class; keys and unique columns
/// are scalar.
fn validate_nested(project: &ProjectFile, site: &ColumnSite<'_>, col: &Column, diags: &mut Diagnostics) {
    let err = |field: String, msg: &str, loc: (usize, usize)| Diagnostic::new(site.path, field, msg).at(loc);
    let (field, cat) = site.paths();
    match (col.ty, col.items) {
        (ColumnType::List, None) => diags.push(
            err(field("items"), "a list column needs `items`, the type of its values", cat("type"))
                .hint("add e.g. `items: string`"),
        ),
        (ColumnType::List, Some(t)) if !t.is_scalar() => diags.push(err(
            field("items"),
            "`items` is a scalar type: string, int, double, bool, date, timestamp or decimal",
            cat("items"),
        )),
        (ColumnType::List, _) | (_, None) => {}
        (_, Some(_)) => diags.push(err(field("items"), "`items` applies to list columns only", cat("items"))),
    }
    match (col.ty, &col.fields) {
        (ColumnType::Struct, None) => diags.push(
            err(field("fields"), "a struct column needs `fields`", cat("type"))
                .hint("declare its fields like columns: `fields: { name: { type: string } }`"),
        ),
        (ColumnType::Struct, Some(fields)) => {
            if fields.is_empty() {
                diags.push(err(field("fields"), "a struct column needs `fields`", cat("fields")));
            }
            let siblings: Vec<&str> = fields.keys().map(ColumnName::as_str).collect();
            for (name, f) in fields {
                let mut column = site.column.clone();
                column.extend(["fields", name.as_str()]);
                let inner = ColumnSite { path: site.path, text: site.text, column, siblings: siblings.clone() };
                let (ifield, icat) = inner.paths();
                if !f.ty.is_scalar() {
                    diags.push(err(ifield("type"), "the fields of a struct have scalar types", icat("type")));
                }
                if f.pii != Pii::None || f.key || f.unique {
                    diags.push(
                        err(ifield(""), "a struct's field has no `pii`, `key` or `unique` of its own", icat(""))
                            .hint("declare the privacy class on the struct column, or read the field into a column of its own (`from: <struct>.<field>`)"),
                    );
                }
                validate_column(project, &inner, f, diags);
            }
        }
        (_, Some(_)) => diags.push(err(field("fields"), "`fields` applies to struct columns only", cat("fields"))),
        (_, None) => {}
    }
    if (col.key || col.unique) && !col.ty.is_scalar() {
        let what = if col.key { "key" } else { "unique" };
        diags.push(err(field(what), "a key or unique column has a scalar type", cat(what)));
    }
}

/// A direct identifier is a pseudonymized string with a declared key domain (unless kept in clear with a DPO
/// approval); `domain` and `normalize` apply to direct identifiers only.
fn validate_column_privacy(project: &ProjectFile, site: &ColumnSite<'_>, col: &Column, diags: &mut Diagnostics) {
    let err = |field: String, msg: String, loc: (usize, usize)| Diagnostic::new(site.path, field, msg).at(loc);
    let (field, cat) = site.paths();
    let name = site.name();
    if col.normalize == Normalize::Phone && project.privacy.phone_country.is_none() {
        diags.push(
            err(
                field("normalize"),
                "`normalize: phone` reads national numbers with `privacy.phone_country`".into(),
                cat("normalize"),
            )
            .hint(format!("add `phone_country: FR` (the country's ISO code) under `privacy:` in {PROJECT_FILE}")),
        );
    }
    if col.pii == Pii::Direct && col.keep_clear.is_none() {
        if col.ty != ColumnType::String {
            let hint = if col.ty == ColumnType::List {
                "an array of personal data is landed with `explode` (`from: .`), pseudonymized element by element"
                    .to_string()
            } else if !col.ty.is_scalar() {
                format!(
                    "a JSON value is not pseudonymized whole: read its fields into columns of their own (`from: \
                     {name}.field`), or land its arrays with `explode`, and declare `pii` on those"
                )
            } else {
                "its value is replaced by a pseudonym (hex text)".to_string()
            };
            diags.push(
                err(field("type"), "a `pii: direct` column must have `type: string`".into(), cat("type")).hint(hint),
            );
        }
        match &col.domain {
            None => diags.push(
                err(field("domain"), "a direct identifier needs a key `domain`".into(), cat("pii")).hint(format!(
                    "add `domain: <one of {}>`, or `keep_clear: <DPO approval reference>` to keep it in clear",
                    list(project.privacy.domains.iter().map(DomainName::as_str))
                )),
            ),
            Some(d) if !project.privacy.domains.contains(d) => {
                let known = project.privacy.domains.iter().map(DomainName::as_str);
                let e = err(field("domain"), format!("unknown key domain `{d}`"), cat("domain"));
                diags.push(match diag::did_you_mean(d.as_str(), known) {
                    Some(s) => e.hint(format!(
                        "did you mean `{s}`? domains are declared under `privacy.domains` in {PROJECT_FILE}"
                    )),
                    None => e.hint(format!("declare it under `privacy.domains` in {PROJECT_FILE}")),
                });
            }
            Some(_) => {}
        }
        let key_id_col = format!("{name}_key_id");
        if site.siblings.contains(&key_id_col.as_str()) {
            diags.push(err(
                field(""),
                format!("column `{key_id_col}` is reserved for the key id of `{name}`"),
                cat(""),
            ));
        }
    } else {
        if col.domain.is_some() && col.pii != Pii::Direct {
            diags.push(err(field("domain"), "`domain` applies to `pii: direct` columns only".into(), cat("domain")));
        }
        if col.normalize != Normalize::Trim && col.pii != Pii::Direct {
            diags.push(err(
                field("normalize"),
                "`normalize` applies to `pii: direct` columns only".into(),
                cat("normalize"),
            ));
        }
    }
}

fn validate_connector(
    dir: &Path,
    project: &ProjectFile,
    m: &SourceManifest,
    path: &Path,
    text: &str,
    diags: &mut Diagnostics,
) {
    match &m.connector {
        Connector::Files { location, pattern, .. } => {
            let at = diag::locate(text, &["connector", "location"]);
            match dropzone::Zone::resolve(dir, location) {
                Err(reason) => diags.push(
                    Diagnostic::new(path, "connector.location", format!("unsupported location `{location}`: {reason}"))
                        .at(at)
                        .hint("use a directory (relative to the project), `file:///abs/dir` or `s3://bucket/prefix`"),
                ),
                Ok(zone) => {
                    let roots: Vec<dropzone::Zone> =
                        project.drop_zones.iter().filter_map(|r| dropzone::Zone::resolve(dir, r).ok()).collect();
                    if !roots.iter().any(|r| zone.is_within(r)) {
                        let declared = if project.drop_zones.is_empty() {
                            "lakehouse.yaml declares no `drop_zones`".to_string()
                        } else {
                            format!("the drop zones are {}", list(project.drop_zones.iter().map(String::as_str)))
                        };
                        diags.push(
                            Diagnostic::new(
                                path,
                                "connector.location",
                                format!(
                                    "location `{location}` is outside the declared drop zones ({declared}), once \
                                     `..` and symbolic links are resolved"
                                ),
                            )
                            .at(at)
                            .hint("put the partner's files under a drop zone, or add its root to `drop_zones:` in lakehouse.yaml"),
                        );
                    }
                }
            }
            if let Err(e) = globset::Glob::new(pattern) {
                diags.push(
                    Diagnostic::new(path, "connector.pattern", format!("invalid glob `{pattern}`: {}", e.kind()))
                        .at(diag::locate(text, &["connector", "pattern"])),
                );
            }
        }
        Connector::Http(http) => validate_http(m, http, path, text, diags),
        Connector::Postgres(pg) => validate_postgres(m, pg, path, text, diags),
        Connector::Mqtt(mqtt) => validate_mqtt(mqtt, path, text, diags),
        Connector::Nats(nats) => validate_nats(nats, path, text, diags),
    }
    if m.is_stream() {
        validate_stream(m, path, text, diags);
    } else if m.format.is_none() && !m.typed_connector() {
        diags.push(
            Diagnostic::new(path, "format", "`format` is missing: how the connector's bytes become records")
                .at(diag::locate(text, &["connector"]))
                .hint("e.g. `format: { kind: csv }`, `{ kind: ndjson }`, `{ kind: json, records: data }`"),
        );
    }
}

/// `kind: http`: a URL that keeps credentials off clear networks, a pagination and cursor the format can
/// follow, and a load mode that does not duplicate what an API gives again.
fn validate_http(m: &SourceManifest, http: &HttpConnector, path: &Path, text: &str, diags: &mut Diagnostics) {
    let mut push = connector_diagnostics(path, text, diags);
    // https, or http on a loopback address.
    let secure = |u: &url::Url| u.scheme() == "https" || (u.scheme() == "http" && is_loopback(u));
    match url::Url::parse(&http.url) {
        Err(e) => push("url", &["connector", "url"], format!("the URL cannot be read: {e}"), ""),
        Ok(u) => {
            if !secure(&u) {
                push(
                    "url",
                    &["connector", "url"],
                    format!("`{}`: only https:// is read (http:// on a loopback address only)", shown_url(&u)),
                    "partners' APIs are read over TLS: credentials and personal data never travel in clear",
                );
            }
            if !u.username().is_empty() || u.password().is_some() {
                push(
                    "url",
                    &["connector", "url"],
                    "the URL holds credentials: they belong in the environment".into(),
                    "use connector.auth with `kind: basic` and `username_env`/`password_env`",
                );
            }
        }
    }
    if let Some(HttpAuth::Oauth2 { token_url, .. }) = &http.auth
        && !url::Url::parse(token_url).is_ok_and(|u| secure(&u))
    {
        let message = format!("`{token_url}`: a URL with https:// (http:// on a loopback address only)");
        push("auth.token_url", &["connector", "auth", "token_url"], message, "");
    }
    for (name, _) in &http.headers {
        if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("cookie") {
            push(
                "headers",
                &["connector", "headers", name],
                format!("header `{name}` would hold a secret in the manifest"),
                "declare connector.auth (bearer, api_key, basic, oauth2) with the secret in an environment variable",
            );
        }
    }
    if http.body.is_some() && http.method != HttpMethod::Post {
        push("body", &["connector", "body"], "`body` is sent with `method: post` only".into(), "");
    }
    if http.rate_limit.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        let message = "`rate_limit` is a positive number of requests per second".into();
        push("rate_limit", &["connector", "rate_limit"], message, "");
    }
    let json = matches!(m.format(), Format::Json { .. } | Format::Geojson { .. });
    let lines = matches!(m.format(), Format::Ndjson { .. });
    let needs = match &http.pagination {
        Pagination::None | Pagination::LinkHeader => None,
        Pagination::Page { .. } | Pagination::Offset { .. } => (!json && !lines).then_some("json or ndjson"),
        Pagination::Cursor { .. } | Pagination::NextUrl { .. } => (!json).then_some("json"),
    };
    if let Some(needs) = needs {
        push(
            "pagination",
            &["connector", "pagination"],
            format!("this pagination reads the records of each page: `format.kind` must be {needs}"),
            "CSV, Parquet and Excel APIs are read in one request, or page by page with `kind: link_header`",
        );
    }
    if http.cursor.is_some() && !json && !lines {
        let message = "`cursor` reads its field in each record: `format.kind` must be json or ndjson".into();
        push("cursor", &["connector", "cursor"], message, "");
    }
    validate_cursor_mode(http.cursor.is_some(), ("an API asked", "the whole API"), m.load.mode, &mut push);
}

/// Reports a problem of `connector.<field>`, located at `keys` in the file, with a hint when there is one.
fn connector_diagnostics<'a>(
    path: &'a Path,
    text: &'a str,
    diags: &'a mut Diagnostics,
) -> impl FnMut(&str, &[&str], String, &str) + 'a {
    move |field, keys, message, hint| {
        let mut d = Diagnostic::new(path, format!("connector.{field}"), message).at(diag::locate(text, keys));
        if !hint.is_empty() {
            d = d.hint(hint.to_string());
        }
        diags.push(d);
    }
}

/// A source read again from a cursor (or whole, without one) gives again rows already taken: `upsert` merges them
/// by key; `replace` fits a source read whole; `append` would land them twice.
fn validate_cursor_mode(
    cursor: bool,
    (read, whole): (&str, &str),
    mode: LoadMode,
    push: &mut impl FnMut(&str, &[&str], String, &str),
) {
    match (cursor, mode) {
        (true, LoadMode::Upsert) | (false, LoadMode::Upsert | LoadMode::Replace) => {}
        (true, LoadMode::Append) => push(
            "cursor",
            &["connector", "cursor"],
            format!(
                "{read} from a cursor gives again the records at the cursor's value (and those of the \
                 lookback): `load.mode: append` would land them twice"
            ),
            "use `load: {mode: upsert}` with the record's `key: true` columns",
        ),
        (true, LoadMode::Replace) => push(
            "cursor",
            &["connector", "cursor"],
            "with a `cursor` a run reads only what changed since the last one: `load.mode: replace` would keep only that"
                .into(),
            "use `load: {mode: upsert}` with the record's `key: true` columns",
        ),
        (false, _) => push(
            "cursor",
            &["connector"],
            format!("without a `cursor`, every run reads {whole} again: `load.mode: append` would land it each time"),
            "declare connector.cursor (incremental reads, `load.mode: upsert`), or use `load.mode: replace`",
        ),
    }
}

/// `kind: postgres`: the connection string's variable, one of `table` and `query` (a name, or one `SELECT`
/// read as a subquery), no `format`, a cursor with the load mode it needs.
fn validate_postgres(m: &SourceManifest, pg: &PostgresConnector, path: &Path, text: &str, diags: &mut Diagnostics) {
    let mut push = connector_diagnostics(path, text, diags);
    if !is_variable(&pg.url_env) {
        push(
            "url_env",
            &["connector", "url_env"],
            // Not quoted: what was written there may be the connection string, password included.
            "this is not the name of an environment variable (letters, digits and `_`)".into(),
            "name the variable holding the connection string, e.g. `url_env: TRANSIT_PG_URL`; the string itself \
             (with its password) never goes in the manifest",
        );
    }
    match (&pg.table, &pg.query) {
        (Some(_), Some(_)) | (None, None) => {
            push("table", &["connector"], "declare one of `table` (a table or view) and `query` (a SELECT)".into(), "")
        }
        (Some(table), None) => {
            if crate::connector::pg_table_name(table).is_none() {
                push(
                    "table",
                    &["connector", "table"],
                    format!("`{table}` is not a table name: `table` or `schema.table`, letters, digits, `_` and `$`"),
                    "for anything else (quoted names, a join, a filter) use `query`",
                );
            }
        }
        (None, Some(query)) => {
            if let Err(reason) = crate::connector::pg_check_query(query) {
                push("query", &["connector", "query"], reason, "");
            }
        }
    }
    if !(1..=1_000_000).contains(&pg.batch_rows) {
        let message = format!("`batch_rows` is {}: between 1 and 1000000 rows per unit", pg.batch_rows);
        push("batch_rows", &["connector", "batch_rows"], message, "");
    }
    if let Some(c) = &pg.cursor
        && c.column.trim().is_empty()
    {
        push("cursor.column", &["connector", "cursor", "column"], "the cursor's column is empty".into(), "");
    }
    validate_cursor_mode(pg.cursor.is_some(), ("a table read", "the whole table"), m.load.mode, &mut push);
    drop(push);
    if m.format.is_some() {
        diags.push(
            Diagnostic::new(path, "format", "a `postgres` source has no `format`: its rows are read as their types")
                .at(diag::locate(text, &["format"]))
                .hint("remove `format`; the columns' `type` say how each value lands, checked against the table's"),
        );
    }
}

/// Whether `v` can name an environment variable.
fn is_variable(v: &str) -> bool {
    !v.is_empty()
        && !v.starts_with(|c: char| c.is_ascii_digit())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The `*_env` fields of a connector name variables (a value pasted there would be a secret in the manifest).
fn check_variables(fields: &[(&str, Option<&String>)], push: &mut impl FnMut(&str, &[&str], String, &str)) {
    for (field, value) in fields {
        if value.is_some_and(|v| !is_variable(v)) {
            push(
                field,
                &["connector", field],
                // Not quoted: what was written there may be the secret itself.
                "this is not the name of an environment variable (letters, digits and `_`)".into(),
                "name the variable holding the secret or the path, e.g. `password_env: FEED_PASSWORD`; the value itself \
                 never goes in the manifest",
            );
        }
    }
}

/// Whether a URL's host is this machine (`localhost`, 127.0.0.0/8, `::1`).
fn is_loopback(u: &url::Url) -> bool {
    match u.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        // Schemes the URL standard does not know (mqtt, nats) keep their host as text.
        Some(url::Host::Domain(d)) => {
            d == "localhost" || d.trim_matches(['[', ']']).parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        None => false,
    }
}

/// A URL as quoted in a message: without its password, if it holds one (refused anyway).
fn shown_url(u: &url::Url) -> String {
    let mut shown = u.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// A broker URL: `secure` scheme, or `clear` on a loopback address only; no credentials in it.
fn check_broker_url(raw: &str, (secure, clear): (&str, &str), push: &mut impl FnMut(&str, &[&str], String, &str)) {
    let u = match url::Url::parse(raw) {
        Ok(u) => u,
        Err(e) => return push("url", &["connector", "url"], format!("the URL cannot be read: {e}"), ""),
    };
    let shown = shown_url(&u);
    let raw = shown.as_str();
    let loopback = is_loopback(&u);
    if u.scheme() != secure && u.scheme() != clear {
        push("url", &["connector", "url"], format!("`{raw}`: the scheme is `{secure}://` (TLS) or `{clear}://`"), "");
    } else if u.scheme() == clear && !loopback {
        push(
            "url",
            &["connector", "url"],
            format!(
                "`{raw}`: only `{secure}://` (TLS) is used off this machine (`{clear}://` on a loopback address only)"
            ),
            "messages hold personal data and the credentials travel with them: never in clear on a network",
        );
    }
    if u.host().is_none() {
        push("url", &["connector", "url"], format!("`{raw}` names no host"), "");
    }
    if !u.username().is_empty() || u.password().is_some() {
        push(
            "url",
            &["connector", "url"],
            "the URL holds credentials: they belong in the environment".into(),
            "use `username_env` and `password_env`",
        );
    }
}

/// `kind: mqtt`: a TLS broker (or loopback), topic filters MQTT accepts, a message identity, variables for secrets.
fn validate_mqtt(mqtt: &MqttConnector, path: &Path, text: &str, diags: &mut Diagnostics) {
    let mut push = connector_diagnostics(path, text, diags);
    check_broker_url(&mqtt.url, ("mqtts", "mqtt"), &mut push);
    if mqtt.topics.is_empty() {
        push("topics", &["connector", "topics"], "no topic: list at least one topic filter".into(), "");
    }
    for t in &mqtt.topics {
        if let Err(why) = crate::connector::mqtt_check_filter(t) {
            push("topics", &["connector", "topics"], format!("topic filter `{t}`: {why}"), "");
        }
    }
    if mqtt.message_id.trim().is_empty() {
        push(
            "message_id",
            &["connector", "message_id"],
            "`message_id` is empty: name the payload's id field".into(),
            "",
        );
    }
    if let Some(id) = &mqtt.client_id
        && (id.is_empty() || id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
    {
        let message = format!("client id `{id}`: 1 to 128 letters, digits, `-`, `_` or `.`");
        push("client_id", &["connector", "client_id"], message, "");
    }
    check_variables(
        &[
            ("username_env", mqtt.username_env.as_ref()),
            ("password_env", mqtt.password_env.as_ref()),
            ("ca_file_env", mqtt.ca_file_env.as_ref()),
        ],
        &mut push,
    );
    if mqtt.password_env.is_some() && mqtt.username_env.is_none() {
        push("password_env", &["connector", "password_env"], "a password without `username_env`".into(), "");
    }
}

/// `kind: nats`: a TLS server (or loopback), names JetStream accepts, variables for secrets.
fn validate_nats(nats: &NatsConnector, path: &Path, text: &str, diags: &mut Diagnostics) {
    let mut push = connector_diagnostics(path, text, diags);
    check_broker_url(&nats.url, ("tls", "nats"), &mut push);
    let name_ok = |n: &str| !n.is_empty() && !n.chars().any(|c| c.is_whitespace() || "*>./\\".contains(c));
    if !name_ok(&nats.stream) {
        let message = format!("stream `{}`: a JetStream name has no spaces, `.`, `*`, `>`, `/` or `\\`", nats.stream);
        push("stream", &["connector", "stream"], message, "");
    }
    if let Some(c) = nats.consumer.as_deref().filter(|c| !name_ok(c)) {
        let message = format!("consumer `{c}`: a durable name has no spaces, `.`, `*`, `>`, `/` or `\\`");
        push("consumer", &["connector", "consumer"], message, "");
    }
    if let Some(subject) = &nats.subject
        && (subject.is_empty()
            || subject.split('.').any(|t| t.is_empty() || t.chars().any(char::is_whitespace))
            || subject.split('.').rev().skip(1).any(|t| t == ">"))
    {
        let message = format!("subject `{subject}`: tokens separated by `.`, `*` for one token, `>` last only");
        push("subject", &["connector", "subject"], message, "");
    }
    check_variables(
        &[
            ("token_env", nats.token_env.as_ref()),
            ("username_env", nats.username_env.as_ref()),
            ("password_env", nats.password_env.as_ref()),
            ("ca_file_env", nats.ca_file_env.as_ref()),
        ],
        &mut push,
    );
    if nats.password_env.is_some() != nats.username_env.is_some() {
        let message = "`username_env` and `password_env` go together".into();
        push("username_env", &["connector"], message, "");
    }
    if nats.token_env.is_some() && nats.username_env.is_some() {
        let message = "a token or a user name and password, not both".into();
        push("token_env", &["connector", "token_env"], message, "");
    }
}

/// Stream sources: no `format` (messages are JSON objects), `append` (each message lands once), bounded batches.
fn validate_stream(m: &SourceManifest, path: &Path, text: &str, diags: &mut Diagnostics) {
    let Some(batch) = m.stream_batch() else { return };
    let mut push = connector_diagnostics(path, text, diags);
    if !(1..=65_535).contains(&batch.max_records) {
        let message = format!("`max_records` is {}: between 1 and 65535 messages per batch", batch.max_records);
        push("batch.max_records", &["connector", "batch", "max_records"], message, "");
    }
    if !(1024..=1 << 30).contains(&batch.max_bytes) {
        let message = format!("`max_bytes` is {}: between 1024 and 1073741824 bytes per batch", batch.max_bytes);
        push("batch.max_bytes", &["connector", "batch", "max_bytes"], message, "");
    }
    drop(push);
    if m.format.is_some() {
        diags.push(
            Diagnostic::new(path, "format", "a stream source has no `format`: each message is one JSON object")
                .at(diag::locate(text, &["format"]))
                .hint("remove `format`; the columns say which fields of the message land and as what"),
        );
    }
    if m.load.mode != LoadMode::Append {
        diags.push(
            Diagnostic::new(path, "load.mode", "a stream source lands each message once: `load.mode` is `append`")
                .at(diag::locate(text, &["load", "mode"]))
                .hint("remove `load`, or declare `key: true` columns and let a silver model keep the last of each key"),
        );
    }
}

fn validate_format(m: &SourceManifest, path: &Path, text: &str, diags: &mut Diagnostics) {
    if let Format::Xlsx { sheet, header_row } = m.format() {
        if *sheet == Some(Sheet::Index(0)) {
            diags.push(
                Diagnostic::new(path, "format.sheet", "sheets are counted from 1: `sheet: 1` is the first")
                    .at(diag::locate(text, &["format", "sheet"])),
            );
        }
        if *header_row == 0 {
            diags.push(
                Diagnostic::new(path, "format.header_row", "rows are counted from 1, as Excel numbers them")
                    .at(diag::locate(text, &["format", "header_row"])),
            );
        }
    }
    if let Format::Csv { delimiter, quote, decimal, .. } = m.format() {
        for (field, c) in [("delimiter", delimiter), ("quote", quote)] {
            if !c.is_ascii() {
                diags.push(
                    Diagnostic::new(path, format!("format.{field}"), format!("`{c}` is not an ASCII character"))
                        .at(diag::locate(text, &["format", field])),
                );
            }
        }
        for (field, c) in [("delimiter", delimiter), ("quote", quote)] {
            if matches!(c, '\n' | '\r') {
                diags.push(
                    Diagnostic::new(path, format!("format.{field}"), "a line end cannot separate or quote fields")
                        .at(diag::locate(text, &["format", field])),
                );
            }
        }
        if delimiter == quote {
            diags.push(
                Diagnostic::new(path, "format.quote", format!("`{quote}` is both the delimiter and the quote"))
                    .at(diag::locate(text, &["format", "quote"])),
            );
        }
        if *decimal != '.' && *decimal != ',' {
            diags.push(
                Diagnostic::new(
                    path,
                    "format.decimal",
                    format!("decimal separator `{decimal}` is neither `.` nor `,`"),
                )
                .at(diag::locate(text, &["format", "decimal"])),
            );
        }
        if delimiter == decimal {
            diags.push(
                Diagnostic::new(path, "format.decimal", "the decimal separator is also the field delimiter")
                    .at(diag::locate(text, &["format", "decimal"]))
                    .hint("French exports usually pair `decimal: \",\"` with `delimiter: \";\"`"),
            );
        }
    }
}

fn list<'a>(items: impl Iterator<Item = &'a str>) -> String {
    let v: Vec<String> = items.map(|s| format!("`{s}`")).collect();
    if v.is_empty() { "the domains in privacy.domains".into() } else { v.join(", ") }
}

/// The JSON Schema of source manifests, for editors (yaml-language-server) and CI.
pub fn source_json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(SourceManifest);
    serde_json::to_value(schema).unwrap_or_default()
}

/// `approvals.yaml` of a project: the DPO's approvals of change sets (`lakehouse plan`).
pub const APPROVALS_FILE: &str = "approvals.yaml";

/// The DPO's approval of one set of privacy-relevant changes, named by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// The change set's hash as `lakehouse plan` prints it.
    pub change_set: String,
    /// Who approved (the DPO or their delegate).
    pub approver: String,
    /// The approval's reference (a ticket, a deliberation, a register entry).
    pub reference: String,
    #[serde(default)]
    pub date: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ApprovalsFile {
    #[allow(dead_code)]
    version: u32,
    #[serde(default)]
    approvals: Vec<Approval>,
}

/// Reads `approvals.yaml` of the project in `dir` (none when the file does not exist).
pub fn load_approvals(dir: &Path) -> Result<Vec<Approval>, Diagnostics> {
    let path = PathBuf::from(APPROVALS_FILE);
    let text = match std::fs::read_to_string(dir.join(&path)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Diagnostics(vec![Diagnostic::new(&path, "", format!("cannot read: {e}"))])),
    };
    let mut diags = Diagnostics::default();
    let file = parse_versioned::<ApprovalsFile>(&path, &text, &mut diags);
    for (i, a) in file.iter().flat_map(|f| f.approvals.iter()).enumerate() {
        for (field, value) in [("change_set", &a.change_set), ("approver", &a.approver), ("reference", &a.reference)] {
            if value.trim().is_empty() {
                diags.push(
                    Diagnostic::new(&path, format!("approvals.{i}.{field}"), format!("`{field}` is empty"))
                        .at(diag::locate(&text, &["approvals", &i.to_string(), field])),
                );
            }
        }
    }
    match file {
        Some(f) if diags.is_empty() => Ok(f.approvals),
        _ => Err(diags),
    }
}
