//! Transforms: the example pipeline end to end, incremental = full rebuild, write-audit-publish, small-cell
//! suppression, privacy functions, template and DAG errors (snapshot per fixture).

use lakehouse_tests::*;

/// Gold tables of the example and their count column.
const GOLD: [(&str, &str); 5] = [
    ("accident_hotspots", "accidents"),
    ("fire_response_times", "interventions"),
    ("incidents_by_arrondissement_period", "incidents"),
    ("incidents_weather_daily", "incidents"),
    ("night_noise_near_events", "reports"),
];

/// The example after two `run`s, the second with one new police incident (an accident): every table has an
/// older version to travel to.
fn example_run_twice() -> TestProject {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let body = "DDSP-2026-990001;22/11/2026 23:10;accident;43,29;5,38;1;A B;06;\n";
    p.write("sources/data/ddsp/incidents_2026-11-22.csv", format!("{POLICE_HEADER}{body}"));
    run_ok(&p, &["run"]);
    p
}

/// The model's line in a transform summary.
fn summary_line<'a>(out: &'a str, target: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(&format!("{target} "))).unwrap_or_else(|| panic!("{target} not in\n{out}"))
}

fn version_of(p: &TestProject, layer: &str, table: &str) -> u64 {
    let lh = p.load();
    let url = lh.warehouse.table_url(layer, table);
    let rt = tokio::runtime::Handle::try_current();
    assert!(rt.is_err(), "call from a sync test");
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { lh.warehouse.open(&url).await.unwrap().unwrap().version().unwrap() })
}

#[test]
fn example_pipeline_builds_bronze_silver_and_gold() {
    let p = TestProject::example(None);
    let out = run_ok(&p, &["run"]);
    for (table, _) in GOLD {
        assert!(summary_line(&out, &format!("gold.{table}")).contains(" full "), "{out}");
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lh = p.load();
    rt.block_on(async {
        let silver = query_lake(&lh, "SELECT count(*), count(DISTINCT incident_id) FROM silver.ddsp_incidents").await;
        assert_eq!(silver, rows(&[&["1485", "1485"]]));
        let bmpm = query_lake(&lh, "SELECT count(*) FROM silver.bmpm_interventions").await;
        assert_eq!(bmpm, rows(&[&["794"]]));
        // Every silver model exists with the rows of its source.
        for (t, n) in [("meteo_observations", "960"), ("ville_events", "59"), ("ville_signalements", "396")] {
            assert_eq!(query_lake(&lh, &format!("SELECT count(*) FROM silver.{t}")).await, rows(&[&[n]]), "{t}");
        }
    });
    // Sidecar column descriptions are Delta column comments.
    let table = rt.block_on(async {
        lh.warehouse.open(&lh.warehouse.table_url("silver", "ddsp_incidents")).await.unwrap().unwrap()
    });
    let schema = table.snapshot().unwrap().schema();
    let field = schema.fields().find(|f| f.name() == "cell_1km").unwrap();
    let comment = field.metadata().get("comment").map(|v| format!("{v:?}"));
    assert!(comment.is_some_and(|c| c.contains("INSEE 1 km grid cell")), "{field:?}");
    // A second run has nothing to do: same input versions, same SQL.
    let again = run_ok(&p, &["run"]);
    for (table, _) in GOLD {
        assert!(summary_line(&again, &format!("gold.{table}")).contains("up to date"), "{again}");
    }
    assert_eq!(version_of(&p, "gold", "incidents_by_arrondissement_period"), 1);
}

/// Small cells: no published cell counts fewer than `privacy.min_group_size` (11 by default), suppressed cells
/// have null counts and measures, and the published counts equal an independent count over silver.
#[test]
fn gold_cells_below_the_minimum_group_size_are_suppressed() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (table, count) in GOLD {
            let below = query_lake(&lh, &format!("SELECT count(*) FROM gold.{table} WHERE {count} < 11")).await;
            assert_eq!(below, rows(&[&["0"]]), "gold.{table} publishes a cell below 11");
            let inconsistent = query_lake(
                &lh,
                &format!("SELECT count(*) FROM gold.{table} WHERE suppressed <> ({count} IS NULL) OR suppressed IS NULL"),
            )
            .await;
            assert_eq!(inconsistent, rows(&[&["0"]]), "gold.{table}: suppressed flag and null count disagree");
        }
        // Measures go with their count.
        let leaked = query_lake(
            &lh,
            "SELECT count(*) FROM gold.fire_response_times WHERE suppressed AND (avg_response_minutes IS NOT NULL OR p90_response_minutes IS NOT NULL)",
        )
        .await;
        assert_eq!(leaked, rows(&[&["0"]]));
        // Independent check of one table: recount from silver.
        let expected = query_lake(
            &lh,
            "SELECT arrondissement, time_bucket(alert_at, 'week'),
                    CASE WHEN count(*) >= 11 THEN CAST(count(*) AS VARCHAR) ELSE 'suppressed' END
             FROM silver.bmpm_interventions WHERE arrondissement IS NOT NULL AND response_minutes IS NOT NULL
             GROUP BY 1, 2 ORDER BY 1, 2",
        )
        .await;
        let published = query_lake(
            &lh,
            "SELECT arrondissement, week, CASE WHEN suppressed THEN 'suppressed' ELSE CAST(interventions AS VARCHAR) END
             FROM gold.fire_response_times ORDER BY 1, 2",
        )
        .await;
        assert_eq!(published, expected);
        let kinds: Vec<&str> = published.iter().map(|r| r[2].as_str()).collect();
        assert!(kinds.contains(&"suppressed") && kinds.iter().any(|k| *k != "suppressed"), "both kinds expected");
    });
}

