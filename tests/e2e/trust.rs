//! Trust before reach (issue 9): SQL that cannot write or re-identify, no data values in errors, drop zones
//! that stay drop zones, `var()` values that cannot become SQL.

use lakehouse_tests::*;

fn count(p: &TestProject, table: &str) -> String {
    sql_csv(p, &format!("SELECT count(*) AS n FROM {table}"))
}

/// Every writing or file-reading statement is refused by `lakehouse sql`, and nothing changed.
#[test]
fn sql_is_a_read_only_sandbox() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let bronze_before = count(&p, "bronze.ddsp_incidents");
    assert_eq!(bronze_before, "n\n1485\n");
    let ledger_before = count(&p, "bronze.ddsp_incidents__files");
    let forged = p.path().join("sources/forged.yaml");
    let copied = p.path().join("copied.csv");
    let key = p.key_file().display().to_string();
    for q in [
        "INSERT INTO bronze.ddsp_incidents SELECT * FROM bronze.ddsp_incidents".to_string(),
        "INSERT OVERWRITE bronze.ddsp_incidents SELECT * FROM bronze.ddsp_incidents WHERE false".to_string(),
        "INSERT INTO bronze.ddsp_incidents__files SELECT * FROM bronze.ddsp_incidents__files".to_string(),
        "DELETE FROM bronze.ddsp_incidents".to_string(),
        format!("COPY (SELECT 1 AS version) TO '{}' STORED AS JSON", forged.display()),
        format!("COPY bronze.ddsp_incidents TO '{}'", copied.display()),
        format!("CREATE EXTERNAL TABLE k (line VARCHAR) STORED AS CSV LOCATION '{key}'"),
        "CREATE VIEW v AS SELECT 1".to_string(),
        "SET datafusion.execution.batch_size = 1".to_string(),
    ] {
        let out = p.run(&["sql", &q]);
        assert_eq!(out.status.code(), Some(1), "{q} was accepted:\n{}", stdout(&out));
        assert!(stderr(&out).contains("is refused: SQL here is read-only"), "{q}: {}", stderr(&out));
    }
    // Files are not tables, and no table function reads a path.
    for q in [format!("SELECT * FROM '{key}'"), "SELECT * FROM '/etc/passwd'".to_string()] {
        let out = p.run(&["sql", &q]);
        assert_eq!(out.status.code(), Some(1), "{q} was accepted:\n{}", stdout(&out));
        assert!(!stdout(&out).contains(POLICE_KEY_HEX) && !stderr(&out).contains(POLICE_KEY_HEX));
    }
    assert!(!forged.exists() && !copied.exists());
    assert_eq!(count(&p, "bronze.ddsp_incidents"), bronze_before);
    assert_eq!(count(&p, "bronze.ddsp_incidents__files"), ledger_before);
    // The next run finds nothing changed.
    let out = run_ok(&p, &["run"]);
    assert!(out.contains("up to date"), "{out}");
}

/// A model is planned in the same sandbox: `validate` and `transform` refuse a model that writes.
#[test]
fn a_model_cannot_write() {
    for sql in [
        "COPY (SELECT incident_id FROM {{ source('ddsp_incidents') }}) TO 'leak.csv'",
        "INSERT INTO bronze.ddsp_incidents SELECT * FROM {{ source('ddsp_incidents') }}",
        "CREATE EXTERNAL TABLE k (line VARCHAR) STORED AS CSV LOCATION '/etc/passwd'",
    ] {
        let p = TestProject::example(None);
        p.write("transforms/silver/writer.sql", sql);
        for cmd in ["validate", "transform"] {
            let out = p.run(&[cmd]);
            assert_eq!(out.status.code(), Some(1), "{cmd} accepted {sql}");
            let err = stderr(&out);
            assert!(err.contains("transforms/silver/writer.sql") && err.contains("is refused"), "{cmd} {sql}: {err}");
        }
        assert!(!p.path().join("leak.csv").exists());
        assert!(!p.path().join("warehouse").exists(), "nothing ran");
    }
}

/// `pseudonymize` is not an oracle in interactive SQL: a known phone number cannot be turned into the token
/// that finds a person's rows.
#[test]
fn interactive_sql_cannot_compute_pseudonyms() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    for q in [
        "SELECT count(*) FROM silver.ddsp_incidents WHERE reporter_phone_token = pseudonymize('07 73 70 93 99', 'police', 'digits')",
        "SELECT pseudonym_key_id('police')",
    ] {
        let out = p.run(&["sql", q]);
        assert_eq!(out.status.code(), Some(1), "{q}: {}", stdout(&out));
        assert!(stderr(&out).contains("not available in interactive SQL"), "{}", stderr(&out));
    }
    // Models still compute them: the example's silver tables hold tokens.
    let out = sql_csv(&p, "SELECT count(*) AS n FROM silver.ddsp_incidents WHERE length(reporter_phone_token) = 64");
    assert_ne!(out, "n\n0\n");
}

