//! OpenLineage 2-0-2 run events: every ingest and every model run emits a `START` event and a `COMPLETE` or
//! `FAIL` event, as JSON files in the directory and/or POSTed to the HTTP endpoint set by
//! `openlineage: { directory: …, url: … }` in `lakehouse.yaml`.
//!
//! Datasets are named `layer.name` in the namespace of the warehouse URL; drop-zone files in the namespace of their
//! location. Output datasets carry the `schema`, `dataSource`, `version` (the Delta version written) and, for
//! models, `columnLineage` facets (from [`catalog::lineage`]: identity / transformation / aggregation,
//! masking when a privacy function is on the way, and the indirect uses). Events hold names, types and versions,
//! never values or keys.

use std::path::PathBuf;

use arrow::datatypes::Schema;
use chrono::Utc;
use serde_json::{Value, json};

use catalog::lineage::{EdgeKind, IndirectKind, Lineage};

/// The producer URI of the events.
pub const PRODUCER: &str = concat!("https://github.com/lakehouse-rs/lakehouse/tree/v", env!("CARGO_PKG_VERSION"));
const RUN_EVENT: &str = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent";

/// A secret (the endpoint's API key): its `Debug` shows that it is set, never what it is.
#[derive(Clone, Default)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where events go.
#[derive(Debug, Clone, Default)]
pub struct Emitter {
    directory: Option<PathBuf>,
    endpoint: Option<(url::Url, Option<Secret>)>,
    client: Option<reqwest::Client>,
    /// Namespace of jobs (the deployment's name).
    pub namespace: String,
}

impl Emitter {
    /// Events go to `directory` and/or are POSTed to `url` (with `Authorization: Bearer <api_key>` when given).
    pub fn new(directory: Option<PathBuf>, endpoint: Option<(url::Url, Option<String>)>, namespace: &str) -> Self {
        let client = endpoint
            .as_ref()
            .and_then(|_| reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build().ok());
        let endpoint = endpoint.map(|(url, key)| (url, key.map(Secret)));
        Self { directory, endpoint, client, namespace: namespace.to_string() }
    }

    /// Writes and sends the event. Failures are warnings: lineage never fails a run.
    pub async fn emit(&self, event: &Value) {
        let body = serde_json::to_vec_pretty(event).unwrap_or_default();
        if let Some(dir) = &self.directory {
            let run = event["run"]["runId"].as_str().unwrap_or("run");
            let kind = event["eventType"].as_str().unwrap_or("EVENT");
            let path = dir.join(format!("{}-{run}-{kind}.json", Utc::now().format("%Y%m%dT%H%M%S%.6fZ")));
            let written = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, &body));
            if let Err(e) = written {
                tracing::warn!(path = %path.display(), error = %e, "could not write an OpenLineage event");
            }
        }
        if let (Some((url, key)), Some(client)) = (&self.endpoint, &self.client) {
            let mut request = client.post(url.clone()).header("Content-Type", "application/json").body(body);
            if let Some(key) = key {
                request = request.bearer_auth(&key.0);
            }
            match request.send().await {
                Ok(r) if r.status().is_success() => {}
                Ok(r) => {
                    tracing::warn!(endpoint = %url, status = %r.status(), "the OpenLineage endpoint refused an event")
                }
                Err(e) => tracing::warn!(endpoint = %url, error = %e, "could not send an OpenLineage event"),
            }
        }
    }
}

fn facet(schema_url: &str, body: Value) -> Value {
    let mut v = body;
    v["_producer"] = json!(PRODUCER);
    v["_schemaURL"] = json!(schema_url);
    v
}