/// `privacy.min_group_size` is the deployment's threshold.
#[test]
fn minimum_group_size_comes_from_the_project() {
    let p = TestProject::example(None);
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        yaml.replace(
            "  domains: [police, fire, citizens]",
            "  domains: [police, fire, citizens]\n  min_group_size: 30",
        ),
    );
    run_ok(&p, &["run"]);
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let below =
            query_lake(&lh, "SELECT count(*) FROM gold.incidents_by_arrondissement_period WHERE incidents < 30").await;
        assert_eq!(below, rows(&[&["0"]]));
        let published =
            query_lake(&lh, "SELECT count(*) FROM gold.incidents_by_arrondissement_period WHERE NOT suppressed").await;
        assert_ne!(published, rows(&[&["0"]]));
    });
}

/// No gold column carries a direct identifier, a pseudonym, a key id or raw coordinates.
#[test]
fn gold_holds_no_identifier_or_coordinate() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        for (table, _) in GOLD {
            let cols = query_lake(
                &lh,
                &format!("SELECT column_name FROM information_schema.columns WHERE table_schema = 'gold' AND table_name = '{table}'"),
            )
            .await;
            assert!(!cols.is_empty(), "{table}");
            for c in cols.iter().map(|r| r[0].as_str()) {
                for banned in ["lat", "lon", "token", "key_id", "name", "phone", "email", "age", "_id"] {
                    assert!(!c.contains(banned), "gold.{table}.{c} looks like an identifier or a coordinate");
                }
                // No value is a pseudonym (64 hex digits), whatever the column is called.
                let hex = query_lake(
                    &lh,
                    &format!("SELECT count(*) FROM gold.{table} WHERE CAST(\"{c}\" AS VARCHAR) ~ '^[0-9a-f]{{64}}$'"),
                )
                .await;
                assert_eq!(hex, rows(&[&["0"]]), "gold.{table}.{c}");
            }
        }
    });
}

/// A new file with one corrected incident and two new ones: the incremental run reads only the new bronze
/// files, and the result equals a full rebuild.
#[test]
fn incremental_run_equals_full_rebuild() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    // incident 000001 corrected (category rixe), two new incidents.
    let header = POLICE_HEADER;
    let body = "DDSP-2026-000001;02/11/2026 04:01;rixe;43,30139;5,40903;3;Jean Martin;06 11 22 33 44;corrigé\n\
                DDSP-2026-990001;22/11/2026 23:10;tapage;43,29;5,38;1;Ana Lopez;06 00 00 00 01;\n\
                DDSP-2026-990002;23/11/2026 02:45;vol;43,31;5,39;2;Luc Roux;06 00 00 00 02;\n";
    let text = format!("{header}{body}");
    let (encoded, _, _) = encoding_rs::WINDOWS_1252.encode(&text);
    p.write("sources/data/ddsp/incidents_2026-11-22.csv", encoded);
    let out = run_ok(&p, &["run"]);
    let line = summary_line(&out, "silver.ddsp_incidents");
    assert!(line.contains("incremental") && line.split_whitespace().nth(2) == Some("3"), "{out}");
    assert!(summary_line(&out, "silver.bmpm_interventions").contains("up to date"), "{out}");

    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let all = "SELECT * FROM silver.ddsp_incidents ORDER BY incident_id";
    let incremental = rt.block_on(query_lake(&lh, all));
    assert_eq!(incremental.len(), 1487);
    let corrected = rt.block_on(query_lake(
        &lh,
        "SELECT category, period_of_day FROM silver.ddsp_incidents WHERE incident_id = 'DDSP-2026-000001'",
    ));
    assert_eq!(corrected, rows(&[&["rixe", "night"]]));
    let gold_incremental =
        rt.block_on(query_lake(&lh, "SELECT * FROM gold.incidents_by_arrondissement_period ORDER BY 1, 2"));

    let out = run_ok(&p, &["transform", "--full-refresh"]);
    assert!(summary_line(&out, "silver.ddsp_incidents").contains(" full "), "{out}");
    let lh = p.load();
    assert_eq!(rt.block_on(query_lake(&lh, all)), incremental);
    let gold_full = rt.block_on(query_lake(&lh, "SELECT * FROM gold.incidents_by_arrondissement_period ORDER BY 1, 2"));
    assert_eq!(gold_full, gold_incremental);
}

