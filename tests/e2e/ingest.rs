//! Ingestion of the example deployment and of small hand-written feeds whose expected rows are known.

use hmac::{Hmac, Mac};
use lakehouse::ingest::ingest_source;
use lakehouse_tests::*;
use sha2::Sha256;

pub fn hmac_hex(key_hex: &str, value: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hex::decode(key_hex).unwrap()).unwrap();
    mac.update(value.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

pub async fn ingest_all(p: &TestProject) -> Vec<lakehouse::ingest::IngestReport> {
    let lh = p.load();
    let mut out = Vec::new();
    for src in &lh.project.sources {
        out.push(ingest_source(&lh, src).await.unwrap_or_else(|e| panic!("{}: {e}", src.manifest.name)));
    }
    out
}

pub const POLICE_PROJECT: &str = "version: 1
name: test
drop_zones: [drop]
partners:
  - { id: ddsp, name: Police, kind: external }
privacy:
  domains: [police]
  keys: { from: file, path: KEYFILE }
";

#[tokio::test]
async fn example_deployment_lands_every_record_once() {
    let p = TestProject::example(None);
    let reports = ingest_all(&p).await;
    assert_eq!(reports.len(), 7);
    for r in &reports {
        let name = &r.source;
        assert!(r.records.read > 0, "{name} read nothing");
        assert_eq!(r.records.read, r.records.written + r.records.quarantined + r.records.superseded, "{name}");
        assert!(r.failed.is_empty(), "{name}: {:?}", r.failed);
        let bronze = p.warehouse_url("bronze", name);
        let rows = query_i64(&bronze, "SELECT count(*) FROM t").await as u64;
        let ledger = p.warehouse_url("bronze", &format!("{name}__files"));
        let files = query_i64(&ledger, "SELECT count(*) FROM t").await as usize;
        assert_eq!(files, r.files.len(), "{name}");
        let quarantined = query_i64(&ledger, "SELECT sum(records_quarantined) FROM t").await as u64;
        assert_eq!(quarantined, r.records.quarantined, "{name}");
        if r.records.quarantined > 0 {
            let q = p.warehouse_url("bronze", &format!("{name}__quarantine"));
            assert_eq!(query_i64(&q, "SELECT count(*) FROM t").await as u64, r.records.quarantined, "{name}");
        }
        // Upsert: the overlapping hours of the second meteo file supersede those of the first; the table holds
        // exactly the records written.
        assert_eq!(r.records.superseded, if name == "meteo_observations" { 12 } else { 0 }, "{name}");
        assert_eq!(rows, r.records.written, "{name}");
    }
    // The sample data's deliberate bad records: 5 per police file, 3 per fire-brigade file, ...
    let by_name = |n: &str| reports.iter().find(|r| r.source == n).unwrap().records;
    assert_eq!(by_name("ddsp_incidents").quarantined, 15);
    assert_eq!(by_name("bmpm_interventions").quarantined, 6);
    assert_eq!(by_name("meteo_observations").quarantined, 1);
    assert_eq!(by_name("ville_events").quarantined, 2);
    assert_eq!(by_name("ville_signalements").quarantined, 4);
    // The transit operator's workbook: a delay written `n/c`.
    assert_eq!(by_name("rtm_incidents").quarantined, 1);
    assert_eq!(by_name("ville_secteurs").quarantined, 0);

    // A second run finds nothing new and commits nothing.
    for r in ingest_all(&p).await {
        assert_eq!(r.batch, None, "{}", r.source);
        assert_eq!(r.records.read, 0);
    }
}

#[tokio::test]
async fn csv_values_are_typed_localized_and_pseudonymized() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    p.write(
        "sources/incidents.yaml",
        r#"version: 1
name: incidents
description: t
owner: ddsp
agreement: C-1
schedule: "*/15 * * * *"
connector: { kind: files, location: drop }
format: { kind: csv, delimiter: ";", encoding: windows-1252, decimal: "," }
columns:
  id: { type: string, key: true }
  at: { type: timestamp, format: "%d/%m/%Y %H:%M" }
  lat: { type: double }
  n: { type: int }
  ok: { type: bool }
  day: { type: date, format: "%d/%m/%Y" }
  amount: { type: decimal, precision: 8, scale: 2 }
  who: { type: string, pii: direct, domain: police, normalize: casefold }
  phone: { type: string, pii: direct, domain: police, normalize: digits }
  notes: { type: string }
retention: 1 year
"#,
    );
    let csv = "id;at;lat;n;ok;day;amount;who;phone;notes\r\n\
               A1;01/11/2026 10:30;43,29612;7;oui;02/11/2026;12,5;Jean DUPONT;06 12 34 56 78;Lefèvre à l'accueil\r\n\
               A2;15/07/2026 10:30;43,3;-2;non;15/07/2026;0,05; ;;\r\n";
    p.write("drop/a.csv", encoding_rs::WINDOWS_1252.encode(csv).0);
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (2, 2, 0));
    let url = p.warehouse_url("bronze", "incidents");
    let out = query_pretty(
        &url,
        "SELECT id, CAST(at AS VARCHAR) AS at, lat, n, ok, CAST(day AS VARCHAR) AS day, CAST(amount AS VARCHAR) AS amount, notes FROM t ORDER BY id",
    )
    .await;
    let expected = "\
+----+----------------------+----------+----+-------+------------+--------+---------------------+
| id | at                   | lat      | n  | ok    | day        | amount | notes               |
+----+----------------------+----------+----+-------+------------+--------+---------------------+
| A1 | 2026-11-01T09:30:00Z | 43.29612 | 7  | true  | 2026-11-02 | 12.50  | Lefèvre à l'accueil |
| A2 | 2026-07-15T08:30:00Z | 43.3     | -2 | false | 2026-07-15 | 0.05   |                     |
+----+----------------------+----------+----+-------+------------+--------+---------------------+";
    assert_eq!(out, expected);
    // Pseudonyms: HMAC-SHA-256 of the normalized value with the domain key, computed here independently.
    let who = query_pretty(&url, "SELECT id, who, who_key_id, phone, phone_key_id FROM t ORDER BY id").await;
    assert!(who.contains(&hmac_hex(POLICE_KEY_HEX, "jean dupont")), "{who}");
    assert!(who.contains(&hmac_hex(POLICE_KEY_HEX, "0612345678")), "{who}");
    // The key id is the key file's id with the key's fingerprint, computed here independently.
    let fingerprint = &hmac_hex(POLICE_KEY_HEX, "lakehouse key fingerprint")[..12];
    assert!(who.contains(&format!("| t1:{fingerprint} ")), "{who}");
    // A blank identifier stays null, with no key id.
    let nulls = query_i64(
        &url,
        "SELECT count(*) FROM t WHERE id = 'A2' AND who IS NULL AND who_key_id IS NULL AND phone IS NULL",
    )
    .await;
    assert_eq!(nulls, 1);
    // Metadata columns.
    let meta = query_i64(
        &url,
        "SELECT count(*) FROM t WHERE _run_id IS NOT NULL AND _ingested_at IS NOT NULL AND _source_file LIKE 'file://%/drop/a.csv'",
    )
    .await;
    assert_eq!(meta, 2);
}

