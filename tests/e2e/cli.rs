//! The `lakehouse` binary: output and exit codes (0 ok, 1 user error, 2 internal error).

use lakehouse_tests::*;

#[test]
fn validate_lists_the_sources_of_a_valid_project() {
    let p = TestProject::example(None);
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("ok, 7 sources"), "{s}");
    for name in [
        "ddsp_incidents",
        "bmpm_interventions",
        "meteo_observations",
        "rtm_incidents",
        "ville_events",
        "ville_secteurs",
        "ville_signalements",
    ] {
        assert!(s.contains(name), "{name} missing in {s}");
    }
}

#[test]
fn validate_prints_every_problem_with_file_line_and_column() {
    let p = TestProject::empty();
    std::fs::copy(fixtures().join("project/lakehouse.yaml"), p.path().join("lakehouse.yaml")).unwrap();
    for name in ["unknown_connector_kind", "unknown_partner"] {
        p.write(
            &format!("sources/{name}.yaml"),
            std::fs::read(fixtures().join(format!("manifests/invalid/{name}.yaml"))).unwrap(),
        );
    }
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(e.contains("sources/unknown_connector_kind.yaml:7:"), "{e}");
    assert!(e.contains("connector.kind: unknown variant `file`"), "{e}");
    assert!(e.contains("sources/unknown_partner.yaml:4:1: owner: unknown partner `dsdp`"), "{e}");
    assert!(e.contains("did you mean `ddsp`?"), "{e}");
    assert!(e.trim_end().ends_with("2 problems found"), "{e}");
}

#[test]
fn a_directory_without_a_project_file_is_a_user_error() {
    let p = TestProject::empty();
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no lakehouse.yaml in"), "{}", stderr(&out));
}