/// An input rewritten in place (a `replace` source) makes an incremental model rebuild in full.
#[test]
fn rewritten_input_forces_a_full_rebuild() {
    let p = TestProject::example(None);
    let m = std::fs::read_to_string(p.path().join("sources/ddsp_incidents.yaml")).unwrap();
    p.write("sources/ddsp_incidents.yaml", m.replace("load: { mode: append }", "load: { mode: replace }"));
    run_ok(&p, &["run"]);
    std::fs::remove_file(p.path().join("sources/data/ddsp/incidents_2026-11-01.csv")).unwrap();
    std::fs::copy(
        p.path().join("sources/data/ddsp/incidents_2026-11-08.csv"),
        p.path().join("sources/data/ddsp/incidents_2026-11-29.csv"),
    )
    .unwrap();
    settled(&p.path().join("sources/data/ddsp/incidents_2026-11-29.csv"));
    let out = run_ok(&p, &["run"]);
    let line = summary_line(&out, "silver.ddsp_incidents");
    assert!(line.contains(" full "), "{out}");
    assert!(out.contains("silver.ddsp_incidents: full rebuild: bronze.ddsp_incidents was rewritten"), "{out}");
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let n = rt.block_on(query_lake(&lh, "SELECT count(*) FROM silver.ddsp_incidents"));
    let b = rt.block_on(query_lake(&lh, "SELECT count(DISTINCT incident_id) FROM bronze.ddsp_incidents"));
    assert_eq!(n, b);
}

const AUDITED: &str = "SELECT incident_id, arrondissement FROM {{ source('ddsp_incidents') }}";

/// Audits run before the commit: an `error` audit that fails publishes nothing (same version, no new file);
/// a `warn` audit commits and is reported.
#[test]
fn failing_audits_block_the_commit_and_warnings_do_not() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    p.write("transforms/silver/audited.sql", AUDITED);
    p.write(
        "transforms/silver/audited.yaml",
        "version: 1\ntests:\n  - { check: expression, sql: \"arrondissement <= 8\", severity: warn }\n  - { check: unique, columns: [incident_id] }\n  - { check: relationships, column: incident_id, to: bronze.ddsp_incidents, field: incident_id }\n  - { check: accepted_values, column: arrondissement, values: [\"1\", \"2\"], severity: warn }\n",
    );
    let out = run_ok(&p, &["transform", "--select", "audited"]);
    assert!(out.contains("silver.audited: audit warning: expression(arrondissement <= 8)"), "{out}");
    assert!(out.contains("silver.audited: audit warning: accepted_values(arrondissement)"), "{out}");
    assert!(summary_line(&out, "silver.audited").contains("2/4 passed"), "{out}");
    assert_eq!(version_of(&p, "silver", "audited"), 1);
    let table_dir = p.path().join("warehouse/silver/audited");
    let files_before = files_under(&table_dir).len();

    // Same check as an error, on new SQL: nothing is published.
    p.write("transforms/silver/audited.sql", format!("{AUDITED} WHERE incident_id IS NOT NULL"));
    p.write(
        "transforms/silver/audited.yaml",
        "version: 1\ntests:\n  - { check: expression, sql: \"arrondissement <= 8\" }\n  - { check: row_count, max: 10 }\n",
    );
    let out = p.run(&["transform", "--select", "audited"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("silver.audited: FAILED: audit failed, nothing committed: expression(arrondissement <= 8)"),
        "{text}"
    );
    assert!(text.contains("row_count(..10) (1485 rows)"), "{text}");
    assert_eq!(version_of(&p, "silver", "audited"), 1);
    assert_eq!(files_under(&table_dir).len(), files_before, "uncommitted files must be deleted");
    // Readers still see the previous version.
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    assert_eq!(rt.block_on(query_lake(&lh, "SELECT count(*) FROM silver.audited")), rows(&[&["1485"]]));
}