#[tokio::test]
async fn new_files_append_as_new_batches() {
    let p = TestProject::example(None);
    ingest_all(&p).await;
    let url = p.warehouse_url("bronze", "ddsp_incidents");
    let before = query_i64(&url, "SELECT count(*) FROM t").await;
    let first = std::fs::read(p.path().join("sources/data/ddsp/incidents_2026-11-01.csv")).unwrap();
    p.write("sources/data/ddsp/incidents_2026-11-22.csv", first);
    let lh = p.load();
    let src = lh.project.select_sources(&["ddsp_incidents".into()]).unwrap()[0].clone();
    let r = ingest_source(&lh, &src).await.unwrap();
    assert_eq!(r.batch, Some(2));
    assert_eq!(r.files.len(), 1);
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, before + r.records.written as i64);
    let ledger = p.warehouse_url("bronze", "ddsp_incidents__files");
    assert_eq!(query_i64(&ledger, "SELECT count(*) FROM t WHERE batch = 2").await, 1);
}

#[tokio::test]
async fn replace_mode_keeps_only_the_latest_export() {
    let p = TestProject::example(None);
    ingest_all(&p).await;
    let url = p.warehouse_url("bronze", "ville_events");
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 59);
    p.write(
        "sources/data/agenda/agenda_2026-12.json",
        r#"{"data": {"events": [
            {"event_id": "E1", "title": "Marché de Noël", "starts_at": "2026-12-01T10:00:00+01:00", "lat": 43.2951, "lon": 5.374},
            {"event_id": "E2", "title": "Concert", "starts_at": "2026-12-05T20:00:00+01:00", "free_entry": false}
        ]}}"#,
    );
    ingest_all(&p).await;
    assert_eq!(
        query_pretty(&url, "SELECT event_id, title FROM t ORDER BY event_id").await,
        "+----------+----------------+\n| event_id | title          |\n+----------+----------------+\n| E1       | Marché de Noël |\n| E2       | Concert        |\n+----------+----------------+"
    );
}