/// Read-only commands neither read nor create keys: they work with no key source at all, and a
/// `create_if_missing` key file is not created by them.
#[test]
fn read_only_commands_never_load_or_create_keys() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let missing = p.keys_dir.path().join("new/never.keys");
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    let keys_line = yaml.lines().find(|l| l.trim_start().starts_with("keys:")).unwrap().to_string();
    p.write(
        "lakehouse.yaml",
        yaml.replace(
            &keys_line,
            &format!("  keys: {{ from: file, path: {}, create_if_missing: true }}", missing.display()),
        ),
    );
    for args in [
        vec!["sql", "SELECT count(*) FROM gold.fire_response_times"],
        vec!["tables"],
        vec!["runs"],
        vec!["status"],
        vec!["describe", "silver.ddsp_incidents"],
        vec!["lineage", "gold.fire_response_times"],
        vec!["quarantine", "ddsp_incidents"],
        vec!["validate"],
    ] {
        run_ok(&p, &args);
        assert!(!missing.exists(), "`lakehouse {args:?}` created a key file");
    }
    // Keys from an unset variable: read-only commands do not need them; writing ones say which is missing.
    p.write("lakehouse.yaml", yaml.replace(&keys_line, "  keys: { from: env, variable: LAKEHOUSE_TEST_NO_SUCH_KEYS }"));
    run_ok(&p, &["sql", "SELECT 1"]);
    let out = p.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("LAKEHOUSE_TEST_NO_SUCH_KEYS is not set"), "{}", stderr(&out));
}

/// The text of every place an error is kept: stderr with debug logs, `system.runs`, the catalog database and the
/// OpenLineage events.
fn stored_errors(p: &TestProject, out: &std::process::Output) -> Vec<u8> {
    let mut all = [out.stdout.clone(), out.stderr.clone()].concat();
    for dir in [p.path().join("warehouse/system"), p.path().join(".lakehouse")] {
        for f in files_under(&dir) {
            all.extend(std::fs::read(f).unwrap());
        }
    }
    all.extend(p.run(&["runs", "--failed"]).stdout);
    all
}

fn assert_absent(hay: &[u8], values: &[String]) {
    let text = String::from_utf8_lossy(hay);
    for v in values {
        assert!(!text.contains(v.as_str()), "`{v}` leaked into an error");
    }
}

/// A header-less export: its first line (a name and a phone number) is named nowhere.
#[test]
fn a_header_mismatch_does_not_echo_the_first_line() {
    let p = TestProject::example(None);
    let first = "DDSP-2026-770001;02/11/2026 04:01;vol;43,30;5,40;4;Gaëlle Canarienne;06 99 88 77 66;Sac volé\n";
    std::fs::remove_dir_all(p.path().join("sources/data/ddsp")).unwrap();
    p.write("sources/data/ddsp/incidents_noheader.csv", encoding_rs::WINDOWS_1252.encode(first).0);
    let out = p.command(&["-v", "run"]).output().unwrap();
    let err = stderr(&out);
    assert!(err.contains("incidents_noheader.csv") && err.contains("header lacks"), "{err}");
    assert!(err.contains("header: false"), "the message says what to do: {err}");
    let stored = stored_errors(&p, &out);
    assert!(String::from_utf8_lossy(&stored).contains("header lacks"), "the error is recorded");
    assert_absent(&stored, &["Canarienne".into(), "06 99 88 77 66".into(), "Sac volé".into()]);
}