/// A model that fails makes the models reading it skip; the others still run.
#[test]
fn a_failed_model_skips_its_descendants_only() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest"]);
    p.write("transforms/silver/ville_events.yaml", "version: 1\ntests:\n  - { check: row_count, min: 100000 }\n");
    let out = p.run(&["transform"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(summary_line(&text, "silver.ville_events").contains("FAILED"), "{text}");
    assert!(summary_line(&text, "gold.night_noise_near_events").contains("skipped"), "{text}");
    assert!(text.contains("gold.night_noise_near_events: skipped: input silver.ville_events failed"), "{text}");
    assert!(summary_line(&text, "gold.fire_response_times").contains(" full "), "{text}");
}

/// `--select name+` runs the model and what reads it; `+name` the model and what it reads.
#[test]
fn select_follows_the_dag() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest"]);
    let out = run_ok(&p, &["compile", "--select", "+incidents_weather_daily"]);
    let heads: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("-- ") && l.contains("(transforms/"))
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    assert_eq!(
        heads,
        [
            "silver.bmpm_interventions",
            "silver.ddsp_incidents",
            "silver.meteo_observations",
            "gold.incidents_weather_daily"
        ]
    );
    run_ok(&p, &["transform"]);
    let out = run_ok(&p, &["transform", "--select", "silver.ville_events+", "--full-refresh"]);
    let ran: Vec<&str> =
        out.lines().skip(1).take_while(|l| l.contains('.')).map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(ran, ["silver.ville_events", "gold.night_noise_near_events"], "{out}");
    let out = p.run(&["transform", "--select", "incidents_by_quartier"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no model named `incidents_by_quartier`"), "{}", stderr(&out));
}

/// `compile` prints the SQL that runs: refs resolved, vars applied, macros expanded; `--incremental` shows the
/// incremental rendering.
#[test]
fn compile_prints_rendered_sql() {
    let p = TestProject::example(None);
    let out = run_ok(&p, &["compile", "--select", "silver.ddsp_incidents", "--var", "hotspot_cell_meters=2000"]);
    assert!(out.starts_with("-- silver.ddsp_incidents (transforms/silver/ddsp_incidents.sql) materialized=incremental unique_key=incident_id\n"), "{out}");
    assert!(out.contains("FROM bronze.ddsp_incidents"), "{out}");
    assert!(out.contains("geo_cell(lat, lon, 2000) AS hotspot_cell"), "{out}");
    assert!(out.contains("row_number() OVER (PARTITION BY incident_id"), "{out}");
    assert!(!out.contains("{{") && !out.contains("{%"), "{out}");
}

/// The privacy functions in SQL give the pseudonyms of landing: a bronze pseudonym (made at ingestion with
/// `normalize: casefold`) equals `pseudonymize(clear value, 'police', 'casefold')`.
#[test]
fn pseudonymize_in_sql_matches_landing() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Row 2 of incidents_2026-11-08.csv: DDSP-2026-000501, reporter "Mehdi Dubois", phone "07 01 51 92 44".
    let same = rt.block_on(query_lake(
        &lh,
        "SELECT reporter_name = pseudonymize('  MEHDI DUBOIS ', 'police', 'casefold'),
                reporter_phone = pseudonymize('07.01.51.92.44', 'police', 'digits'),
                reporter_name_key_id = pseudonym_key_id('police'),
                reporter_name = pseudonymize('Mehdi Dubois', 'fire', 'casefold')
         FROM bronze.ddsp_incidents WHERE incident_id = 'DDSP-2026-000501'",
    ));
    assert_eq!(same, rows(&[&["true", "true", "true", "false"]]));
}

/// Template, DAG and sidecar errors: one fixture file per case (files separated by `-- file: <path>` lines,
/// written into a copy of the example deployment), `lakehouse validate` output snapshotted.
#[test]
fn invalid_transforms() {
    insta::glob!("../fixtures/transforms/invalid", "*.txt", |path| {
        let p = TestProject::example(None);
        let text = std::fs::read_to_string(path).unwrap();
        let mut current: Option<(String, String)> = None;
        let mut files = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("-- file: ") {
                files.extend(current.take());
                current = Some((name.trim().to_string(), String::new()));
            } else if let Some((_, body)) = current.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        files.extend(current);
        for (name, body) in files {
            p.write(&format!("transforms/{name}"), body);
        }
        let out = p.run(&["validate"]);
        assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
        insta::assert_snapshot!(stderr(&out));
    });
}

/// Runs of one model racing each other publish once: the losers say so and publish nothing, so an appending
/// incremental model holds each input row once.
#[test]
fn concurrent_runs_of_a_model_publish_once() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    p.write(
        "transforms/silver/appended.sql",
        "{{ config(materialized='incremental') }}\nSELECT incident_id, _source_file FROM {{ source('ddsp_incidents') }}",
    );
    // Every run waits a second between writing and committing, so all four race for the same commit.
    let race = || {
        let children: Vec<_> = (0..4)
            .map(|_| {
                p.command(&["transform", "--select", "appended"])
                    .env("LAKEHOUSE_FAULT", "slow-publish")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let outs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().unwrap()).collect();
        let won = outs.iter().filter(|o| o.status.success()).count();
        for o in outs.iter().filter(|o| !o.status.success()) {
            let text = stdout(o);
            assert_eq!(o.status.code(), Some(1), "{text}\n{}", stderr(o));
            assert!(text.contains("published at the same time; this run published nothing"), "{text}");
        }
        assert_eq!(won, 1, "exactly one run publishes");
    };
    race();
    let header = POLICE_HEADER;
    p.write(
        "sources/data/ddsp/incidents_2026-11-22.csv",
        format!("{header}DDSP-2026-990001;22/11/2026 23:10;tapage;43,29;5,38;1;A B;06;\n"),
    );
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    race();
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts = rt.block_on(query_lake(&lh, "SELECT count(*), count(DISTINCT incident_id) FROM silver.appended"));
    assert_eq!(counts, rows(&[&["1486", "1486"]]));
}

/// A crash between writing and committing publishes nothing; the next run builds the model.
#[test]
fn crash_before_publish_then_rerun() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    p.write(
        "sources/data/ddsp/incidents_2026-11-22.csv",
        std::fs::read(p.path().join("sources/data/ddsp/incidents_2026-11-08.csv")).unwrap(),
    );
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    let out = p
        .command(&["transform", "--select", "ddsp_incidents"])
        .env("LAKEHOUSE_FAULT", "before-publish")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(version_of(&p, "silver", "ddsp_incidents"), 1);
    let out = run_ok(&p, &["transform", "--select", "ddsp_incidents"]);
    assert!(summary_line(&out, "silver.ddsp_incidents").contains("incremental"), "{out}");
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let counts =
        rt.block_on(query_lake(&lh, "SELECT count(*), count(DISTINCT incident_id) FROM silver.ddsp_incidents"));
    assert_eq!(counts, rows(&[&["1485", "1485"]]));
}