#[tokio::test]
async fn upsert_mode_updates_by_key_and_last_record_wins() {
    let p = TestProject::example(None);
    let reports = ingest_all(&p).await;
    let meteo = reports.iter().find(|r| r.source == "meteo_observations").unwrap();
    // The 12 corrected records of the second file replace 12 of the first in the same batch: superseded, not
    // written, so that read = written + quarantined + superseded.
    assert_eq!(meteo.records.superseded, 12, "{:?}", meteo.records);
    assert!(meteo.records.balanced(), "{:?}", meteo.records);
    let url = p.warehouse_url("bronze", "meteo_observations");
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await as u64, meteo.records.written);
    // The second file corrected 2026-11-10 18:00..23:00 for both stations: the corrected values won.
    let corrected = query_i64(
        &url,
        "SELECT count(*) FROM t WHERE observed_at >= '2026-11-10T18:00:00Z' AND observed_at < '2026-11-11T00:00:00Z' AND wind_kmh = 12 AND humidity_pct = 70",
    )
    .await;
    assert_eq!(corrected, 12);
    let dup =
        query_i64(&url, "SELECT count(*) FROM (SELECT station, observed_at FROM t GROUP BY 1, 2 HAVING count(*) > 1)")
            .await;
    assert_eq!(dup, 0);
    // A later file with a key present twice: the last record wins.
    p.write(
        "sources/data/meteo/observations_03.csv",
        "station,observed_at,temperature_c,precipitation_mm,wind_kmh,humidity_pct\n\
         13055001,2026-11-01T00:00:00Z,1.0,0,1,1\n13055001,2026-11-01T00:00:00Z,2.0,0,2,2\n",
    );
    let before = query_i64(&url, "SELECT count(*) FROM t").await;
    let reports = ingest_all(&p).await;
    let meteo = reports.iter().find(|r| r.source == "meteo_observations").unwrap();
    let r = meteo.records;
    assert_eq!((r.read, r.written, r.quarantined, r.superseded), (2, 1, 0, 1));
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, before);
    // The ledger and the catalog keep the same counts.
    let ledger = p.warehouse_url("bronze", "meteo_observations__files");
    assert_eq!(
        query_rows(
            &ledger,
            "SELECT records_read, records_written, records_superseded FROM t WHERE path = 'observations_03.csv'"
        )
        .await,
        rows(&[&["2", "1", "1"]])
    );
    let runs = sql_csv(
        &p,
        "SELECT records_read, records_written, records_superseded FROM catalog.runs \
         WHERE target = 'bronze.meteo_observations' ORDER BY output_version DESC LIMIT 1",
    );
    assert_eq!(runs.lines().nth(1), Some("2,1,1"), "{runs}");
    let t = query_pretty(
        &url,
        "SELECT temperature_c, wind_kmh FROM t WHERE station = '13055001' AND observed_at = '2026-11-01T00:00:00Z'",
    )
    .await;
    assert!(t.contains("| 2.0           | 2        |"), "{t}");
}