/// A model whose cast fails on a `sensitive` column: the error says what failed, never the value.
#[test]
fn a_failing_cast_does_not_echo_the_value() {
    let p = TestProject::example(None);
    p.write(
        "transforms/silver/cast_notes.sql",
        "SELECT incident_id FROM {{ source('ddsp_incidents') }} WHERE CAST(notes AS BIGINT) > 0\n",
    );
    let out = p.command(&["-v", "run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("silver.cast_notes") && err.contains("Cannot cast string"), "{err}");
    let sample = std::fs::read(repo().join("sources/data/ddsp/incidents_2026-11-01.csv")).unwrap();
    let notes: Vec<String> = encoding_rs::WINDOWS_1252
        .decode(&sample)
        .0
        .lines()
        .skip(1)
        .filter_map(|l| l.rsplit(';').next().map(str::to_string))
        .filter(|n| n.len() >= 6)
        .collect();
    assert!(notes.len() > 100);
    let stored = stored_errors(&p, &out);
    assert!(String::from_utf8_lossy(&stored).contains("Cannot cast string"), "the error is recorded");
    assert_absent(&stored, &notes);
}

/// A symbolic link or a pipe in a drop zone is not followed: it is reported as not taken, by path.
#[cfg(unix)]
#[test]
fn drop_zones_take_regular_files_only() {
    let p = TestProject::example(None);
    let outside = p.keys_dir.path().join("secret.csv");
    std::fs::write(&outside, format!("{POLICE_HEADER}DDSP-X;02/11/2026 04:01;vol;43,3;5,4;4;Secret Person;0612;x\n"))
        .unwrap();
    let zone = p.path().join("sources/data/ddsp");
    std::os::unix::fs::symlink(&outside, zone.join("incidents_link.csv")).unwrap();
    std::os::unix::fs::symlink(p.keys_dir.path(), zone.join("incidents_dir.csv")).unwrap();
    let fifo = zone.join("incidents_fifo.csv");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let out = p.run(&["ingest", "ddsp_incidents"]);
    let err = stderr(&out);
    assert!(err.contains("incidents_link.csv") && err.contains("symbolic link"), "{err}");
    assert!(err.contains("incidents_fifo.csv") && err.contains("not a regular file"), "{err}");
    assert!(err.contains("incidents_dir.csv"), "{err}");
    // The regular files were taken; nothing of the linked file was.
    assert_eq!(count(&p, "bronze.ddsp_incidents"), "n\n1485\n");
    let found = sql_csv(&p, "SELECT count(*) AS n FROM bronze.ddsp_incidents WHERE incident_id = 'DDSP-X'");
    assert_eq!(found, "n\n0\n");
}

/// A location outside the declared drop zones, through `..` or a link, or a drop zone holding the keys or the
/// warehouse, is a validation error naming the field.
#[test]
fn locations_must_stay_inside_drop_zones() {
    let p = TestProject::example(None);
    let manifest = std::fs::read_to_string(p.path().join("sources/ddsp_incidents.yaml")).unwrap();
    let keys_dir = p.keys_dir.path().display().to_string();
    let at = format!(
        "sources/ddsp_incidents.yaml:{}:",
        manifest.lines().position(|l| l.starts_with("connector:")).unwrap() + 1
    );
    for location in ["sources/data/../../elsewhere".to_string(), keys_dir.clone(), "sources/data/escape".to_string()] {
        #[cfg(unix)]
        if location.ends_with("escape") {
            let _ = std::os::unix::fs::symlink(p.keys_dir.path(), p.path().join("sources/data/escape"));
        }
        p.write(
            "sources/ddsp_incidents.yaml",
            manifest.replace("location: sources/data/ddsp", &format!("location: \"{location}\"")),
        );
        let out = p.run(&["validate"]);
        assert_eq!(out.status.code(), Some(1), "{location} accepted");
        let err = stderr(&out);
        assert!(err.contains(&at) && err.contains("outside the declared drop zones"), "{location}: {err}");
    }
    p.write("sources/ddsp_incidents.yaml", &manifest);
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    for zones in [format!("[sources/data, \"{keys_dir}\"]"), "[sources/data, .]".to_string()] {
        p.write("lakehouse.yaml", yaml.replace("drop_zones: [sources/data]", &format!("drop_zones: {zones}")));
        let out = p.run(&["validate"]);
        assert_eq!(out.status.code(), Some(1), "{zones} accepted");
        let err = stderr(&out);
        assert!(err.contains("drop_zones.1") && err.contains("overlaps"), "{zones}: {err}");
    }
}

/// `var()` renders SQL literals: a value cannot change the query, and a quote in a value is data.
#[test]
fn vars_are_sql_literals() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let injected = "x' OR '1'='1";
    let out = run_ok(
        &p,
        &["compile", "--select", "gold.incidents_weather_daily", "--var", &format!("weather_station={injected}")],
    );
    assert!(out.contains("station = 'x'' OR ''1''=''1'"), "{out}");
    let out =
        run_ok(&p, &["transform", "--select", "gold.incidents_weather_daily", "--var", "weather_station=L'Estaque"]);
    assert!(out.contains("gold.incidents_weather_daily"), "{out}");
    // A number where the default is a number.
    let out = p.run(&["compile", "--var", "hotspot_cell_meters=1000 OR 1=1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is not a number"), "{}", stderr(&out));
}

/// A different key under the same id (another user's `create_if_missing` file) cannot write pseudonyms into a
/// table made with the first one; a new key under a new id is a rotation and is accepted.
#[test]
fn a_table_refuses_another_key_under_the_same_id() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    let original = std::fs::read_to_string(p.key_file()).unwrap();
    let other = "0b".repeat(32);
    std::fs::write(p.key_file(), original.replace(POLICE_KEY_HEX, &other)).unwrap();
    p.write(
        "sources/data/ddsp/incidents_2026-11-22.csv",
        format!("{POLICE_HEADER}DDSP-2026-990001;22/11/2026 23:10;accident;43,29;5,38;1;A B;0612;x\n"),
    );
    let out = p.run(&["ingest", "ddsp_incidents"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("another key under the same id") && err.contains("`police` key t1:"), "{err}");
    assert!(!err.contains(&other) && !err.contains(POLICE_KEY_HEX), "no key material in errors");
    assert_eq!(count(&p, "bronze.ddsp_incidents"), "n\n1485\n", "nothing was written");
    // Rotation: the new key under a new id.
    std::fs::write(
        p.key_file(),
        original.replace(&format!("police t1 {POLICE_KEY_HEX}"), &format!("police t2 {other}")),
    )
    .unwrap();
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    assert_eq!(count(&p, "bronze.ddsp_incidents"), "n\n1486\n");
    let ids = sql_csv(
        &p,
        "SELECT DISTINCT split_part(reporter_name_key_id, ':', 1) AS id FROM bronze.ddsp_incidents ORDER BY id",
    );
    assert_eq!(ids, "id\nt1\nt2\n");
}

/// A generalization finer than the project's minimum does not mask: a 1 m grid cell is the position itself.
#[test]
fn generalizations_finer_than_the_minimum_do_not_mask() {
    let p = TestProject::example(None);
    run_ok(&p, &["validate"]);
    let out = p.run(&["validate", "--var", "hotspot_cell_meters=1"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("transforms/silver/ddsp_incidents.sql")
            && err.contains("exposes bronze.ddsp_incidents.lat (pii: quasi)"),
        "{err}"
    );
    assert!(err.contains("geo_cell of at least 200 m"), "{err}");
    // The project sets its own minimum.
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        yaml.replace(
            "  domains: [police, fire, citizens]\n",
            "  domains: [police, fire, citizens]\n  min_generalization: { cell_meters: 10000 }\n",
        ),
    );
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1), "5 km cells are finer than 10 km");
}

