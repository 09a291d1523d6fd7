//! The minijinja environment of transform models.
//!
//! Templates are loaded from `transforms/` with undefined values as errors (`UndefinedBehavior::Strict`).
//! Each macro file `transforms/macros/<file>.sql` is imported into every model as `<file>`, on the model's
//! first line so line numbers stay those of the file (`{{ geo.cell('lat', 'lon') }}`).
//!
//! Functions, the same in both phases except where noted:
//! - `source('name')` → `bronze.name` (a source manifest's table);
//! - `ref('silver.x')` or `ref('x')` → `silver.x` (another model);
//! - both take `incremental=false`: an incremental run then reads that input whole (a lookup or dimension
//!   table joined to the new rows) instead of only its new data;
//! - `this` → the model's own table (`silver.x`);
//! - `config(materialized='table'|'incremental', unique_key='col' or [...], partition_by='col' or [...])`;
//! - `is_incremental()` → true only in the run phase of an incremental run;
//! - `var('name' [, default])` → from `--var name=value`, else `lakehouse.yaml` `vars:`, else the default, as a
//!   **SQL literal**: a string is quoted with its quotes doubled (`L'Estaque` → `'L''Estaque'`), a number stays a
//!   number, a boolean is `TRUE`/`FALSE`, null is `NULL`. So `WHERE station = {{ var('station') }}` cannot be
//!   turned into other SQL by a value. A `--var` takes the type of the project value or default (a number
//!   default needs a number). `var('name', raw=true)` gives the value itself, for `{% if %}` logic or, as an
//!   explicit opt-in reviewed with the model, a trusted SQL fragment.
//!
//! The plan phase renders with `is_incremental()` false and records every `source`/`ref` call: that is the DAG.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::value::Kwargs;
use minijinja::{Environment, Error, ErrorKind, UndefinedBehavior, Value};

use crate::manifest::{Diagnostic, diag};

/// How a model is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Materialized {
    /// Rebuilt in full, committed as one new version.
    #[default]
    Table,
    /// Only the input data committed since the last run is processed, then appended or merged on `unique_key`.
    Incremental,
}

/// What `config(...)` set.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ModelConfig {
    pub materialized: Materialized,
    pub unique_key: Vec<String>,
    pub partition_by: Vec<String>,
}

/// A rendered model.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub sql: String,
    /// Tables read, as `layer.name`.
    pub inputs: BTreeSet<String>,
    /// Inputs an incremental run reads whole (`ref('x', incremental=false)`: lookups, dimensions); the others
    /// it reads restricted to the data added since the last run.
    pub whole_inputs: BTreeSet<String>,
    pub config: ModelConfig,
}

/// What templates can refer to.
#[derive(Debug, Clone)]
pub struct Names {
    /// Source names (bronze tables).
    pub sources: BTreeSet<String>,
    /// Model targets (`silver.x`).
    pub models: BTreeSet<String>,
    /// `vars:` of `lakehouse.yaml`.
    pub vars: BTreeMap<String, serde_json::Value>,
    /// `--var name=value`, as given: typed like the project value or default when `var()` reads it.
    pub overrides: BTreeMap<String, String>,
}

#[derive(Default)]
struct Recorder {
    inputs: BTreeSet<String>,
    whole_inputs: BTreeSet<String>,
    config: Option<ModelConfig>,
}

/// Renders templates of one project.
pub struct Renderer {
    dir: PathBuf,
    /// Project-relative path of `transforms/`, for messages.
    shown_dir: PathBuf,
    macros: Vec<String>,
    names: Arc<Names>,
}

const FUNCTIONS: [&str; 6] = ["config", "is_incremental", "ref", "source", "this", "var"];