#[tokio::test]
async fn parquet_files_are_read_by_column_name() {
    use arrow::array::{Float64Array, Int32Array, StringArray, TimestampMillisecondArray};
    use std::sync::Arc;
    let p = TestProject::empty();
    p.write_project("version: 1\nname: t\ndrop_zones: [drop]\npartners:\n  - { id: ville, name: Ville, kind: internal }\nprivacy:\n  keys: { from: file, path: KEYFILE }\n");
    p.write(
        "sources/counts.yaml",
        r#"version: 1
name: counts
description: Traffic sensor counts
owner: ville
schedule: "*/5 * * * *"
connector: { kind: files, location: drop, pattern: "*.parquet" }
format: { kind: parquet }
columns:
  sensor: { type: string, key: true }
  at: { type: timestamp }
  vehicles: { type: int, range: [0, 10000] }
  speed: { type: double }
retention: 1 year
"#,
    );
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("speed", arrow::datatypes::DataType::Float64, true),
        arrow::datatypes::Field::new("sensor", arrow::datatypes::DataType::Utf8, true),
        arrow::datatypes::Field::new("vehicles", arrow::datatypes::DataType::Int32, true),
        arrow::datatypes::Field::new(
            "at",
            arrow::datatypes::DataType::Timestamp(arrow::datatypes::TimeUnit::Millisecond, Some("UTC".into())),
            true,
        ),
    ]));
    let batch = arrow::record_batch::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Float64Array::from(vec![Some(42.5), None, Some(30.0)])),
            Arc::new(StringArray::from(vec!["S1", "S2", "S3"])),
            Arc::new(Int32Array::from(vec![120, 80, 20000])),
            Arc::new(
                TimestampMillisecondArray::from(vec![1_764_000_000_000, 1_764_000_060_000, 1_764_000_120_000])
                    .with_timezone("UTC"),
            ),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    p.write("drop/counts.parquet", buf);
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (3, 2, 1));
    let url = p.warehouse_url("bronze", "counts");
    assert_eq!(
        query_pretty(&url, "SELECT sensor, CAST(at AS VARCHAR) AS at, vehicles, speed FROM t ORDER BY sensor").await,
        "+--------+----------------------+----------+-------+\n| sensor | at                   | vehicles | speed |\n+--------+----------------------+----------+-------+\n| S1     | 2025-11-24T16:00:00Z | 120      | 42.5  |\n| S2     | 2025-11-24T16:01:00Z | 80       |       |\n+--------+----------------------+----------+-------+"
    );
    let q = p.warehouse_url("bronze", "counts__quarantine");
    assert_eq!(
        query_rows(&q, "SELECT record, \"column\", reason FROM t").await,
        rows(&[&["3", "vehicles", "out of range [0, 10000]"]])
    );
}

/// `from: [a, b]`: one column read from whichever of its accepted names a file holds (a national file renamed
/// its id column between years); a file holding two of them is not taken, with the reason.
#[tokio::test]
async fn a_column_accepts_every_name_its_field_had() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    p.write(
        "sources/accidents.yaml",
        "version: 1\nname: accidents\ndescription: t\nowner: ddsp\nagreement: C-1\nschedule: \"0 * * * *\"\n\
         connector: { kind: files, location: drop }\nformat: { kind: csv, delimiter: \";\" }\ncolumns:\n  \
         accident_id: { type: string, key: true, from: [Num_Acc, Accident_Id] }\n  \
         dep: { type: string }\nretention: 1 year\n",
    );
    p.write("drop/caract-2022.csv", "Num_Acc;dep\n202200000001;13\n202200000002;13\n");
    p.write("drop/caract-2023.csv", "Accident_Id;dep\n202300000001;13\n");
    p.write("drop/caract-both.csv", "Num_Acc;Accident_Id;dep\n1;2;13\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written), (3, 3));
    let bronze = p.warehouse_url("bronze", "accidents");
    assert_eq!(
        query_rows(&bronze, "SELECT accident_id FROM t ORDER BY accident_id").await,
        rows(&[&["202200000001"], &["202200000002"], &["202300000001"]])
    );
    // The ledger says which files used another name than the first.
    let ledger = p.warehouse_url("bronze", "accidents__files");
    assert_eq!(
        query_rows(&ledger, "SELECT path, read_as FROM t ORDER BY path").await,
        rows(&[&["caract-2022.csv", ""], &["caract-2023.csv", "accident_id ← Accident_Id"]])
    );
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(r.failed[0].path, "caract-both.csv");
    assert!(
        r.failed[0]
            .reason
            .contains("more than one accepted name of a column: `Num_Acc` and `Accident_Id` (column `accident_id`)"),
        "{}",
        r.failed[0].reason
    );
    // JSON records may each use either name; the ledger lists those a file used.
    p.write(
        "sources/crashes.yaml",
        "version: 1\nname: crashes\ndescription: t\nowner: ddsp\nagreement: C-1\nschedule: \"0 * * * *\"\n\
         connector: { kind: files, location: drop/json }\nformat: { kind: ndjson }\ncolumns:\n  \
         accident_id: { type: string, key: true, from: [Num_Acc, Accident_Id] }\nretention: 1 year\n",
    );
    p.write("drop/json/a.ndjson", "{\"Num_Acc\": \"1\"}\n{\"Accident_Id\": \"2\"}\n{\"Accident_Id\": \"3\"}\n");
    p.write("drop/json/b.ndjson", "{\"Num_Acc\": \"4\"}\n");
    let reports = ingest_all(&p).await;
    let r = reports.iter().find(|r| r.source == "crashes").unwrap();
    assert_eq!(r.records.written, 4);
    let ledger = p.warehouse_url("bronze", "crashes__files");
    assert_eq!(
        query_rows(&ledger, "SELECT path, read_as FROM t ORDER BY path").await,
        rows(&[&["a.ndjson", "accident_id ← Accident_Id"], &["b.ndjson", ""]])
    );
    // A file with none of the names says which ones were expected.
    p.write("drop/caract-2024.csv", "Identifiant;dep\n1;13\n");
    let r = &ingest_all(&p).await[0];
    assert!(
        r.failed.iter().any(|f| f.path == "caract-2024.csv" && f.reason.contains("`Num_Acc` or `Accident_Id`")),
        "{:?}",
        r.failed
    );
}