/// `pii: sensitive` columns (free text) cannot reach silver or gold without a privacy function.
#[test]
fn sensitive_columns_cannot_reach_silver() {
    let p = TestProject::example(None);
    p.write(
        "transforms/silver/notes.sql",
        "SELECT incident_id, upper(notes) AS notes FROM {{ source('ddsp_incidents') }}\n",
    );
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("transforms/silver/notes.sql") && err.contains("bronze.ddsp_incidents.notes (pii: sensitive)"),
        "{err}"
    );
}

/// The SQL a run executes is checked, not only the full rendering: an incremental branch that exposes a
/// quasi-identifier fails the run and publishes nothing.
#[test]
fn the_incremental_rendering_is_privacy_checked() {
    let p = TestProject::example(None);
    p.write(
        "transforms/silver/places.sql",
        "{{ config(materialized='incremental', unique_key='incident_id') }}\n\
         SELECT incident_id,\n\
         {% if is_incremental() %} CAST(lat AS VARCHAR) {% else %} geo_cell(lat, lon, 1000) {% endif %} AS place\n\
         FROM {{ source('ddsp_incidents') }}\n",
    );
    run_ok(&p, &["run"]);
    let before = count(&p, "silver.places");
    p.write(
        "sources/data/ddsp/incidents_2026-11-22.csv",
        format!("{POLICE_HEADER}DDSP-2026-990001;22/11/2026 23:10;accident;43,29;5,38;1;A B;0612;x\n"),
    );
    let out = p.run(&["run"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("silver.places") && err.contains("privacy: column `place` exposes bronze.ddsp_incidents.lat"),
        "{err}"
    );
    assert_eq!(count(&p, "silver.places"), before, "nothing published");
}