#[test]
fn ingest_prints_a_summary_and_where_the_tables_are() {
    let p = TestProject::example(None);
    let out = p.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    let line = s.lines().find(|l| l.starts_with("ddsp_incidents")).unwrap_or_else(|| panic!("{s}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    // source batch files read written quarantined superseded version time
    assert_eq!(&cols[1..8], ["1", "3", "1500", "1485", "15", "0", "1"], "{line}");
    assert!(s.contains(&format!("tables: file://{}/warehouse/bronze/", p.path().display())), "{s}");
    let again = p.run(&["ingest", "ddsp_incidents"]);
    let line = stdout(&again).lines().find(|l| l.starts_with("ddsp_incidents")).unwrap().to_string();
    assert_eq!(line.split_whitespace().nth(1), Some("-"), "{line}");
}

#[test]
fn ingest_of_an_unknown_source_suggests_a_name() {
    let p = TestProject::example(None);
    let out = p.run(&["ingest", "ddsp_incident"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no source named `ddsp_incident`"), "{}", stderr(&out));
    assert!(stderr(&out).contains("did you mean `ddsp_incidents`?"), "{}", stderr(&out));
}

#[test]
fn a_file_not_taken_makes_the_run_exit_1_and_says_why() {
    let p = TestProject::example(None);
    p.write("sources/data/ddsp/incidents_broken.csv.gz", b"\x1f\x8b\x08\x00garbage");
    let out = p.run(&["ingest", "ddsp_incidents"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("NOT TAKEN incidents_broken.csv.gz"), "{s}");
    assert!(s.contains("the next run tries it again"), "{s}");
}

#[test]
fn schema_prints_the_manifest_json_schema() {
    let out = TestProject::empty().run(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "SourceManifest");
    assert!(v["required"].as_array().unwrap().iter().any(|r| r == "columns"));
}

#[test]
fn quarantine_lists_reasons_and_decrypts_raw_records_on_request() {
    let p = TestProject::example(None);
    assert!(p.run(&["ingest", "ddsp_incidents"]).status.success());
    let out = p.run(&["quarantine", "ddsp_incidents"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    assert!(s.contains("15 quarantined records in bronze.ddsp_incidents__quarantine"), "{s}");
    assert!(s.contains("category") && s.contains("not one of the 8 allowed values"), "{s}");
    let header = s.lines().next().unwrap_or_default();
    assert!(header.starts_with("file") && !header.contains("raw") && !s.contains("cambriolage"), "{s}");
    // With --raw: a `raw` column, the record decrypted from the quarantine and shown in the file's encoding
    // (Windows-1252).
    let out = p.run(&["quarantine", "ddsp_incidents", "--raw"]);
    let s = stdout(&out);
    assert!(s.lines().next().unwrap_or_default().trim_end().ends_with("raw"), "{s}");
    let out = p.run(&["quarantine", "ddsp_incidents", "--raw", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 15);
    let raws: Vec<&str> = rows.iter().map(|r| r["raw"].as_str().unwrap_or_else(|| panic!("{r}"))).collect();
    assert!(raws.iter().any(|r| r.contains(";cambriolage;")), "{raws:?}");
    assert!(raws.iter().any(|r| r.contains('é')) && !raws.iter().any(|r| r.contains('\u{FFFD}')), "{raws:?}");
    assert!(rows.iter().all(|r| r["file"].is_string() && r["record"].is_u64() && r["reason"].is_string()));
}

#[test]
fn listings_print_as_a_table_as_csv_and_as_json() {
    let p = TestProject::example(None);
    assert!(p.run(&["ingest", "ddsp_incidents"]).status.success());
    // Table: aligned columns under a header, `-` for an empty value (a table not built yet, a model's owner).
    let out = p.run(&["tables"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let s = stdout(&out);
    let header: Vec<&str> = s.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["table", "version", "owner", "description", "location"], "{s}");
    let cols = |t: &str| -> Vec<String> {
        let line = s.lines().find(|l| l.starts_with(&format!("{t} "))).unwrap_or_else(|| panic!("{t} in {s}"));
        line.split_whitespace().map(String::from).collect()
    };
    let bronze = cols("bronze.ddsp_incidents");
    assert!(bronze[1].parse::<u64>().is_ok() && bronze[2] == "ddsp", "{s}");
    assert_eq!(cols("silver.ddsp_incidents")[1..3], ["-".to_string(), "-".to_string()], "{s}");
    // CSV: a header line and one line per table, the same tables.
    let out = p.run(&["tables", "--format", "csv"]);
    let csv = stdout(&out);
    assert!(csv.starts_with("table,version,owner,description,location\n"), "{csv}");
    assert_eq!(csv.lines().count(), s.lines().count(), "{csv}\n{s}");
    // JSON: typed values, null when empty.
    let out = p.run(&["tables", "--format", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let bronze = rows.iter().find(|r| r["table"] == "bronze.ddsp_incidents").unwrap();
    assert!(bronze["version"].is_u64(), "{bronze}");
    assert!(rows.iter().any(|r| r["table"] == "silver.ddsp_incidents" && r["version"].is_null()));
    let out = p.run(&["runs", "--format", "json"]);
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(
        (runs[0]["target"].as_str(), runs[0]["status"].as_str()),
        (Some("bronze.ddsp_incidents"), Some("succeeded"))
    );
    assert!(runs[0]["rows"].as_u64().is_some_and(|n| n > 0), "{runs:?}");
    let out = p.run(&["status", "--format", "csv"]);
    let status = stdout(&out);
    assert!(status.starts_with("table,schedule,last_success,state,next_run,last_error\n"), "{status}");
    assert!(status.lines().any(|l| l.starts_with("silver.ddsp_incidents,on new data,,never run,")), "{status}");
    // describe: the manifest's types; JSON gives the whole description, CSV its columns.
    let out = p.run(&["describe", "bronze.ddsp_incidents"]);
    let d = stdout(&out);
    let arrondissement = d.lines().find(|l| l.starts_with("arrondissement ")).unwrap_or_else(|| panic!("{d}"));
    assert_eq!(arrondissement.split_whitespace().nth(1), Some("int"), "{d}");
    let out = p.run(&["describe", "bronze.ddsp_incidents", "--format", "json"]);
    let d: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d["owner"], "ddsp");
    let columns = d["columns"].as_array().unwrap();
    assert!(columns.iter().any(|c| c["column"] == "reporter_phone" && c["type"] == "string"), "{d}");
    assert!(columns.iter().any(|c| c["column"] == "_ingested_at" && c["about"] == "ingestion metadata"), "{d}");
    let out = p.run(&["describe", "bronze.ddsp_incidents", "--format", "csv"]);
    assert!(stdout(&out).starts_with("column,type,about\n"), "{}", stdout(&out));
    // A listing with no row: the header alone, an empty CSV body, an empty JSON array.
    let out = p.run(&["runs", "--failed", "--format", "json"]);
    assert_eq!(stdout(&out).trim(), "[]");
    let out = p.run(&["runs", "--failed"]);
    assert_eq!(stdout(&out).lines().count(), 1, "{}", stdout(&out));
}

#[test]
fn a_manifest_whose_columns_no_longer_match_the_table_is_refused() {
    let p = TestProject::example(None);
    assert!(p.run(&["ingest", "ville_events"]).status.success());
    let path = p.path().join("sources/ville_events.yaml");
    let m = std::fs::read_to_string(&path)
        .unwrap()
        .replace("  free_entry:          { type: bool }", "  free_entry:          { type: string }");
    std::fs::write(&path, m).unwrap();
    let out = p.run(&["ingest", "ville_events"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("bronze/ville_events/ has columns")
            && e.contains("free_entry boolean")
            && e.contains("free_entry string"),
        "{e}"
    );
}

/// `lakehouse bench` runs end to end on its generated project (drop zone declared, files settled, a silver model
/// valid under the privacy check); its figures are for benchmarks, not asserted here.
#[test]
fn bench_commands_run() {
    for (kind, says) in
        [("ingest", "ingested 3000 rows (3000 written, 0 quarantined)"), ("transform", "transformed 3000 rows")]
    {
        let out = std::process::Command::new(lakehouse_bin()).args(["bench", kind, "--rows", "3000"]).output().unwrap();
        assert!(out.status.success(), "bench {kind}: {}", stderr(&out));
        assert!(stdout(&out).contains(says), "bench {kind}: {}", stdout(&out));
    }
    // The pull connectors check themselves that bronze holds every record (3 pages of the API; the table in the
    // tests' PostgreSQL).
    let out = std::process::Command::new(lakehouse_bin())
        .args(["bench", "pull", "--rows", "2500", "--pg-url-env", "LAKEHOUSE_TEST_PG_URL"])
        .env(
            "LAKEHOUSE_TEST_PG_URL",
            std::env::var("LAKEHOUSE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into()),
        )
        .output()
        .unwrap();
    assert!(out.status.success(), "bench pull: {}", stderr(&out));
    let text = stdout(&out);
    let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let sources: Vec<&str> = json["runs"].as_array().unwrap().iter().map(|r| r["source"].as_str().unwrap()).collect();
    assert_eq!((json["rows"].as_u64(), sources), (Some(2500), vec!["http", "postgres"]), "{text}");
    // The job checks itself that silver holds every generated row (none quarantined) and gold has cells.
    for landing in [&[][..], &["--pseudonymize-at-landing"][..]] {
        let out = std::process::Command::new(lakehouse_bin())
            .args(["bench", "job", "--rows", "3000", "--files", "2"])
            .args(landing)
            .output()
            .unwrap();
        assert!(out.status.success(), "bench job {landing:?}: {}", stderr(&out));
        let text = stdout(&out);
        let json: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(json["rows"], 3000, "{text}");
        assert_eq!(json["pseudonymize_at_landing"], !landing.is_empty(), "{text}");
        let steps: Vec<&str> = json["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap()).collect();
        assert_eq!(steps, ["ingest", "silver", "gold", "query"], "{text}");
        for s in json["steps"].as_array().unwrap() {
            // Each step's process reported its own usage: a few MiB at least, CPU time counted.
            assert!(s["peak_rss_mib"].as_u64().unwrap() > 4, "{s}");
            assert!(s["cpu_secs"].as_f64().unwrap() >= 0.0 && s["wall_secs"].as_f64().unwrap() > 0.0, "{s}");
        }
    }
}