impl Renderer {
    /// `dir` is the absolute `transforms/` directory, `shown_dir` its path relative to the project.
    pub fn new(dir: &Path, shown_dir: &Path, names: Names) -> Self {
        let mut macros: Vec<String> = std::fs::read_dir(dir.join("macros"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == "sql"))
                    .filter_map(|p| p.file_stem().and_then(|s| s.to_str()).map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        macros.sort();
        Self { dir: dir.to_path_buf(), shown_dir: shown_dir.to_path_buf(), macros, names: Arc::new(names) }
    }

    /// Renders `template` (`silver/x.sql`) for `target` (`silver.x`).
    pub fn render(&self, template: &str, target: &str, incremental: bool) -> Result<Rendered, Diagnostic> {
        let recorder = Arc::new(Mutex::new(Recorder::default()));
        let env = self.environment(target, incremental, &recorder);
        let result = env.get_template(template).and_then(|t| t.render(()));
        match result {
            Ok(sql) => {
                let r = std::mem::take(&mut *recorder.lock().unwrap_or_else(|e| e.into_inner()));
                Ok(Rendered {
                    sql: sql.trim().to_string(),
                    inputs: r.inputs,
                    whole_inputs: r.whole_inputs,
                    config: r.config.unwrap_or_default(),
                })
            }
            Err(e) => Err(self.diagnostic(&env, template, &e)),
        }
    }

    fn environment(&self, target: &str, incremental: bool, recorder: &Arc<Mutex<Recorder>>) -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        let dir = self.dir.clone();
        let imports: String = self.macros.iter().map(|m| format!("{{% import \"macros/{m}.sql\" as {m} %}}")).collect();
        env.set_loader(move |name: &str| {
            if name.starts_with('/') || name.split('/').any(|c| c.is_empty() || c.starts_with('.')) {
                return Ok(None);
            }
            match std::fs::read_to_string(dir.join(name)) {
                Ok(text) if name.starts_with("macros/") => Ok(Some(text)),
                Ok(text) => Ok(Some(format!("{imports}{text}"))),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(Error::new(ErrorKind::InvalidOperation, "could not read template").with_source(e)),
            }
        });
        env.add_global("this", Value::from(target.to_string()));

        let names = self.names.clone();
        let rec = recorder.clone();
        env.add_function("source", move |name: String, kwargs: Kwargs| -> Result<String, Error> {
            if !names.sources.contains(&name) {
                return Err(unknown("source", &name, names.sources.iter().map(String::as_str)));
            }
            let table = format!("bronze.{name}");
            record_input(&rec, &table, &kwargs, "source", &name)?;
            Ok(table)
        });

        let names = self.names.clone();
        let rec = recorder.clone();
        let me = target.to_string();
        env.add_function("ref", move |name: String, kwargs: Kwargs| -> Result<String, Error> {
            let table = resolve_ref(&names, &name, &me)?;
            record_input(&rec, &table, &kwargs, "ref", &name)?;
            Ok(table)
        });

        let rec = recorder.clone();
        env.add_function("config", move |kwargs: Kwargs| -> Result<String, Error> {
            let config = parse_config(&kwargs)?;
            let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
            if r.config.is_some() {
                return Err(Error::new(ErrorKind::InvalidOperation, "config() is called twice"));
            }
            r.config = Some(config);
            Ok(String::new())
        });

        env.add_function("is_incremental", move || incremental);

        let names = self.names.clone();
        env.add_function("var", move |name: String, default: Option<Value>, kwargs: Kwargs| -> Result<Value, Error> {
            let raw: bool = kwargs.get::<Option<bool>>("raw")?.unwrap_or(false);
            kwargs.assert_all_used()?;
            let declared = names.vars.get(&name).map(Value::from_serialize);
            let value = match (names.overrides.get(&name), declared, default) {
                (Some(given), declared, default) => typed_override(&name, given, declared.or(default).as_ref())?,
                (None, Some(v), _) => v,
                (None, None, Some(d)) => d,
                (None, None, None) => {
                    let known = names.vars.keys().chain(names.overrides.keys()).map(String::as_str);
                    return Err(unknown("var", &name, known));
                }
            };
            if raw { Ok(value) } else { sql_literal(&name, &value) }
        });
        env
    }

