//! Bad input never loses a record: bad records land in the quarantine with file, line, reason and the raw text
//! (encrypted); unreadable files are not taken and are tried again.

use std::io::Write;

use lakehouse::ingest::{IngestError, ingest_source};
use lakehouse_tests::*;

use crate::ingest::{POLICE_PROJECT, ingest_all};

const CSV_MANIFEST: &str = r#"version: 1
name: feed
description: t
owner: ddsp
agreement: C-1
schedule: "*/15 * * * *"
connector: { kind: files, location: drop }
format: { kind: csv, delimiter: ";", encoding: ENCODING }
columns:
  id: { type: string, key: true }
  at: { type: timestamp, format: "%d/%m/%Y %H:%M" }
  category: { type: string, values: [vol, rixe] }
  n: { type: int, range: [0, 10] }
  who: { type: string, pii: direct, domain: police }
on_bad_record: POLICY
retention: 1 year
"#;

fn feed(encoding: &str, policy: &str) -> TestProject {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    p.write("sources/feed.yaml", CSV_MANIFEST.replace("ENCODING", encoding).replace("POLICY", policy));
    std::fs::create_dir_all(p.path().join("drop")).unwrap();
    p
}

async fn quarantine(p: &TestProject) -> Vec<Vec<String>> {
    let q = p.warehouse_url("bronze", "feed__quarantine");
    query_rows(&q, "SELECT regexp_replace(source_file, '^.*/', '') AS file, line, record, \"column\", reason FROM t ORDER BY source_file, record").await
}

#[tokio::test]
async fn malformed_csv_records_are_quarantined_with_reasons() {
    let p = feed("utf-8", "quarantine");
    p.write(
        "drop/a.csv",
        "id;at;category;n;who\n\
         1;01/11/2026 10:00;vol;1;Ana\n\
         2;31/11/2026 10:00;vol;1;Bob\n\
         3;01/11/2026 10:00;cambriolage;1;Cy\n\
         4;01/11/2026 10:00;vol;11;Di\n\
         5;01/11/2026 10:00;vol\n\
         ;01/11/2026 10:00;vol;1;Ed\n\
         6;01/11/2026 10:00;rixe;x;Flo\n\
         7;\"01/11/2026\n10:00\";vol;1;Guy;extra\n\
         8;01/11/2026 11:00;rixe;2;Hal\n",
    );
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (9, 2, 7));
    assert_eq!(
        quarantine(&p).await,
        rows(&[
            &["a.csv", "3", "2", "at", "not a timestamp in format `%d/%m/%Y %H:%M`"],
            &["a.csv", "4", "3", "category", "not one of the 2 allowed values"],
            &["a.csv", "5", "4", "n", "out of range [0, 10]"],
            &["a.csv", "6", "5", "", "expected 5 fields, found 3"],
            &["a.csv", "7", "6", "id", "required but missing"],
            &["a.csv", "8", "7", "n", "not an integer"],
            &["a.csv", "9", "8", "", "expected 5 fields, found 6"],
        ])
    );
    // The raw record is stored encrypted, and decrypts to the original line with the quarantine key.
    let q = p.warehouse_url("bronze", "feed__quarantine");
    let batches = query(&q, "SELECT raw, raw_key_id FROM t WHERE record = 3").await;
    let raw = arrow::compute::cast(batches[0].column(0), &arrow::datatypes::DataType::Binary).unwrap();
    let raw = raw.as_any().downcast_ref::<arrow::array::BinaryArray>().unwrap().value(0).to_vec();
    assert!(!String::from_utf8_lossy(&raw).contains("cambriolage"));
    let keys = lakehouse::privacy::KeyRing::parse(&std::fs::read_to_string(p.key_file()).unwrap(), "test").unwrap();
    let plain = lakehouse::privacy::decrypt(keys.get("quarantine").unwrap(), &raw).unwrap();
    assert_eq!(String::from_utf8(plain).unwrap(), "3;01/11/2026 10:00;cambriolage;1;Cy");
}

