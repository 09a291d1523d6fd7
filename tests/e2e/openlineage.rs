//! OpenLineage events: every run emits START then COMPLETE or FAIL; every event and facet is valid against the
//! official 2-0-2 JSON Schemas (`../shared/openlineage-spec/`, offline).

use std::collections::BTreeMap;
use std::path::Path;

use lakehouse_tests::*;
use serde_json::Value;

fn spec_dir() -> std::path::PathBuf {
    fixtures().join("openlineage-spec")
}

fn load(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))).unwrap()
}

/// Validators with every spec file registered under its `$id` (no network).
fn validator(schema: &Value) -> jsonschema::Validator {
    let mut options = jsonschema::options().should_validate_formats(true);
    let core = load(&spec_dir().join("OpenLineage.json"));
    options = options.with_resource(
        "https://openlineage.io/spec/2-0-2/OpenLineage.json",
        jsonschema::Resource::from_contents(core).unwrap(),
    );
    for f in files_under(&spec_dir().join("facets")) {
        let v = load(&f);
        let id = v["$id"].as_str().unwrap().to_string();
        options = options.with_resource(id, jsonschema::Resource::from_contents(v).unwrap());
    }
    options.build(schema).unwrap()
}

fn events(p: &TestProject) -> Vec<Value> {
    let mut files = files_under(&p.path().join(".lakehouse/openlineage"));
    files.sort();
    files.iter().map(|f| load(f)).collect()
}

fn check_valid(events: &[Value]) {
    let run_event =
        validator(&serde_json::json!({ "$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent" }));
    let facet_files: BTreeMap<&str, &str> = [
        ("schema", "SchemaDatasetFacet"),
        ("dataSource", "DatasourceDatasetFacet"),
        ("version", "DatasetVersionDatasetFacet"),
        ("columnLineage", "ColumnLineageDatasetFacet"),
        ("errorMessage", "ErrorMessageRunFacet"),
    ]
    .into_iter()
    .collect();
    let facet_validators: BTreeMap<&str, jsonschema::Validator> =
        facet_files.iter().map(|(k, f)| (*k, validator(&load(&spec_dir().join(format!("facets/{f}.json")))))).collect();
    for e in events {
        if let Err(err) = run_event.validate(e) {
            panic!("invalid RunEvent: {err}\n{e:#}");
        }
        let mut facets: Vec<(&str, &Value)> = Vec::new();
        for ds in e["inputs"].as_array().unwrap().iter().chain(e["outputs"].as_array().unwrap()) {
            if let Some(map) = ds["facets"].as_object() {
                facets.extend(map.iter().map(|(k, v)| (k.as_str(), v)));
            }
        }
        if let Some(map) = e["run"]["facets"].as_object() {
            facets.extend(map.iter().map(|(k, v)| (k.as_str(), v)));
        }
        for (name, facet) in facets {
            let v = facet_validators.get(name).unwrap_or_else(|| panic!("unexpected facet {name}"));
            // A facet schema validates the facets map.
            let wrapped = serde_json::json!({ name: facet });
            if let Err(err) = v.validate(&wrapped) {
                panic!("invalid {name} facet: {err}\n{facet:#}");
            }
        }
    }
}