/// `partition_by` makes a partitioned Delta table.
#[test]
fn partition_by_partitions_the_table() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    p.write(
        "transforms/silver/partitioned.sql",
        "{{ config(materialized='table', partition_by='category') }}\nSELECT incident_id, category FROM {{ source('ddsp_incidents') }}",
    );
    run_ok(&p, &["transform", "--select", "partitioned"]);
    let dir = p.path().join("warehouse/silver/partitioned");
    assert!(dir.join("category=vol").is_dir(), "{:?}", files_under(&dir));
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let table = rt.block_on(async {
        lh.warehouse.open(&lh.warehouse.table_url("silver", "partitioned")).await.unwrap().unwrap()
    });
    assert_eq!(table.snapshot().unwrap().metadata().partition_columns(), &["category".to_string()]);
    let n = rt.block_on(query_lake(&lh, "SELECT count(*) FROM silver.partitioned WHERE category = 'vol'"));
    let b = rt.block_on(query_lake(&lh, "SELECT count(*) FROM bronze.ddsp_incidents WHERE category = 'vol'"));
    assert_eq!(n, b);
}

/// A changed model is rebuilt even when its inputs did not change: new SQL (here a new column, so the table's
/// schema changes in the same commit), a changed sidecar, a changed minimum group size.
#[test]
fn changed_definitions_rebuild_the_model() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let sql = std::fs::read_to_string(p.path().join("transforms/silver/ville_events.sql")).unwrap();
    p.write(
        "transforms/silver/ville_events.sql",
        sql.replace("    free_entry\n", "    free_entry,\n    1 AS schema_version\n"),
    );
    let out = run_ok(&p, &["transform"]);
    assert!(summary_line(&out, "silver.ville_events").contains(" full "), "{out}");
    assert!(summary_line(&out, "gold.night_noise_near_events").contains(" full "), "{out}");
    assert!(summary_line(&out, "silver.ddsp_incidents").contains("up to date"), "{out}");
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let v = rt.block_on(query_lake(&lh, "SELECT min(schema_version), count(*) FROM silver.ville_events"));
    assert_eq!(v, rows(&[&["1", "59"]]));

    let side = std::fs::read_to_string(p.path().join("transforms/gold/fire_response_times.yaml")).unwrap();
    p.write("transforms/gold/fire_response_times.yaml", format!("{side}  - {{ check: row_count, min: 1 }}\n"));
    let out = run_ok(&p, &["transform"]);
    assert!(summary_line(&out, "gold.fire_response_times").contains("3/3 passed"), "{out}");
    assert!(summary_line(&out, "gold.accident_hotspots").contains("up to date"), "{out}");

    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        yaml.replace(
            "  domains: [police, fire, citizens]",
            "  domains: [police, fire, citizens]\n  min_group_size: 20",
        ),
    );
    let out = run_ok(&p, &["transform"]);
    for (table, _) in GOLD {
        assert!(summary_line(&out, &format!("gold.{table}")).contains(" full "), "{out}");
    }
    assert!(summary_line(&out, "silver.ddsp_incidents").contains("up to date"), "{out}");
}

/// New SQL for an incremental model rebuilds it in full: the new logic applies to every row.
#[test]
fn changed_sql_of_an_incremental_model_rebuilds_it_in_full() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let sql = std::fs::read_to_string(p.path().join("transforms/silver/ddsp_incidents.sql")).unwrap();
    p.write(
        "transforms/silver/ddsp_incidents.sql",
        sql.replace("geo_cell(lat, lon, 1000) AS cell_1km", "geo_cell(lat, lon, 200) AS cell_1km"),
    );
    let out = run_ok(&p, &["transform", "--select", "ddsp_incidents"]);
    assert!(summary_line(&out, "silver.ddsp_incidents").contains(" full "), "{out}");
    assert!(out.contains("silver.ddsp_incidents: full rebuild: the model's SQL changed since the last run"), "{out}");
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cells = rt.block_on(query_lake(
        &lh,
        "SELECT count(*) FROM silver.ddsp_incidents WHERE cell_1km NOT LIKE 'CRS3035RES200m%'",
    ));
    assert_eq!(cells, rows(&[&["0"]]));
}

/// SQL that plans but fails while running (a cast of text to a number) fails the model with the error, and a
/// failed first run leaves no table and no file behind.
#[test]
fn a_model_failing_at_run_time_leaves_nothing() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    p.write("transforms/silver/bad_cast.sql", "SELECT CAST(category AS INT) AS n FROM {{ source('ddsp_incidents') }}");
    let out = p.run(&["transform", "--select", "bad_cast"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("silver.bad_cast: FAILED: SQL: "), "{text}");
    assert!(text.to_lowercase().contains("cast"), "{text}");
    let dir = p.path().join("warehouse/silver/bad_cast");
    assert!(files_under(&dir).is_empty(), "{:?}", files_under(&dir));
    // Same for a failed audit on a first run.
    p.write("transforms/silver/first.sql", "SELECT incident_id FROM {{ source('ddsp_incidents') }}");
    p.write("transforms/silver/first.yaml", "version: 1\ntests:\n  - { check: row_count, max: 1 }\n");
    let out = p.run(&["transform", "--select", "first"]);
    assert_eq!(out.status.code(), Some(1));
    let dir = p.path().join("warehouse/silver/first");
    assert!(files_under(&dir).is_empty(), "{:?}", files_under(&dir));
}

