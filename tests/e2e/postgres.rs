//! The `postgres` connector against the real PostgreSQL server of the tests (`ci/start-postgres.sh`): a table read
//! incrementally in one snapshot with its cursor committed with the rows, exact types, rows inserted and updated
//! between runs, crashes in the middle of a read and between commits, every refusal before a row is read, and no
//! password or clear identifier in the lake or in what the runs print.

use lakehouse_tests::*;

/// The password put in the connection string: the test server trusts local connections and ignores it, so it
/// can be a canary.
const PASSWORD: &str = "s3cret-pg-canary";
/// Every driver's name starts with it: a direct identifier, never in clear in the lake.
const NAME_CANARY: &str = "Canary-Dupont";

const PROJECT: &str = "version: 1
name: test
partners:
  - { id: transit, name: Transit operator, kind: external }
privacy:
  domains: [citizens]
  keys: { from: file, path: KEYFILE }
";

fn pg_base() -> String {
    std::env::var("LAKEHOUSE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// The connection string the connector is given: the test server's, with the canary password.
fn pg_url() -> String {
    let mut url = url::Url::parse(&pg_base()).unwrap();
    url.set_password(Some(PASSWORD)).unwrap();
    url.to_string()
}

fn psql(sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([pg_base().as_str(), "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql (PostgreSQL client) must be installed: ci/test.sh installs it");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A schema of its own per test, dropped at the end.
struct Schema(String);

impl Schema {
    /// `positions`: `rows` vehicle positions, one a minute from 2024-03-01 08:00 UTC.
    fn with_positions(rows: usize) -> Schema {
        let name = format!("pull_{}", &uuid_like()[..12]);
        psql(&format!(
            "CREATE SCHEMA {name};
             CREATE TABLE {name}.positions (
               id text PRIMARY KEY, vehicle int, driver text, lat double precision, fare numeric(20, 2),
               seen_at timestamp, updated_at timestamptz NOT NULL, stops int[], extra jsonb);"
        ));
        let s = Schema(name);
        s.insert(0, rows, "2024-03-01 08:00:00+00");
        s
    }

    /// Rows `from..from+n`, updated one a minute from `start`.
    fn insert(&self, from: usize, n: usize, start: &str) {
        psql(&format!(
            "INSERT INTO {s}.positions
             SELECT 'p' || lpad(i::text, 4, '0'), i % 17, '{NAME_CANARY} ' || i, 43.6 + i / 10000.0,
                    123456789012345678.00 + i * 1.25, timestamp '2024-03-01 08:00' + i * interval '1 minute',
                    timestamptz '{start}' + (i - {from}) * interval '1 minute', ARRAY[i, i + 1],
                    jsonb_build_object('k', i)
             FROM generate_series({from}, {last}) i",
            s = self.0,
            last = from + n - 1
        ));
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = std::process::Command::new("psql")
            .args([pg_base().as_str(), "-X", "-q", "-c", &format!("DROP SCHEMA IF EXISTS {} CASCADE", self.0)])
            .output();
    }
}

fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
    format!("{:016x}{:016x}", h.finish(), std::process::id())
}

/// A source reading `schema.positions` with the given connector lines (indented under `connector:`).
fn manifest(schema: &Schema, connector: &str, columns: &str, load: &str) -> String {
    format!(
        "version: 1
name: transit_positions
description: vehicle positions from the transit operator's database
owner: transit
agreement: CONV-2025-03
schedule: \"*/5 * * * *\"
connector:
  kind: postgres
  url_env: TRANSIT_PG_URL
{connector}
columns:
{columns}
load: {load}
retention: 1 year
",
        connector = connector.replace("SCHEMA", &schema.0)
    )
}

const COLUMNS: &str = "  id: { type: string, key: true }
  vehicle: { type: int, required: true }
  driver: { type: string, pii: direct, domain: citizens }
  lat: { type: double }
  fare: { type: decimal, precision: 20, scale: 2 }
  seen_at: { type: timestamp, timezone: Europe/Paris }
  updated_at: { type: timestamp }
  stops: { type: list, items: int }
  extra: { type: json }";

const INCREMENTAL: &str = "  table: SCHEMA.positions
  cursor: { column: updated_at, lookback: 1 hour }
  batch_rows: 100";

fn project(text: String) -> TestProject {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write("sources/transit_positions.yaml", text);
    p
}

fn ingest(p: &TestProject) -> std::process::Output {
    p.command(&["ingest"]).env("TRANSIT_PG_URL", pg_url()).output().unwrap()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// No canary in any file of the warehouse.
fn assert_no_canary(p: &TestProject) {
    for file in files_under(&p.path().join("warehouse")) {
        let bytes = std::fs::read(&file).unwrap();
        for canary in [NAME_CANARY, PASSWORD] {
            assert!(!contains(&bytes, canary), "{canary} in {}", file.display());
        }
    }
}

#[tokio::test]
async fn a_table_is_read_incrementally_in_one_snapshot_exactly_once_with_exact_types() {
    let schema = Schema::with_positions(250);
    let p = project(manifest(&schema, INCREMENTAL, COLUMNS, "{ mode: upsert }"));
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let bronze = p.warehouse_url("bronze", "transit_positions");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 250);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 250);
    // 250 rows, 100 a unit: three archived units, three ledger rows with the cursor's high-water mark.
    let ledger = p.warehouse_url("bronze", "transit_positions__files");
    assert_eq!(query_i64(&ledger, "SELECT count(*) FROM t").await, 3);
    let positions = query_rows(&ledger, "SELECT DISTINCT position FROM t").await;
    assert_eq!(positions, rows(&[&["2024-03-01 12:09:00+00"]]));
    // Types as PostgreSQL holds them: 20 exact digits, a local time read in the column's zone (08:01 in Paris is
    // 07:01 UTC), an array, a JSON document.
    let row = query_rows(
        &bronze,
        "SELECT CAST(fare AS VARCHAR), CAST(date_part('hour', seen_at) AS BIGINT), CAST(stops AS VARCHAR), extra, \
         CAST(vehicle AS VARCHAR) FROM t WHERE id = 'p0001'",
    )
    .await;
    assert_eq!(row, rows(&[&["123456789012345679.25", "7", "[1, 2]", "{\"k\":1}", "1"]]));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t WHERE length(driver) = 64").await, 250);

    // Rows inserted and updated between runs: the next run reads from the mark minus the lookback.
    schema.insert(250, 5, "2024-03-01 13:00:00+00");
    psql(&format!(
        "UPDATE {}.positions SET vehicle = -3, updated_at = '2024-03-01 13:30:00+00' WHERE id = 'p0003'",
        schema.0
    ));
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 255);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 255);
    assert_eq!(query_i64(&bronze, "SELECT vehicle FROM t WHERE id = 'p0003'").await, -3);
    let positions = query_rows(&ledger, "SELECT DISTINCT position FROM t WHERE batch = 2").await;
    assert_eq!(positions, rows(&[&["2024-03-01 13:30:00+00"]]));
    // From 11:09 (12:09 minus the hour): the 61 rows of 11:09 to 12:09 again, the 5 new ones and p0003, one unit.
    assert_eq!(query_i64(&ledger, "SELECT sum(records_read) FROM t WHERE batch = 2").await, 61 + 5 + 1);

    // Neither the password nor a driver's name anywhere in the lake, nor in what the run printed.
    assert_no_canary(&p);
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(PASSWORD) && !text.contains(NAME_CANARY), "{text}");
    }
    let archive = files_under(&p.path().join("warehouse/archive/transit_positions"));
    assert_eq!(archive.len(), 4, "{archive:?}");
    assert!(archive.iter().all(|f| f.to_string_lossy().ends_with(".csv.gz.aes")), "{archive:?}");
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_read_or_between_commits_loses_and_duplicates_nothing() {
    let schema = Schema::with_positions(250);
    let connector = INCREMENTAL.replace("batch_rows: 100", "batch_rows: 50");
    let p = project(manifest(&schema, &connector, COLUMNS, "{ mode: upsert }"));
    let bronze = p.warehouse_url("bronze", "transit_positions");
    // The process dies once the first unit of the read is archived.
    let out = p
        .command(&["ingest"])
        .env("TRANSIT_PG_URL", pg_url())
        .env("LAKEHOUSE_FAULT", "after-first-unit")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault point did not stop the run");
    let archive = p.path().join("warehouse/archive/transit_positions");
    let orphans = files_under(&archive);
    assert_eq!(orphans.len(), 1, "the unit archived before the crash: {orphans:?}");
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 250);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 250);
    // The crashed run's unit, which no commit names, is swept by a later poll once an hour old.
    assert_eq!(files_under(&archive).len(), 6);
    settled(&orphans[0]);
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let left = files_under(&archive);
    assert!(!left.contains(&orphans[0]), "{left:?}");
    assert!(left.len() >= 5, "the committed units stay: {left:?}");

    // Changes, then a crash between the ledger's commit and bronze's; a row changes again meanwhile.
    schema.insert(250, 10, "2024-03-01 13:00:00+00");
    let update = |vehicle: i32, at: &str| {
        psql(&format!("UPDATE {}.positions SET vehicle = {vehicle}, updated_at = '{at}' WHERE id = 'p0010'", schema.0));
    };
    update(-10, "2024-03-01 13:30:00+00");
    let out = p
        .command(&["ingest"])
        .env("TRANSIT_PG_URL", pg_url())
        .env("LAKEHOUSE_FAULT", "after-ledger-commit")
        .output()
        .unwrap();
    assert!(!out.status.success(), "the fault point did not stop the run");
    update(-11, "2024-03-01 13:45:00+00");
    // The pending batch is completed from its archived units: the snapshot it was read in.
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("completed a batch left pending"), "{}", stdout(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 260);
    assert_eq!(query_i64(&bronze, "SELECT vehicle FROM t WHERE id = 'p0010'").await, -10);
    // The next run reads the later change.
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 260);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 260);
    assert_eq!(query_i64(&bronze, "SELECT vehicle FROM t WHERE id = 'p0010'").await, -11);
    assert_no_canary(&p);
}