    fn diagnostic(&self, env: &Environment<'_>, template: &str, e: &Error) -> Diagnostic {
        // Errors raised inside an imported macro name the macro file.
        let name = e.name().unwrap_or(template);
        let file = self.shown_dir.join(name);
        let mut message = match (e.kind(), e.detail()) {
            // Our own functions' messages stand on their own.
            (ErrorKind::InvalidOperation, Some(detail)) => detail.to_string(),
            (kind, Some(detail)) => format!("{kind}: {detail}"),
            (kind, None) => kind.to_string(),
        };
        let mut hint = None;
        if e.kind() == ErrorKind::UnknownMethod {
            hint = Some(format!("macros are called as <file>.<macro>(…); macro files: {}", join(&self.macros)));
        }
        if matches!(e.kind(), ErrorKind::UndefinedError | ErrorKind::UnknownFunction) {
            let mut known: BTreeSet<String> = FUNCTIONS.iter().map(|s| s.to_string()).collect();
            known.extend(self.macros.iter().cloned());
            let undeclared: BTreeSet<String> =
                env.get_template(name).map(|t| t.undeclared_variables(false).into_iter().collect()).unwrap_or_default();
            let missing: Vec<&String> =
                undeclared.iter().filter(|v| !known.contains(*v) && !BUILTINS.contains(&v.as_str())).collect();
            if let Some(first) = missing.first() {
                message = if e.kind() == ErrorKind::UnknownFunction {
                    format!("unknown function `{first}`")
                } else {
                    format!("undefined name `{first}`")
                };
                if let Some(m) = diag::did_you_mean(first, known.iter().map(String::as_str)) {
                    hint = Some(format!("did you mean `{m}`? defined names: {}", join(&known)));
                } else {
                    hint = Some(format!("defined names: {}", join(&known)));
                }
            } else {
                message = "undefined value (an attribute or macro that does not exist)".into();
                hint = Some(format!("macro files are imported as: {}", join(&self.macros)));
            }
        }
        let mut d = Diagnostic::new(file, "", message);
        d.line = e.line().unwrap_or(0);
        if let Some(h) = hint {
            d = d.hint(h);
        }
        d
    }
}

/// The model a `ref('name')` names: `layer.name`, or a bare name when one model has it. Not a bronze table
/// (that is `source`), not the model itself (that is `this`).
fn resolve_ref(names: &Names, name: &str, me: &str) -> Result<String, Error> {
    let invalid = |message: String| Error::new(ErrorKind::InvalidOperation, message);
    let resolved = if name.contains('.') {
        names.models.contains(name).then(|| name.to_string())
    } else {
        let mut found = names.models.iter().filter(|m| m.split_once('.').is_some_and(|(_, n)| n == name));
        match (found.next(), found.next()) {
            (Some(m), None) => Some(m.clone()),
            (Some(a), Some(b)) => {
                return Err(invalid(format!("ref('{name}') is ambiguous: write ref('{a}') or ref('{b}')")));
            }
            _ => None,
        }
    };
    let Some(table) = resolved else {
        if let Some(source) = name.strip_prefix("bronze.") {
            return Err(invalid(format!("ref('{name}') names a bronze table: use source('{source}')")));
        }
        return Err(unknown("ref", name, names.models.iter().map(String::as_str)));
    };
    if table == me {
        return Err(invalid(format!("ref('{name}') is the model itself: use `this` to read its current table")));
    }
    Ok(table)
}

/// The arguments of `config(materialized=…, unique_key=…, partition_by=…)`.
fn parse_config(kwargs: &Kwargs) -> Result<ModelConfig, Error> {
    let mut config = ModelConfig::default();
    if let Some(m) = kwargs.get::<Option<String>>("materialized")? {
        config.materialized = match m.as_str() {
            "table" => Materialized::Table,
            "incremental" => Materialized::Incremental,
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("config(materialized='{other}'): use 'table' or 'incremental'"),
                ));
            }
        };
    }
    config.unique_key = string_or_list(kwargs, "unique_key")?;
    config.partition_by = string_or_list(kwargs, "partition_by")?;
    kwargs.assert_all_used().map_err(|e| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "config(): {}; known arguments: materialized, unique_key, partition_by",
                e.detail().unwrap_or("unknown argument")
            ),
        )
    })?;
    Ok(config)
}