#[tokio::test]
async fn wrong_encoding_is_quarantined_per_record() {
    // Declared UTF-8, but the partner sent Windows-1252: records with accents cannot be decoded.
    let p = feed("utf-8", "quarantine");
    let text = "id;at;category;n;who\n1;01/11/2026 10:00;vol;1;Ana\n2;01/11/2026 10:00;vol;1;Hélène\n";
    p.write("drop/a.csv", encoding_rs::WINDOWS_1252.encode(text).0);
    // A two-byte character cut by a delimiter: the record's fields, put end to end, make valid UTF-8, but the
    // field `category` on its own does not.
    p.write("drop/b.csv", b"id;at;category;n;who\n3;01/11/2026 10:00;vol\xC3;\xA91;Cy\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (3, 1, 2));
    let q = quarantine(&p).await;
    assert_eq!(q.len(), 2);
    assert_eq!(q[0][3], "who");
    assert!(q[0][4].starts_with("invalid UTF-8") && q[0][4].contains("format.encoding"), "{q:?}");
    assert_eq!(q[1][..4], ["b.csv", "2", "1", "category"]);
    assert!(q[1][4].starts_with("invalid UTF-8"), "{q:?}");
    // Declared right, the same bytes parse.
    let p = feed("windows-1252", "quarantine");
    p.write("drop/a.csv", encoding_rs::WINDOWS_1252.encode(text).0);
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.written, r.records.quarantined), (2, 0));
}

#[tokio::test]
async fn header_only_files_are_taken_with_no_records_and_empty_ones_wait() {
    let p = feed("utf-8", "quarantine");
    p.write("drop/empty.csv", "");
    p.write("drop/header.csv", "id;at;category;n;who\n");
    let r = &ingest_all(&p).await[0];
    // An empty file may be an upload that has not started writing: never taken.
    assert_eq!(r.waiting, ["empty.csv"]);
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.records.read, 0);
    assert_eq!(r.batch, Some(1));
    // Taken: the next run does not take them again.
    assert_eq!(ingest_all(&p).await[0].batch, None);
}

#[tokio::test]
async fn truncated_gzip_is_not_taken_and_is_retried() {
    let p = feed("utf-8", "quarantine");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut text = String::from("id;at;category;n;who\n");
    for i in 0..5000 {
        text.push_str(&format!("{i};01/11/2026 10:00;vol;1;Name {i}\n"));
    }
    gz.write_all(text.as_bytes()).unwrap();
    let full = gz.finish().unwrap();
    p.write("drop/a.csv.gz", &full[..full.len() / 2]);
    p.write("drop/b.csv", "id;at;category;n;who\nb1;01/11/2026 10:00;vol;1;Zoe\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(r.failed[0].path, "a.csv.gz");
    assert!(r.failed[0].reason.contains("cannot read the file"), "{}", r.failed[0].reason);
    assert_eq!(r.files.len(), 1);
    let url = p.warehouse_url("bronze", "feed");
    // None of the truncated file's rows landed, even those before the truncation.
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 1);
    // The partner re-sends the file whole: the next run takes it.
    p.write("drop/a.csv.gz", &full);
    let r = &ingest_all(&p).await[0];
    assert!(r.failed.is_empty());
    assert_eq!(r.records.written, 5000);
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 5001);
    // And no orphan Parquet file of the failed attempt is left in the table directory.
    let table_dir = p.path().join("warehouse/bronze/feed");
    let parquet = files_under(&table_dir).into_iter().filter(|f| f.extension().is_some_and(|e| e == "parquet")).count();
    let referenced = open_table(&url).await.get_file_uris().unwrap().count();
    assert_eq!(parquet, referenced);
}

#[tokio::test]
async fn a_header_without_a_declared_column_is_not_taken() {
    let p = feed("utf-8", "quarantine");
    p.write("drop/a.csv", "id;date;category;n;who\n1;01/11/2026 10:00;vol;1;Ana\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!(r.failed.len(), 1);
    assert!(r.failed[0].reason.contains("lacks the declared column(s) `at`"), "{}", r.failed[0].reason);
    assert_eq!(r.batch, None);
}

#[tokio::test]
async fn on_bad_record_fail_commits_nothing() {
    let p = feed("utf-8", "fail");
    p.write("drop/a.csv", "id;at;category;n;who\n1;01/11/2026 10:00;vol;1;Ana\n2;bad;vol;1;Bob\n");
    let lh = p.load();
    let err = ingest_source(&lh, &lh.project.sources[0]).await.unwrap_err();
    assert!(matches!(err, IngestError::BadRecord(_)), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("a.csv line 3") && msg.contains("column `at`") && msg.contains("nothing was committed"),
        "{msg}"
    );
    assert!(!msg.contains("Bob") && !msg.contains("bad;"), "values must not appear in errors: {msg}");
    // A failed first run leaves no table behind (not even an empty version 0), and no data file.
    let bronze_dir = p.path().join("warehouse/bronze");
    assert_eq!(files_under(&bronze_dir), Vec::<std::path::PathBuf>::new());
    // Repaired, the file lands; a run with nothing new then keeps the tables.
    p.write("drop/a.csv", "id;at;category;n;who\n1;01/11/2026 10:00;vol;1;Ana\n");
    let r = ingest_source(&lh, &lh.project.sources[0]).await.unwrap();
    assert_eq!((r.records.written, r.records.quarantined), (1, 0));
    let url = p.warehouse_url("bronze", "feed");
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 1);
    assert!(!bronze_dir.join("feed__quarantine").exists(), "no quarantine without a bad record");
}