#[tokio::test]
async fn what_cannot_land_fails_before_any_row_is_read_and_bad_rows_are_quarantined() {
    let schema = Schema::with_positions(20);
    let refused = |connector: &str, columns: &str, load: &str, env: Option<String>, words: &[&str]| {
        let p = project(manifest(&schema, connector, columns, load));
        let mut cmd = p.command(&["ingest"]);
        if let Some(url) = env {
            cmd.env("TRANSIT_PG_URL", url);
        } else {
            cmd.env_remove("TRANSIT_PG_URL");
        }
        let out = cmd.output().unwrap();
        let text = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!out.status.success(), "{words:?}: {text}");
        for w in words {
            assert!(text.contains(w), "`{w}` in: {text}");
        }
        assert!(text.contains("nothing was committed") || text.contains("export it before the run"), "{text}");
        assert!(!text.contains(PASSWORD) && !text.contains(NAME_CANARY), "{text}");
        assert!(files_under(&p.path().join("warehouse/archive")).is_empty(), "{words:?}: units left");
    };
    let table = "  table: SCHEMA.positions";
    let all = "{ mode: replace }";
    refused(table, COLUMNS, all, None, &["`TRANSIT_PG_URL`", "connector.url_env"]);
    let wrong_type = COLUMNS.replace("fare: { type: decimal, precision: 20, scale: 2 }", "fare: { type: int }");
    refused(
        table,
        &wrong_type,
        all,
        Some(pg_url()),
        &["column `fare` is declared `int` and `fare` is `numeric` in PostgreSQL", "declare `type: decimal`"],
    );
    let text_as_number =
        COLUMNS.replace("driver: { type: string, pii: direct, domain: citizens }", "driver: { type: double }");
    refused(table, &text_as_number, all, Some(pg_url()), &["column `driver` is declared `double`", "`text`"]);
    let gone = format!("{COLUMNS}\n  colour: {{ type: string }}");
    refused(table, &gone, all, Some(pg_url()), &["column `colour` reads `colour`, which the result does not have"]);
    let bad_initial = "  table: SCHEMA.positions\n  cursor: { column: updated_at, initial: \"last tuesday\" }";
    refused(
        bad_initial,
        COLUMNS,
        "{ mode: upsert }",
        Some(pg_url()),
        &["connector.cursor.initial `last tuesday` is not a value of `timestamptz`"],
    );
    let int_lookback = "  table: SCHEMA.positions\n  cursor: { column: vehicle, lookback: 1 hour }";
    refused(int_lookback, COLUMNS, "{ mode: upsert }", Some(pg_url()), &["lookback applies to timestamp and date"]);
    // A value PostgreSQL refuses: its message (which quotes the value) is not repeated.
    let cast = "  query: SELECT id, driver::int AS vehicle FROM SCHEMA.positions";
    let two = "  id: { type: string, key: true }\n  vehicle: { type: int }";
    refused(cast, two, all, Some(pg_url()), &["SQLSTATE 22P02", "its message is not repeated"]);
    let mut down = url::Url::parse(&pg_url()).unwrap();
    down.set_port(Some(1)).unwrap();
    refused(table, COLUMNS, all, Some(down.to_string()), &["cannot connect", "127.0.0.1:1/"]);
    // TLS asked of the local server: refused unless its certificate is trusted (or it has no TLS at all).
    let tls = format!("{}?sslmode=require", pg_url());
    refused(table, COLUMNS, all, Some(tls), &["cannot connect", "TLS"]);

    // A row that breaks a declared rule is quarantined with its reason; the others land.
    psql(&format!("UPDATE {}.positions SET vehicle = NULL WHERE id = 'p0004'", schema.0));
    let p = project(manifest(&schema, table, COLUMNS, all));
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let bronze = p.warehouse_url("bronze", "transit_positions");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 19);
    let quarantine = p.warehouse_url("bronze", "transit_positions__quarantine");
    let reasons = query_rows(&quarantine, "SELECT \"column\", reason FROM t").await;
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0][0], "vehicle", "{reasons:?}");
    // Read whole again (`replace`): the same 19.
    let out = ingest(&p);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 19);
    assert_no_canary(&p);
}

