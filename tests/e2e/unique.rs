//! `unique:` — a record whose key was already seen, earlier in the run or in bronze, is quarantined with where
//! the key was first seen; the first occurrence stays. Fixtures: an export with duplicate ids in one file and
//! across two drops, a composite key in NDJSON, a JSON document (records located by number), an upsert feed.

use std::io::Write;

use lakehouse_tests::*;

use crate::ingest::{POLICE_PROJECT, ingest_all};

fn source(format: &str, columns: &str, extra: &str) -> String {
    format!(
        "version: 1\nname: reports\ndescription: t\nowner: ddsp\nagreement: C-1\nschedule: \"0 * * * *\"\n\
         connector: {{ kind: files, location: drop }}\nformat: {format}\ncolumns:\n{columns}{extra}retention: 1 year\n"
    )
}

fn file_url(p: &TestProject, rel: &str) -> String {
    url::Url::from_file_path(p.path().join(rel)).unwrap().to_string()
}

async fn quarantine(p: &TestProject) -> Vec<Vec<String>> {
    let q = p.warehouse_url("bronze", "reports__quarantine");
    query_rows(&q, "SELECT source_file, CAST(line AS VARCHAR), \"column\", reason FROM t ORDER BY source_file, record")
        .await
}

#[tokio::test]
async fn duplicate_ids_in_one_file_and_across_drops_are_quarantined() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    let columns = "  report_id: { type: string, required: true, unique: true }\n  kind: { type: string }\n";
    p.write("sources/reports.yaml", source("{ kind: csv }", columns, ""));
    // One export repeats R1 (line 4); the next repeats R3 of the first (line 2).
    p.write("drop/a.csv", "report_id,kind\nR1,first\nR2,x\nR1,second\nR3,x\n");
    p.write("drop/b.csv", "report_id,kind\nR3,again\nR4,x\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (6, 4, 2));
    let (a, b) = (file_url(&p, "drop/a.csv"), file_url(&p, "drop/b.csv"));
    assert_eq!(
        quarantine(&p).await,
        vec![
            vec![a.clone(), "4".into(), "report_id".into(), format!("duplicate key (first seen at {a}:2)")],
            vec![b.clone(), "2".into(), "report_id".into(), format!("duplicate key (first seen at {a}:5)")],
        ]
    );
    // The first occurrence stays; each row knows its line.
    let bronze = p.warehouse_url("bronze", "reports");
    assert_eq!(
        query_rows(&bronze, "SELECT report_id, kind, CAST(_record AS VARCHAR) FROM t ORDER BY report_id").await,
        rows(&[&["R1", "first", "2"], &["R2", "x", "3"], &["R3", "x", "5"], &["R4", "x", "3"]])
    );
    // A later drop repeating a key already in bronze: quarantined with the bronze row's file and line.
    p.write("drop/c.csv", "report_id,kind\nR5,x\nR2,late\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (2, 1, 1));
    let c = file_url(&p, "drop/c.csv");
    assert_eq!(
        quarantine(&p).await.last().unwrap(),
        &vec![c, "3".to_string(), "report_id".into(), format!("duplicate key (first seen at {a}:3)")]
    );
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 5);
}

/// A file that is not taken (a truncated gzip, read halfway) leaves no key behind: the same key in the next
/// file is written, not called a duplicate of a record that never landed.
#[tokio::test]
async fn a_file_not_taken_leaves_no_key_behind() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    let columns = "  report_id: { type: string, unique: true }\n";
    p.write("sources/reports.yaml", source("{ kind: csv }", columns, ""));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut text = String::from("report_id\n");
    for i in 0..20_000 {
        text.push_str(&format!("R{i}\n"));
    }
    gz.write_all(text.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    p.write("drop/a.csv.gz", &gz[..gz.len() - 40]);
    p.write("drop/b.csv", "report_id\nR1\nR1\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!(r.failed.len(), 1, "{:?}", r.failed);
    assert_eq!(r.failed[0].path, "a.csv.gz");
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (2, 1, 1));
    let b = file_url(&p, "drop/b.csv");
    assert_eq!(quarantine(&p).await[0][3], format!("duplicate key (first seen at {b}:2)"));
}