/// A run event.
pub fn run_event(
    event_type: &str,
    run_id: &str,
    job: (&str, &str),
    inputs: Vec<Value>,
    outputs: Vec<Value>,
    error: Option<&str>,
) -> Value {
    let mut run = json!({ "runId": run_id });
    if let Some(message) = error {
        run["facets"] = json!({ "errorMessage": facet(
            "https://openlineage.io/spec/facets/1-0-1/ErrorMessageRunFacet.json#/$defs/ErrorMessageRunFacet",
            json!({ "message": message, "programmingLanguage": "Rust" }),
        ) });
    }
    json!({
        "eventTime": Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "producer": PRODUCER,
        "schemaURL": RUN_EVENT,
        "eventType": event_type,
        "run": run,
        "job": { "namespace": job.0, "name": job.1 },
        "inputs": inputs,
        "outputs": outputs,
    })
}

/// A dataset without facets.
pub fn dataset(namespace: &str, name: &str) -> Value {
    json!({ "namespace": namespace, "name": name })
}

/// An output (or input) table of the warehouse at a Delta version, with its schema and column lineage.
pub fn table_dataset(
    namespace: &str,
    name: &str,
    version: Option<u64>,
    schema: Option<&Schema>,
    lineage: Option<&Lineage>,
) -> Value {
    let mut facets = json!({
        "dataSource": facet(
            "https://openlineage.io/spec/facets/1-0-1/DatasourceDatasetFacet.json#/$defs/DatasourceDatasetFacet",
            json!({ "name": namespace, "uri": namespace }),
        ),
    });
    if let Some(v) = version {
        facets["version"] = facet(
            "https://openlineage.io/spec/facets/1-0-1/DatasetVersionDatasetFacet.json#/$defs/DatasetVersionDatasetFacet",
            json!({ "datasetVersion": v.to_string() }),
        );
    }
    if let Some(schema) = schema {
        let fields: Vec<Value> = schema
            .fields()
            .iter()
            .enumerate()
            .map(|(i, f)| json!({ "name": f.name(), "type": f.data_type().to_string(), "ordinal_position": i + 1 }))
            .collect();
        facets["schema"] = facet(
            "https://openlineage.io/spec/facets/1-2-0/SchemaDatasetFacet.json#/$defs/SchemaDatasetFacet",
            json!({ "fields": fields }),
        );
    }
    if let Some(lineage) = lineage {
        facets["columnLineage"] = column_lineage(namespace, lineage);
    }
    json!({ "namespace": namespace, "name": name, "facets": facets })
}

fn column_lineage(namespace: &str, lineage: &Lineage) -> Value {
    let mut fields = serde_json::Map::new();
    for (column, sources) in &lineage.columns {
        let inputs: Vec<Value> = sources
            .iter()
            .filter(|s| s.column != "*")
            .map(|s| {
                let subtype = match s.kind {
                    EdgeKind::Identity => "IDENTITY",
                    EdgeKind::Transformation => "TRANSFORMATION",
                    EdgeKind::Aggregation => "AGGREGATION",
                };
                json!({
                    "namespace": namespace,
                    "name": s.table,
                    "field": s.column,
                    "transformations": [{ "type": "DIRECT", "subtype": subtype, "masking": s.masked }],
                })
            })
            .collect();
        fields.insert(column.clone(), json!({ "inputFields": inputs }));
    }
    let dataset: Vec<Value> = lineage
        .indirect
        .iter()
        .map(|(kind, table, column)| {
            let subtype = match kind {
                IndirectKind::Filter => "FILTER",
                IndirectKind::Join => "JOIN",
                IndirectKind::GroupBy => "GROUP_BY",
                IndirectKind::Window => "WINDOW",
                IndirectKind::Sort => "SORT",
            };
            json!({
                "namespace": namespace,
                "name": table,
                "field": column,
                "transformations": [{ "type": "INDIRECT", "subtype": subtype, "masking": false }],
            })
        })
        .collect();
    facet(
        "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json#/$defs/ColumnLineageDatasetFacet",
        json!({ "fields": fields, "dataset": dataset }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_api_key() {
        let url = url::Url::parse("http://127.0.0.1:5000/api/v1/lineage").unwrap();
        let e = Emitter::new(None, Some((url, Some("canary-bearer-4f1c".into()))), "ns");
        let shown = format!("{e:?}");
        assert!(!shown.contains("canary-bearer-4f1c") && shown.contains("<redacted>"), "{shown}");
    }
}