/// Under `lakehouse schedule` a table is read on its cron, each run from the committed position: rows inserted
/// while the scheduler runs land once.
#[tokio::test]
async fn the_scheduler_reads_a_table_on_its_schedule_from_the_committed_position() {
    use std::io::BufRead;
    let schema = Schema::with_positions(30);
    let text = manifest(&schema, INCREMENTAL, COLUMNS, "{ mode: upsert }")
        .replace("schedule: \"*/5 * * * *\"", "schedule: \"*/2 * * * * *\"");
    let p = project(text);
    let mut child = p
        .command(&["schedule"])
        .env("TRANSIT_PG_URL", pg_url())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let wait_for = |needle: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut seen = Vec::new();
        while std::time::Instant::now() < deadline {
            if let Ok(line) = rx.recv_timeout(std::time::Duration::from_millis(200)) {
                let found = line.contains(needle);
                seen.push(line);
                if found {
                    return;
                }
            }
        }
        panic!("`{needle}` not logged within 60 s:\n{}", seen.join("\n"));
    };
    wait_for("committed batch=1");
    schema.insert(30, 5, "2024-03-01 13:00:00+00");
    // Each run reads the lookback window again (a batch each time): wait for the one that holds the new rows.
    let bronze = p.warehouse_url("bronze", "transit_positions");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while query_i64(&bronze, "SELECT count(*) FROM t").await < 35 {
        assert!(std::time::Instant::now() < deadline, "the inserted rows did not land within 60 s");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }
    let status = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    assert!(status.success());
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 35);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 35);
    assert_no_canary(&p);
}