/// Records an input and whether an incremental run reads it whole (`incremental=false`).
/// A `--var` value with the type of the value it replaces (string when there is none to follow and it does not
/// read as a number or boolean).
fn typed_override(name: &str, given: &str, like: Option<&Value>) -> Result<Value, Error> {
    use minijinja::value::ValueKind;
    let invalid = |what: &str| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("--var {name}: `{given}` is not {what}, as var('{name}') expects"),
        )
    };
    match like.map(Value::kind) {
        Some(ValueKind::Number) => {
            let t = given.trim();
            t.parse::<i64>()
                .map(Value::from)
                .or_else(|_| t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from).ok_or(()))
                .map_err(|()| invalid("a number"))
        }
        Some(ValueKind::Bool) => match given.trim() {
            "true" => Ok(Value::from(true)),
            "false" => Ok(Value::from(false)),
            _ => Err(invalid("`true` or `false`")),
        },
        Some(_) => Ok(Value::from(given)),
        None => Ok(match serde_json::from_str::<serde_json::Value>(given) {
            Ok(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => Value::from_serialize(v),
            _ => Value::from(given),
        }),
    }
}

/// The SQL literal of a value (see the module docs).
fn sql_literal(name: &str, value: &Value) -> Result<Value, Error> {
    use minijinja::value::ValueKind;
    Ok(match value.kind() {
        ValueKind::String => {
            Value::from_safe_string(format!("'{}'", value.as_str().unwrap_or_default().replace('\'', "''")))
        }
        ValueKind::Number => value.clone(),
        ValueKind::Bool => Value::from_safe_string(if value.is_true() { "TRUE" } else { "FALSE" }.into()),
        ValueKind::None | ValueKind::Undefined => Value::from_safe_string("NULL".into()),
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!(
                    "var('{name}') is a {other}, which has no SQL literal; use var('{name}', raw=true) in template logic"
                ),
            ));
        }
    })
}

fn record_input(rec: &Mutex<Recorder>, table: &str, kwargs: &Kwargs, function: &str, name: &str) -> Result<(), Error> {
    let whole = !kwargs.get::<Option<bool>>("incremental")?.unwrap_or(true);
    kwargs.assert_all_used().map_err(|_| {
        Error::new(
            ErrorKind::InvalidOperation,
            format!("{function}('{name}', …): the only keyword argument is `incremental=false`"),
        )
    })?;
    let mut r = rec.lock().unwrap_or_else(|e| e.into_inner());
    let first = r.inputs.insert(table.to_string());
    if !first && r.whole_inputs.contains(table) != whole {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("{table} is read both with and without incremental=false; choose one"),
        ));
    }
    if whole {
        r.whole_inputs.insert(table.to_string());
    }
    Ok(())
}

/// Globals and functions minijinja itself defines.
const BUILTINS: [&str; 6] = ["range", "dict", "namespace", "loop", "debug", "self"];

fn join<'a>(items: impl IntoIterator<Item = &'a String>) -> String {
    items.into_iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
}

fn unknown<'a>(function: &str, name: &str, known: impl Iterator<Item = &'a str> + Clone) -> Error {
    let what = match function {
        "source" => "source",
        "ref" => "model",
        _ => "variable",
    };
    let mut message = format!("{function}('{name}'): no {what} named `{name}`");
    match diag::did_you_mean(name, known.clone()) {
        Some(m) => message.push_str(&format!("; did you mean `{m}`?")),
        None => {
            let all: Vec<&str> = known.collect();
            if !all.is_empty() {
                message.push_str(&format!("; known: {}", all.join(", ")));
            } else if function != "var" {
                message.push_str(&format!("; there is no {what} at all"));
            }
        }
    }
    if function == "var" {
        message.push_str(&format!(
            "; define it under `vars:` in lakehouse.yaml, pass `--var {name}=…`, or give a default: var('{name}', …)"
        ));
    }
    Error::new(ErrorKind::InvalidOperation, message)
}

fn string_or_list(kwargs: &Kwargs, key: &str) -> Result<Vec<String>, Error> {
    let Some(v) = kwargs.get::<Option<Value>>(key)? else { return Ok(Vec::new()) };
    if let Some(s) = v.as_str() {
        return Ok(vec![s.to_string()]);
    }
    let mut out = Vec::new();
    for item in v.try_iter().map_err(|_| bad_list(key))? {
        out.push(item.as_str().ok_or_else(|| bad_list(key))?.to_string());
    }
    Ok(out)
}

fn bad_list(key: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, format!("config({key}=…) takes a column name or a list of column names"))
}