/// Schema drift: a field no column declares is named in the ledger and the log (`warn`, the default), passed over
/// in silence (`ignore`), or keeps its file from being taken (`fail`); in CSV headers and in JSON records alike.
#[tokio::test]
async fn fields_the_manifest_does_not_declare_are_reported_ignored_or_refused() {
    let manifest = |name: &str, format: &str, policy: &str| {
        format!(
            "version: 1
name: {name}
description: t
owner: ddsp
agreement: C-1
schedule: \"0 * * * *\"
connector: {{ kind: files, location: drop/{name} }}
format: {format}
columns:
  id: {{ type: string }}
  n: {{ type: int }}
{policy}retention: 1 year
"
        )
    };
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    let csv = "{ kind: csv, delimiter: \";\" }";
    let lines = "{ kind: ndjson }";
    p.write("sources/warned.yaml", manifest("warned", csv, ""));
    p.write("sources/quiet.yaml", manifest("quiet", csv, "on_new_field: ignore\n"));
    p.write("sources/strict.yaml", manifest("strict", csv, "on_new_field: fail\n"));
    p.write("sources/strict_lines.yaml", manifest("strict_lines", lines, "on_new_field: fail\n"));
    p.write("sources/warned_lines.yaml", manifest("warned_lines", lines, ""));
    for name in ["warned", "quiet", "strict"] {
        p.write(&format!("drop/{name}/a.csv"), "id;n;station;operator\nx;1;S1;O1\ny;2;S2;O2\n");
    }
    let records = "{\"id\": \"x\", \"n\": 1}\n{\"id\": \"y\", \"n\": 2, \"station\": \"S2\"}\n";
    p.write("drop/strict_lines/a.ndjson", records);
    p.write("drop/warned_lines/a.ndjson", records);
    let out = p.command(&["ingest"]).env("LAKEHOUSE_LOG", "warn").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "the strict sources' files are not taken: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("the field `station` is not declared (on_new_field: fail)"), "{err}");
    assert!(err.contains("a field no column declares"), "{err}");
    let new_fields = |name: &str| {
        let ledger = p.warehouse_url("bronze", &format!("{name}__files"));
        async move { query_rows(&ledger, "SELECT new_fields FROM t").await }
    };
    assert_eq!(new_fields("warned").await, rows(&[&["station, operator"]]));
    assert_eq!(new_fields("warned_lines").await, rows(&[&["station"]]));
    assert_eq!(new_fields("quiet").await, rows(&[&[""]]));
    for name in ["warned", "quiet", "warned_lines"] {
        assert_eq!(query_i64(&p.warehouse_url("bronze", name), "SELECT count(*) FROM t").await, 2, "{name}");
    }
    // A first run that takes no file of a source leaves no table of it.
    for name in ["strict", "strict_lines"] {
        assert!(!p.path().join(format!("warehouse/bronze/{name}/_delta_log")).exists(), "{name}");
    }
}
