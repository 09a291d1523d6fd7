//! `lakehouse feed`: generated messages published to a stream source's broker.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use lakehouse::manifest::{Column, ColumnType, Connector, SourceManifest};
use serde_json::{Map, Value};

use super::{CliError, CmdResult, USER_ERROR};

/// Messages published per window (each window is stored by the broker before the next).
const WINDOW: u64 = 1000;

pub async fn run(dir: &Path, source: &str, count: u64, rate: f64, bad_every: u64) -> CmdResult {
    let project = super::load_project(dir)?;
    let Some(src) = project.sources.iter().find(|s| s.manifest.name.as_str() == source) else {
        eprintln!("error: no source `{source}` in {}", dir.join("sources").display());
        return Ok(ExitCode::from(USER_ERROR));
    };
    let m = &src.manifest;
    if !m.is_stream() {
        eprintln!("error: `{source}` is not a stream source (`kind: mqtt` or `kind: nats`)");
        return Ok(ExitCode::from(USER_ERROR));
    }
    if !(rate >= 0.0 && rate.is_finite()) {
        return Err(CliError::User("--rate is a number of messages per second, 0 for as fast as possible".into()));
    }
    let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let started = Instant::now();
    let step = if rate > 0.0 { (rate / 10.0).ceil().clamp(1.0, WINDOW as f64) as u64 } else { WINDOW };
    let mut sent = 0u64;
    while sent < count {
        let n = step.min(count - sent);
        let payloads: Vec<Vec<u8>> = (sent..sent + n)
            .map(|i| {
                if bad_every > 0 && (i + 1).is_multiple_of(bad_every) {
                    format!("{{\"not json\": {i}").into_bytes()
                } else {
                    serde_json::to_vec(&message(m, run, i)).unwrap_or_default()
                }
            })
            .collect();
        if let Err(e) = lakehouse::connector::publish(m, payloads).await {
            eprintln!("error: {source}: {e} ({sent} messages published before)");
            return Ok(ExitCode::from(USER_ERROR));
        }
        sent += n;
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!("{source}: {sent} messages published in {secs:.2}s ({:.0}/s)", sent as f64 / secs.max(1e-9));
    Ok(ExitCode::SUCCESS)
}

/// Message `i` of run `run`: each declared column (nested by its dotted input name) with a value of its type; the
/// `message_id`, `unique` columns and those named `id` or `…_id` unique to the message.
fn message(m: &SourceManifest, run: &str, i: u64) -> Value {
    let filled_by_connector: Vec<&str> = match &m.connector {
        Connector::Mqtt(c) => c.topic_field.iter().map(String::as_str).collect(),
        Connector::Nats(c) => c.subject_field.iter().chain(&c.sequence_field).map(String::as_str).collect(),
        _ => Vec::new(),
    };
    let id_field = match &m.connector {
        Connector::Mqtt(c) => Some(c.message_id.as_str()),
        _ => None,
    };
    let mut root = Map::new();
    for (name, col) in &m.columns {
        let input = SourceManifest::input_names(name, col).into_iter().next().unwrap_or_else(|| name.to_string());
        if filled_by_connector.contains(&input.as_str()) {
            continue;
        }
        let identifier = name.as_str() == "id" || name.as_str().ends_with("_id");
        let value = if Some(input.as_str()) == id_field || col.unique || identifier {
            match col.ty {
                ColumnType::Int => Value::from(chrono::Utc::now().timestamp_micros().unsigned_abs() * 1000 + i % 1000),
                _ => Value::from(format!("{run}-{i}")),
            }
        } else {
            value(col, i)
        };
        insert_at(&mut root, &input.split('.').collect::<Vec<_>>(), value);
    }
    Value::Object(root)
}

/// Puts `value` at a dotted path, making the objects on the way.
fn insert_at(obj: &mut Map<String, Value>, path: &[&str], value: Value) {
    match path {
        [] => {}
        [leaf] => {
            obj.insert((*leaf).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = obj.entry((*first).to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert_at(inner, rest, value);
            }
        }
    }
}

/// A value of a column's type, within its `values` and `range`, varying with `i`.
fn value(col: &Column, i: u64) -> Value {
    let spread = (i.wrapping_mul(2_654_435_761) % 1000) as f64 / 1000.0;
    let (lo, hi) = col.range.map_or((0.0, 100.0), |[lo, hi]| (lo, hi));
    match col.ty {
        ColumnType::String => match &col.values {
            Some(values) if !values.is_empty() => Value::from(values[(i % values.len() as u64) as usize].clone()),
            _ => Value::from(format!("value {}", i % 97)),
        },
        ColumnType::Int => Value::from((lo + (hi - lo) * spread).round() as i64),
        ColumnType::Double | ColumnType::Decimal => Value::from(((lo + (hi - lo) * spread) * 100.0).round() / 100.0),
        ColumnType::Bool => Value::from(i.is_multiple_of(2)),
        ColumnType::Date => Value::from(chrono::Utc::now().format("%Y-%m-%d").to_string()),
        ColumnType::Timestamp => Value::from(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        ColumnType::Json | ColumnType::Struct => Value::Object(Map::new()),
        ColumnType::List => Value::Array(Vec::new()),
    }
}