/// An incremental model joining its new rows to a lookup table reads the lookup whole with
/// `incremental=false`, so the incremental run equals a full rebuild.
#[test]
fn incremental_model_reads_lookups_whole() {
    let p = TestProject::example(None);
    p.write(
        "transforms/silver/incidents_near_events.sql",
        "{{ config(materialized='incremental', unique_key='incident_id') }}
SELECT i.incident_id, count(e.event_id) AS events_same_day
FROM {{ source('ddsp_incidents') }} i
LEFT JOIN {{ ref('silver.ville_events', incremental=false) }} e
  ON e.arrondissement = i.arrondissement AND e.event_day = time_bucket(i.reported_at, 'day')
GROUP BY i.incident_id",
    );
    run_ok(&p, &["run"]);
    // New incidents on the day and in the arrondissement of an event.
    let lh = p.load();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let event = rt.block_on(query_lake(
        &lh,
        "SELECT arrondissement, to_char(local_time(starts_at), '%d/%m/%Y') FROM silver.ville_events ORDER BY event_id LIMIT 1",
    ));
    let (arr, day) = (&event[0][0], &event[0][1]);
    let header = POLICE_HEADER;
    p.write(
        "sources/data/ddsp/incidents_2026-11-22.csv",
        format!("{header}DDSP-2026-990001;{day} 12:00;tapage;43,29;5,38;{arr};A B;06;\nDDSP-2026-990002;{day} 13:00;vol;43,29;5,38;{arr};C D;06;\n"),
    );
    let out = run_ok(&p, &["run"]);
    assert!(summary_line(&out, "silver.incidents_near_events").contains("incremental"), "{out}");
    let all = "SELECT * FROM silver.incidents_near_events ORDER BY incident_id";
    let incremental = rt.block_on(query_lake(&lh, all));
    let new = rt.block_on(query_lake(
        &lh,
        "SELECT min(events_same_day) FROM silver.incidents_near_events WHERE incident_id LIKE 'DDSP-2026-99%'",
    ));
    assert_ne!(new, rows(&[&["0"]]), "the new incidents must see the event");
    run_ok(&p, &["transform", "--select", "incidents_near_events", "--full-refresh"]);
    assert_eq!(rt.block_on(query_lake(&lh, all)), incremental);
}

/// Indirect uses of sensitive columns (a filter on coordinates) are not errors, but `validate` reports them.
#[test]
fn validate_reports_indirect_uses_of_sensitive_columns() {
    let p = TestProject::example(None);
    p.write(
        "transforms/silver/north.sql",
        "SELECT report_id, topic FROM {{ source('ville_signalements') }} WHERE lat > 43.3",
    );
    let out = run_ok(&p, &["validate"]);
    assert!(
        out.contains("note: transforms/silver/north.sql: uses bronze.ville_signalements.lat (pii: quasi) in a filter"),
        "{out}"
    );
}