#[test]
fn every_run_emits_schema_valid_events() {
    let p = TestProject::example(None);
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let events = events(&p);
    check_valid(&events);
    // START then COMPLETE for each run; one run per source and per model.
    let mut by_run: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for e in &events {
        by_run
            .entry(e["run"]["runId"].as_str().unwrap().to_string())
            .or_default()
            .push(e["eventType"].as_str().unwrap().to_string());
    }
    assert_eq!(by_run.len(), 17, "7 sources + 10 models");
    for (run, kinds) in &by_run {
        assert_eq!(kinds, &["START", "COMPLETE"], "run {run}");
    }
    // The silver incidents: the Delta version written and the column lineage, masked through geo_cell.
    let complete =
        events.iter().find(|e| e["eventType"] == "COMPLETE" && e["job"]["name"] == "silver.ddsp_incidents").unwrap();
    let output = &complete["outputs"][0];
    assert_eq!(output["name"], "silver.ddsp_incidents");
    assert_eq!(output["facets"]["version"]["datasetVersion"], "1");
    let cell = &output["facets"]["columnLineage"]["fields"]["cell_1km"]["inputFields"];
    let fields: Vec<(String, bool)> = cell
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                format!("{}.{}", f["name"].as_str().unwrap(), f["field"].as_str().unwrap()),
                f["transformations"][0]["masking"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        fields,
        [("bronze.ddsp_incidents.lat".to_string(), true), ("bronze.ddsp_incidents.lon".to_string(), true)]
    );
    assert_eq!(complete["inputs"][0]["facets"]["version"]["datasetVersion"], "1");
    // Bronze runs list the partner files they took.
    let bronze =
        events.iter().find(|e| e["eventType"] == "COMPLETE" && e["job"]["name"] == "bronze.ddsp_incidents").unwrap();
    assert_eq!(bronze["inputs"].as_array().unwrap().len(), 3);
}

#[test]
fn a_failed_run_emits_fail_with_its_error() {
    let p = TestProject::example(None);
    assert!(p.run(&["ingest", "ville_events"]).status.success());
    p.write("transforms/silver/ville_events.yaml", "version: 1\ntests:\n  - { check: row_count, min: 100000 }\n");
    let out = p.run(&["transform", "--select", "ville_events"]);
    assert_eq!(out.status.code(), Some(1));
    let events = events(&p);
    check_valid(&events);
    let fail = events.iter().find(|e| e["eventType"] == "FAIL").expect("a FAIL event");
    assert_eq!(fail["job"]["name"], "silver.ville_events");
    let message = fail["run"]["facets"]["errorMessage"]["message"].as_str().unwrap();
    assert!(message.contains("audit failed, nothing committed: row_count(100000..)"), "{message}");
}

/// Events POSTed to an HTTP endpoint (with the API key from the environment as a bearer token); an endpoint
/// that is down only costs a warning.
#[test]
fn events_are_posted_to_an_http_endpoint() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel::<(String, Value)>();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut auth, mut length) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = line.trim().to_string();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let mut stream = stream;
            let _ = stream.write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            let _ = tx.send((auth, serde_json::from_slice(&body).unwrap()));
        }
    });
    let p = TestProject::example(None);
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    let endpoint = format!(
        "openlineage: {{ url: \"http://127.0.0.1:{port}/api/v1/lineage\", api_key_variable: LAKEHOUSE_TEST_OL_KEY }}"
    );
    p.write("lakehouse.yaml", yaml.replace("openlineage: { directory: .lakehouse/openlineage }", &endpoint));
    let out = p.command(&["ingest", "ville_events"]).env("LAKEHOUSE_TEST_OL_KEY", "s3cret-token").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let received: Vec<(String, Value)> =
        (0..2).map(|_| rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap()).collect();
    assert_eq!(received[0].1["eventType"], "START");
    assert_eq!(received[1].1["eventType"], "COMPLETE");
    assert_eq!(received[1].1["job"]["name"], "bronze.ville_events");
    assert!(
        received
            .iter()
            .all(|(auth, _)| auth == "authorization: Bearer s3cret-token"
                || auth == "Authorization: Bearer s3cret-token"),
        "{received:?}"
    );
    check_valid(&received.into_iter().map(|(_, v)| v).collect::<Vec<_>>());
    // Nothing listens there any more: the run still succeeds, with a warning.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write("lakehouse.yaml", yaml.replace(&format!(":{port}/"), &format!(":{closed}/")));
    let out = p.run(&["ingest", "ville_events"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not send an OpenLineage event"), "{}", stderr(&out));
}