/// `unique: [a, b]` over two columns of an NDJSON feed: the pair is the key, a null in it is not compared; a
/// JSON document locates records by number.
#[tokio::test]
async fn a_composite_key_and_records_located_by_number() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    let columns = "  accident_id: { type: int }\n  vehicle: { type: string }\n";
    p.write("sources/reports.yaml", source("{ kind: ndjson }", columns, "unique: [accident_id, vehicle]\n"));
    p.write(
        "drop/a.ndjson",
        "{\"accident_id\": 1, \"vehicle\": \"A\"}\n{\"accident_id\": 1, \"vehicle\": \"B\"}\n\
         {\"accident_id\": 2, \"vehicle\": null}\n{\"accident_id\": 2, \"vehicle\": null}\n\
         {\"accident_id\": 1, \"vehicle\": \"A\"}\n",
    );
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (5, 4, 1));
    let a = file_url(&p, "drop/a.ndjson");
    assert_eq!(
        quarantine(&p).await,
        vec![vec![
            a.clone(),
            "5".into(),
            String::new(),
            format!("duplicate key (accident_id, vehicle) (first seen at {a}:1)")
        ]]
    );

    let q = TestProject::empty();
    q.write_project(POLICE_PROJECT);
    let columns = "  id: { type: int, unique: true }\n";
    q.write("sources/reports.yaml", source("{ kind: json, records: items }", columns, ""));
    q.write("drop/a.json", "{\"items\": [{\"id\": 7}, {\"id\": 8}, {\"id\": 7}]}");
    let r = &ingest_all(&q).await[0];
    assert_eq!((r.records.written, r.records.quarantined), (2, 1));
    let a = file_url(&q, "drop/a.json");
    let reasons = quarantine(&q).await;
    assert_eq!(reasons[0][3], format!("duplicate key (first seen at {a}, record 1)"));
    let bronze = q.warehouse_url("bronze", "reports");
    assert_eq!(
        query_rows(&bronze, "SELECT CAST(id AS VARCHAR) AS i, CAST(_record AS VARCHAR) AS r FROM t ORDER BY i").await,
        rows(&[&["7", "1"], &["8", "2"]])
    );
}

/// `upsert` with `unique` on its key: a key twice in one batch is quarantined (not superseded); a later batch
/// updates the bronze row, as upsert does.
#[tokio::test]
async fn upsert_with_unique_quarantines_duplicates_within_a_batch() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    let columns = "  report_id: { type: string, key: true, unique: true }\n  kind: { type: string }\n";
    p.write("sources/reports.yaml", source("{ kind: csv }", columns, "load: { mode: upsert }\n"));
    p.write("drop/a.csv", "report_id,kind\nR1,first\nR1,second\nR2,x\n");
    let r = &ingest_all(&p).await[0];
    let c = r.records;
    assert_eq!((c.read, c.written, c.quarantined, c.superseded), (3, 2, 1, 0));
    p.write("drop/b.csv", "report_id,kind\nR1,corrected\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.written, r.records.quarantined), (1, 0));
    let bronze = p.warehouse_url("bronze", "reports");
    assert_eq!(
        query_rows(&bronze, "SELECT report_id, kind FROM t ORDER BY report_id").await,
        rows(&[&["R1", "corrected"], &["R2", "x"]])
    );
}

/// A pseudonymized column is compared by its pseudonym: two notations of one phone number are one key.
#[tokio::test]
async fn a_pseudonymized_unique_column_compares_normalized_values() {
    let p = TestProject::empty();
    p.write_project(&format!("{POLICE_PROJECT}  phone_country: FR\n"));
    let columns = "  phone: { type: string, pii: direct, domain: police, normalize: phone, unique: true }\n";
    p.write("sources/reports.yaml", source("{ kind: csv, delimiter: ';' }", columns, ""));
    p.write("drop/a.csv", "phone\n06 12 34 56 78\n+33 6 12 34 56 78\n07 00 00 00 00\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.written, r.records.quarantined), (2, 1));
    let a = file_url(&p, "drop/a.csv");
    assert_eq!(quarantine(&p).await[0][3], format!("duplicate key (first seen at {a}:2)"));
}

#[test]
fn validate_notes_a_key_that_does_not_prevent_duplicates() {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    let columns = "  report_id: { type: string, key: true }\n";
    p.write("sources/reports.yaml", source("{ kind: csv }", columns, ""));
    let out = run_ok(&p, &["validate"]);
    assert!(
        out.contains(
            "note: sources/reports.yaml:10:30: columns.report_id.key: in `append` mode `key: true` only makes `report_id` required"
        ),
        "{out}"
    );
    assert!(out.contains("add `unique: true` to `report_id`"), "{out}");
    p.write(
        "sources/reports.yaml",
        source("{ kind: csv }", "  report_id: { type: string, key: true, unique: true }\n", ""),
    );
    assert!(!run_ok(&p, &["validate"]).contains("note:"));
}