/// An auditor traces a gold column down to the partner files at their exact versions, and reproduces gold and
/// incremental silver versions by time travel; a tampered version is reported different.
#[test]
fn lineage_and_reproduce_answer_the_auditor() {
    let p = example_run_twice();

    let out = run_ok(&p, &["lineage", "gold.accident_hotspots.accidents", "--version", "2"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("gold.accident_hotspots @ v2  run "), "{out}");
    assert!(
        out.contains("column accidents ← the rows of silver.bmpm_interventions (aggregation), the rows of silver.ddsp_incidents (aggregation)"),
        "{out}"
    );
    assert!(out.contains("silver.ddsp_incidents @ v2"), "{out}");
    assert!(out.contains("bronze.ddsp_incidents @ v2  run "), "{out}");
    assert!(out.contains("partner ddsp (Direction départementale de la sécurité publique (police nationale)), agreement CONV-2018-014"), "{out}");
    assert!(
        out.contains("/sources/data/ddsp/incidents_2026-11-22.csv (batch 2: 1 read, 1 written, 0 quarantined)"),
        "{out}"
    );
    assert!(out.contains("/sources/data/ddsp/incidents_2026-11-01.csv (batch 1: "), "{out}");
    // A column traced down: hotspot_cell comes from the coordinates, through a privacy function.
    let col = run_ok(&p, &["lineage", "silver.ddsp_incidents.hotspot_cell"]);
    assert!(col.contains("column hotspot_cell ← bronze.ddsp_incidents.lat (transformation, masked), bronze.ddsp_incidents.lon (transformation, masked)"), "{col}");
    assert!(col.contains("column lat ← (landed from the partner's files)"), "{col}");
    // Version 1 of gold was built before the new file: its tree does not list it.
    let v1 = run_ok(&p, &["lineage", "gold.accident_hotspots", "--version", "1"]);
    assert!(!v1.contains("incidents_2026-11-22.csv") && v1.contains("bronze.ddsp_incidents @ v1"), "{v1}");
    let json: serde_json::Value =
        serde_json::from_str(&run_ok(&p, &["lineage", "gold.accident_hotspots", "--format", "json"])).unwrap();
    assert_eq!(json["table"], "gold.accident_hotspots");
    assert_eq!(json["inputs"].as_array().unwrap().len(), 2);
    assert!(
        run_ok(&p, &["lineage", "gold.accident_hotspots", "--format", "mermaid"])
            .contains("bronze_ddsp_incidents_v2[\"bronze.ddsp_incidents v2\"] --> silver_ddsp_incidents_v2")
    );
    assert!(run_ok(&p, &["lineage", "gold.accident_hotspots", "--format", "dot"]).starts_with("digraph lineage {"));

    for (table, version) in
        [("gold.accident_hotspots", "1"), ("gold.accident_hotspots", "2"), ("silver.ddsp_incidents", "2")]
    {
        let out = run_ok(&p, &["reproduce", table, "--version", version]);
        assert!(out.contains("IDENTICAL: "), "{table} v{version}: {out}");
    }
    // Tamper with gold v2 (an extra commit rewriting a count would be v3; here v1 is compared to v2's inputs):
    // reproducing v2 against other inputs is what a changed SQL does.
    let sql = std::fs::read_to_string(p.path().join("transforms/gold/accident_hotspots.sql")).unwrap();
    p.write("transforms/gold/accident_hotspots.sql", sql.replace("count(*) AS accidents", "count(*) + 1 AS accidents"));
    let out = p.run(&["reproduce", "gold.accident_hotspots", "--version", "2"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains("note: the model's SQL has changed since this version") && text.contains("DIFFERENT: "),
        "{text}"
    );
}

/// `lakehouse sql`: every layer and the run log, as a table, CSV or JSON, with time travel; quarantined records
/// are not exposed; bad SQL is a user error.
#[test]
fn sql_queries_every_layer_with_time_travel() {
    let p = example_run_twice();
    let csv = run_ok(&p, &["sql", "--format", "csv", "SELECT count(*) AS n FROM silver.ddsp_incidents"]);
    assert_eq!(csv, "n\n1486\n");
    let old = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "csv",
            "--at",
            "silver.ddsp_incidents=1",
            "SELECT count(*) AS n FROM silver.ddsp_incidents",
        ],
    );
    assert_eq!(old, "n\n1485\n");
    let json = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "json",
            "SELECT status, count(*) AS runs FROM system.runs GROUP BY status ORDER BY status",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(v.as_array().unwrap().iter().any(|r| r["status"] == "succeeded"), "{json}");
    // Interactive SQL has no keyed functions (see trust::interactive_sql_cannot_compute_pseudonyms).
    let out = p.run(&["sql", "SELECT pseudonymize('jean', 'police') AS t"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // The catalog views: table lineage pinned to versions, column lineage with masking, runs.
    let lineage = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT output_version, input, input_version FROM catalog.lineage WHERE target = 'silver.ddsp_incidents' ORDER BY 1",
        ],
    );
    assert_eq!(lineage, "output_version,input,input_version\n1,bronze.ddsp_incidents,1\n2,bronze.ddsp_incidents,2\n");
    let files = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n FROM catalog.lineage WHERE target = 'bronze.ddsp_incidents' AND input LIKE '%incidents_2026-11-22.csv'",
        ],
    );
    assert_eq!(files, "n\n1\n");
    let masked = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT input_column, kind, masked FROM catalog.column_lineage WHERE output_table = 'silver.ddsp_incidents' AND output_column = 'cell_1km' ORDER BY 1",
        ],
    );
    assert_eq!(masked, "input_column,kind,masked\nlat,transformation,true\nlon,transformation,true\n");
    let runs = run_ok(&p, &["sql", "--format", "csv", "SELECT count(*) > 20 AS many FROM catalog.attempts"]);
    assert_eq!(runs, "many\ntrue\n");
    let sql = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT rendered_sql LIKE '%geo_cell(lat, lon, 1000)%' AS kept FROM catalog.runs WHERE target = 'silver.ddsp_incidents' AND output_version = 2",
        ],
    );
    assert_eq!(sql, "kept\ntrue\n");
    let cols = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT privacy_class FROM catalog.columns WHERE table_name = 'bronze.ddsp_incidents' AND name = 'lat'",
        ],
    );
    assert_eq!(cols, "privacy_class\nquasi\n");
    let out = p.run(&["sql", "SELECT * FROM bronze.ddsp_incidents__quarantine"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not found"), "{}", stderr(&out));
    let out = p.run(&["sql", "--at", "gold.nowhere=1", "SELECT 1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a table of the warehouse"), "{}", stderr(&out));
}

/// `lakehouse sql` opens only the tables a statement reads: a table whose log cannot be read stops neither a
/// query of another table nor a listing of the tables, and is a clear error when it is queried.
#[test]
fn sql_opens_only_the_tables_it_reads() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let log = p.path().join("warehouse/bronze/meteo_observations/_delta_log/00000000000000000000.json");
    assert!(log.is_file(), "{}", log.display());
    std::fs::write(&log, "this is not a Delta log entry\n").unwrap();
    assert_eq!(run_ok(&p, &["sql", "--format", "csv", "SELECT 1 AS one"]), "one\n1\n");
    let gold = run_ok(&p, &["sql", "--format", "csv", "SELECT count(*) > 0 AS some FROM gold.fire_response_times"]);
    assert_eq!(gold, "some\ntrue\n");
    let listed = run_ok(
        &p,
        &[
            "sql",
            "--format",
            "csv",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'bronze' ORDER BY 1",
        ],
    );
    assert!(listed.contains("\nmeteo_observations\n") && listed.contains("\nddsp_incidents\n"), "{listed}");
    let out = p.run(&["sql", "SELECT count(*) FROM bronze.meteo_observations"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("meteo_observations") && !err.contains("panicked"), "{err}");
}

/// `tables`, `describe` (privacy classes, docs and where model columns come from) and `lineage --downstream`.
#[test]
fn tables_describe_and_downstream() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let tables = run_ok(&p, &["tables"]);
    let line = |t: &str| {
        tables.lines().find(|l| l.starts_with(&format!("{t} "))).unwrap_or_else(|| panic!("{t}:\n{tables}")).to_string()
    };
    assert!(line("bronze.ddsp_incidents").contains(" 1  ddsp "), "{tables}");
    assert!(line("gold.fire_response_times").contains("Fire-brigade response times"), "{tables}");
    assert!(line("system.runs").contains("Run attempts"), "{tables}");

    let bronze = run_ok(&p, &["describe", "bronze.ddsp_incidents"]);
    assert!(bronze.contains("owner        ddsp (agreement CONV-2018-014)"), "{bronze}");
    let col = |text: &str, c: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{c} ")))
            .unwrap_or_else(|| panic!("{c}:\n{text}"))
            .to_string()
    };
    assert!(col(&bronze, "reporter_name").contains("pii: direct (keyed pseudonym)"), "{bronze}");
    assert!(col(&bronze, "lat").contains("pii: quasi"), "{bronze}");
    assert!(col(&bronze, "reporter_name_key_id").contains("key id of the pseudonyms in reporter_name"), "{bronze}");
    let silver = run_ok(&p, &["describe", "silver.ddsp_incidents"]);
    assert!(col(&silver, "cell_1km").contains("INSEE 1 km grid cell (EPSG:3035) of the incident ← bronze.ddsp_incidents.lat (masked), bronze.ddsp_incidents.lon (masked)"), "{silver}");

    let down = run_ok(&p, &["lineage", "silver.bmpm_interventions", "--downstream"]);
    assert_eq!(
        down,
        "silver.bmpm_interventions @ v1\n├─ gold.accident_hotspots @ v1\n├─ gold.fire_response_times @ v1\n└─ gold.incidents_weather_daily @ v1\n"
    );
    let out = p.run(&["describe", "gold.nope"]);
    assert_eq!(out.status.code(), Some(1));
}

