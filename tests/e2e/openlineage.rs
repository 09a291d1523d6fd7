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
    assert_eq!(by_run.len(), 15, "5 sources + 10 models");
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