/// A source without files yet has empty bronze and ledger tables, so that models reading it run.
#[tokio::test]
async fn a_source_without_files_has_an_empty_table() {
    let p = feed("utf-8", "quarantine");
    let lh = p.load();
    let r = ingest_source(&lh, &lh.project.sources[0]).await.unwrap();
    assert_eq!((r.batch, r.bronze_version), (None, Some(0)));
    let url = p.warehouse_url("bronze", "feed");
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 0);
    let ledger = p.warehouse_url("bronze", "feed__files");
    assert_eq!(query_i64(&ledger, "SELECT count(*) FROM t").await, 0);
}

#[tokio::test]
async fn json_problems_are_quarantined_or_reported() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    let manifest = |name: &str, format: &str| {
        format!(
            "version: 1\nname: {name}\ndescription: t\nowner: ddsp\nagreement: C\nschedule: \"0 * * * *\"\n\
             connector: {{ kind: files, location: drop/{name} }}\nformat: {format}\ncolumns:\n  id: {{ type: string, required: true }}\n  \
             n: {{ type: int, from: a.b }}\nretention: 1 year\n"
        )
    };
    p.write("sources/lines.yaml", manifest("lines", "{ kind: ndjson }"));
    p.write("sources/doc.yaml", manifest("doc", "{ kind: json, records: items }"));
    p.write("drop/lines/1.ndjson", "{\"id\": \"x\", \"a\": {\"b\": 3}}\n{\"id\": \"y\", \"a\": \n\n[1]\n{\"a\": {\"b\": \"4\"}}\n{\"id\": \"z\", \"a\": {\"b\": \"4\"}}\n");
    p.write("drop/doc/good.json", r#"{"items": [{"id": "a", "a": {"b": 1}}, 7, {"id": "b", "a": {"b": "x"}}]}"#);
    p.write("drop/doc/bad.json", r#"{"items": [{"id": "a""#);
    p.write("drop/doc/nopath.json", r#"{"records": []}"#);
    let reports = ingest_all(&p).await;
    let doc = reports.iter().find(|r| r.source == "doc").unwrap();
    let lines = reports.iter().find(|r| r.source == "lines").unwrap();
    assert_eq!((lines.records.read, lines.records.written, lines.records.quarantined), (5, 1, 4));
    let q = p.warehouse_url("bronze", "lines__quarantine");
    // A syntax error names the file line and the column within it.
    assert_eq!(
        query_rows(&q, "SELECT line, \"column\", reason FROM t ORDER BY line").await,
        rows(&[
            &["2", "", "truncated JSON at line 2 column 17"],
            &["4", "", "the line is not a JSON object"],
            &["5", "id", "required but missing"],
            &["6", "n", "expected a number, found a string (`coerce: true` reads it through its text)"],
        ])
    );
    assert_eq!((doc.records.read, doc.records.written, doc.records.quarantined), (3, 1, 2));
    let mut failed: Vec<_> = doc.failed.iter().map(|f| (f.path.as_str(), f.reason.as_str())).collect();
    failed.sort();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, "bad.json");
    assert!(failed[0].1.contains("not a JSON document"), "{}", failed[0].1);
    assert_eq!(failed[1].0, "nopath.json");
    assert!(failed[1].1.contains("no `items` in the document"), "{}", failed[1].1);
}

#[tokio::test]
async fn a_missing_drop_zone_is_a_clear_error() {
    let p = feed("utf-8", "quarantine");
    std::fs::remove_dir(p.path().join("drop")).unwrap();
    let lh = p.load();
    let err = ingest_source(&lh, &lh.project.sources[0]).await.unwrap_err();
    assert!(err.is_user_error());
    assert!(err.to_string().contains("the drop zone directory does not exist"), "{err}");
}

/// Line numbers are right whatever the line ends (the csv crate counts `\r\n` files one line short).
#[tokio::test]
async fn quarantine_line_numbers_with_crlf_line_ends() {
    let p = feed("utf-8", "quarantine");
    p.write(
        "drop/a.csv",
        "id;at;category;n;who\r\n1;01/11/2026 10:00;vol;1;Ana\r\n2;bad;vol;1;Bob\r\n3;01/11/2026 10:00;vol;1\r\n",
    );
    ingest_all(&p).await;
    assert_eq!(
        quarantine(&p).await,
        rows(&[
            &["a.csv", "3", "2", "at", "not a timestamp in format `%d/%m/%Y %H:%M`"],
            &["a.csv", "4", "3", "", "expected 5 fields, found 4"],
        ])
    );
}

/// JSON values must have their column's JSON type at every level, unless the column says `coerce: true`; a
/// path must run through objects. Each wrong type is a type error naming the column (and where on the path),
/// never the value.
#[tokio::test]
async fn json_values_of_the_wrong_type_are_type_errors() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    p.write(
        "sources/feed.yaml",
        "version: 1\nname: feed\ndescription: t\nowner: ddsp\nagreement: C\nschedule: \"0 * * * *\"\n\
         connector: { kind: files, location: drop }\nformat: { kind: ndjson }\ncolumns:\n  \
         id: { type: string, required: true }\n  \
         zip: { type: string, values: [\"13001\", \"13201\"] }\n  \
         lat: { type: double, from: place.lat }\n  \
         ok: { type: bool }\n  \
         victim: { type: string, from: victim.name }\n  \
         count: { type: int, coerce: true }\n  \
         tags: { type: string, coerce: true }\n  \
         at: { type: timestamp }\n  \
         local_at: { type: timestamp, timezone: Europe/Paris }\n\
         retention: 1 year\n",
    );
    p.write(
        "drop/1.ndjson",
        concat!(
            r#"{"id": "a", "zip": "13201", "place": {"lat": 43.3}, "ok": true, "victim": {"name": "x"}, "count": "7", "tags": ["p", "q"]}"#,
            "\n",
            r#"{"id": "b", "zip": 13201}"#,
            "\n",
            r#"{"id": "c", "place": {"lat": "43.3"}}"#,
            "\n",
            r#"{"id": "d", "place": "Vieux-Port"}"#,
            "\n",
            r#"{"id": "e", "victim": "Jean"}"#,
            "\n",
            r#"{"id": "f", "ok": "yes"}"#,
            "\n",
            r#"{"id": "g", "zip": {"code": "13001"}}"#,
            "\n",
            r#"{"id": 8}"#,
            "\n",
            r#"{"id": "i", "count": 12, "tags": "one", "place": null}"#,
            "\n",
            r#"{"id": "j", "at": "2026-11-10T18:00:00"}"#,
            "\n",
            r#"{"id": "k", "at": "2026-11-10T18:00:00+01:00", "local_at": "2026-11-10T18:00:00"}"#,
            "\n",
        ),
    );
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (11, 3, 8));
    let q = p.warehouse_url("bronze", "feed__quarantine");
    let coerce = " (`coerce: true` reads it through its text)";
    assert_eq!(
        query_rows(&q, "SELECT line, \"column\", reason FROM t ORDER BY line").await,
        rows(&[
            &["2", "zip", &format!("expected a string, found a number{coerce}")],
            &["3", "lat", &format!("expected a number, found a string{coerce}")],
            &["4", "lat", "place: expected an object, found a string"],
            &["5", "victim", "victim: expected an object, found a string"],
            &["6", "ok", &format!("expected a boolean, found a string{coerce}")],
            &["7", "zip", "expected a string, found an object"],
            &["8", "id", &format!("expected a string, found a number{coerce}")],
            &[
                "10",
                "at",
                "a timestamp without an offset (`Z` or `±hh:mm`): declare the column's `timezone` to read local times",
            ],
        ])
    );
    // `coerce: true` reads "7" as an int and an array as JSON text.
    let bronze = p.warehouse_url("bronze", "feed");
    assert_eq!(
        query_rows(&bronze, "SELECT id, count, tags FROM t ORDER BY id").await,
        rows(&[&["a", "7", "[\"p\",\"q\"]"], &["i", "12", "one"], &["k", "", ""]])
    );
    // A declared zone reads a local time in it; an offset is an instant (both 17:00 UTC here).
    assert_eq!(
        query_rows(&bronze, "SELECT CAST(at AS VARCHAR) AS a, CAST(local_at AS VARCHAR) AS l FROM t WHERE id = 'k'")
            .await,
        rows(&[&["2026-11-10T17:00:00Z", "2026-11-10T17:00:00Z"]])
    );
}