/// Retention: rows ingested before `now − retention` leave bronze and the quarantine (the ledger stays, so
/// nothing is ingested again), the models rebuild without them, `--dry-run` only counts.
#[test]
fn retention_deletes_old_rows_everywhere_downstream() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    // Three years and a day later, the police data (retention: 3 years) is past retention; the weather's
    // (10 years) is not.
    let later = (chrono::Utc::now() + chrono::Duration::days(3 * 366 + 1)).to_rfc3339();
    let dry = run_ok(&p, &["retention", "--dry-run", "--as-of", &later]);
    let line = dry.lines().find(|l| l.starts_with("ddsp_incidents ")).unwrap().to_string();
    assert!(line.contains(" 1485 ") && line.contains(" 15 "), "{dry}");
    assert!(dry.contains("(dry run: nothing deleted)"), "{dry}");
    assert_eq!(count_rows(&p, "bronze.ddsp_incidents"), 1485);

    let out = run_ok(&p, &["retention", "ddsp_incidents", "--as-of", &later]);
    assert!(out.lines().any(|l| l.starts_with("ddsp_incidents ") && l.contains(" 1485 ")), "{out}");
    assert_eq!(count_rows(&p, "bronze.ddsp_incidents"), 0);
    let q = run_ok(&p, &["quarantine", "ddsp_incidents"]);
    assert!(q.contains("0 quarantined records in bronze.ddsp_incidents__quarantine"), "{q}");
    assert_eq!(count_rows(&p, "bronze.ddsp_incidents__files"), 3, "the ledger is kept");
    assert_eq!(count_rows(&p, "bronze.meteo_observations"), 960, "other sources are untouched");
    // The next run takes nothing again and rebuilds the models without the deleted rows.
    let out = run_ok(&p, &["run"]);
    assert!(out.contains("silver.ddsp_incidents: full rebuild: bronze.ddsp_incidents was rewritten"), "{out}");
    assert_eq!(count_rows(&p, "silver.ddsp_incidents"), 0);
    assert_eq!(count_rows(&p, "gold.incidents_by_arrondissement_period"), 0);
    let lineage = run_ok(&p, &["lineage", "bronze.ddsp_incidents"]);
    assert!(lineage.contains("note: retention: delete rows ingested before"), "{lineage}");
}

fn count_rows(p: &TestProject, table: &str) -> u64 {
    let out = run_ok(p, &["sql", "--format", "csv", &format!("SELECT count(*) AS n FROM {table}")]);
    out.lines().nth(1).unwrap().parse().unwrap()
}
