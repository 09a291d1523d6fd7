//! Nested records: `type: json` keeps a value as JSON text; `explode` lands an array of each record as a child
//! table keyed by the record's key, its elements typed, checked and pseudonymized element by element. Fixture:
//! an agenda-like JSON feed whose events hold dates, phone numbers and tags in arrays.

use lakehouse_tests::*;

use crate::ingest::{hmac_hex, ingest_all};

const PROJECT: &str = "version: 1
name: test
drop_zones: [drop]
partners:
  - { id: ville, name: Ville, kind: internal }
privacy:
  domains: [citizens]
  phone_country: FR
  keys: { from: file, path: KEYFILE }
";

fn manifest(mode: &str) -> String {
    format!(
        r#"version: 1
name: events
description: Agenda
owner: ville
schedule: "0 * * * *"
connector: {{ kind: files, location: drop }}
format: {{ kind: json, records: data.events }}
columns:
  id: {{ type: string, key: true }}
  title: {{ type: string }}
  venue: {{ type: json }}
explode:
  dates:
    description: One row per date of the event
    columns:
      starts_at: {{ type: timestamp, from: start, required: true }}
      ends_at: {{ type: timestamp, from: end }}
  phones:
    from: contact.phones
    columns:
      phone: {{ type: string, from: ., pii: direct, domain: citizens, normalize: phone }}
  tags:
    columns:
      tag: {{ type: string, from: . }}
load: {{ mode: {mode} }}
retention: 1 year
"#
    )
}

const AGENDA: &str = r#"{"data": {"events": [
  {"id": "E1", "title": "Concert", "venue": {"name": "Dock", "capacity": 2000},
   "dates": [{"start": "2026-12-01T20:00:00+01:00", "end": "2026-12-01T23:00:00+01:00"}, {"start": "2026-12-02T20:00:00+01:00"}],
   "contact": {"phones": ["06 12 34 56 78", "+33 6 12 34 56 78"]}, "tags": ["music", "free"]},
  {"id": "E2", "title": "Market", "dates": [], "contact": {"phones": []}},
  {"id": "E3", "title": "Bad date", "dates": [{"start": "2026-12-03T08:00:00Z"}, {"start": "soon"}]},
  {"id": "E4", "title": "Bad phone", "contact": {"phones": ["not a phone"]}},
  {"id": "E5", "title": "Dates not a list", "dates": {"start": "2026-12-05T08:00:00Z"}}
]}}"#;

#[tokio::test]
async fn arrays_land_as_child_tables_pseudonymized_element_by_element() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write("sources/events.yaml", manifest("append"));
    p.write("drop/agenda.json", AGENDA);
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (5, 2, 3));
    // A record lands whole or not at all; the reason names the element and its field.
    let q = p.warehouse_url("bronze", "events__quarantine");
    let reasons =
        query_rows(&q, "SELECT CAST(record AS VARCHAR) AS r, \"column\", reason FROM t ORDER BY record").await;
    assert_eq!(reasons[0][..2], ["3".to_string(), "dates[1].starts_at".to_string()]);
    assert!(reasons[0][2].starts_with("not an ISO 8601 timestamp"), "{reasons:?}");
    assert_eq!(reasons[1][..2], ["4".to_string(), "contact.phones[0].phone".to_string()]);
    assert_eq!(reasons[2], ["5", "dates", "expected an array, found an object"]);
    for table in ["events__dates", "events__phones", "events__tags"] {
        let url = p.warehouse_url("bronze", table);
        assert_eq!(
            query_i64(&url, "SELECT count(*) FROM t WHERE id IN ('E3', 'E4', 'E5')").await,
            0,
            "{table}: nothing of a quarantined record"
        );
    }
    // The record keeps a nested object as compact JSON text.
    let bronze = p.warehouse_url("bronze", "events");
    assert_eq!(
        query_rows(&bronze, "SELECT id, venue FROM t ORDER BY id").await,
        rows(&[&["E1", r#"{"capacity":2000,"name":"Dock"}"#], &["E2", ""]])
    );
    let dates = p.warehouse_url("bronze", "events__dates");
    assert_eq!(
        query_rows(
            &dates,
            "SELECT id, CAST(_index AS VARCHAR) AS i, CAST(starts_at AS VARCHAR) AS s, CAST(ends_at AS VARCHAR) AS e \
             FROM t ORDER BY id, _index"
        )
        .await,
        rows(
            &[&["E1", "0", "2026-12-01T19:00:00Z", "2026-12-01T22:00:00Z"], &["E1", "1", "2026-12-02T19:00:00Z", ""],]
        )
    );
    // Each phone pseudonymized on its own, after normalization (two notations, one token); an empty array is no
    // row, not a token.
    let token = hmac_hex(CITIZENS_KEY_HEX, "+33612345678");
    let phones = p.warehouse_url("bronze", "events__phones");
    assert_eq!(
        query_rows(&phones, "SELECT id, CAST(_index AS VARCHAR) AS i, phone, phone_key_id FROM t ORDER BY _index")
            .await,
        vec![
            vec!["E1".to_string(), "0".into(), token.clone(), citizens_key_id()],
            vec!["E1".to_string(), "1".into(), token, citizens_key_id()],
        ]
    );
    let tags = p.warehouse_url("bronze", "events__tags");
    assert_eq!(query_rows(&tags, "SELECT tag FROM t ORDER BY _index").await, rows(&[&["music"], &["free"]]));
    // No clear phone number anywhere in the warehouse.
    for f in files_under(&p.path().join("warehouse")) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains("34 56 78"), "{}", f.display());
    }
}

/// `upsert`: a record's child rows become those of its last version; the other records' rows stay.
#[tokio::test]
async fn upsert_replaces_the_child_rows_of_the_records_it_updates() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write("sources/events.yaml", manifest("upsert"));
    p.write("drop/a.json", AGENDA);
    ingest_all(&p).await;
    p.write(
        "drop/b.json",
        r#"{"data": {"events": [
          {"id": "E1", "title": "Concert (one date)", "dates": [{"start": "2026-12-09T20:00:00+01:00"}]},
          {"id": "E6", "title": "New", "dates": [{"start": "2026-12-10T10:00:00+01:00"}], "tags": ["x"]},
          {"id": "E6", "title": "New, corrected", "dates": [{"start": "2026-12-11T10:00:00+01:00"}], "tags": []}
        ]}}"#,
    );
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.superseded), (3, 2, 1));
    let dates = p.warehouse_url("bronze", "events__dates");
    assert_eq!(
        query_rows(&dates, "SELECT id, CAST(starts_at AS VARCHAR) AS s FROM t ORDER BY id, _index").await,
        rows(&[&["E1", "2026-12-09T19:00:00Z"], &["E6", "2026-12-11T09:00:00Z"]])
    );
    // E1's phones and tags were not in its new version: gone; E6's superseded tag never landed.
    for table in ["events__phones", "events__tags"] {
        let url = p.warehouse_url("bronze", table);
        assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 0, "{table}");
    }
}

/// A crash after a child table's commit: the rerun completes the batch without duplicating its rows.
#[tokio::test]
async fn a_crash_between_child_and_bronze_commits_is_completed_once() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write("sources/events.yaml", manifest("append"));
    p.write("drop/agenda.json", AGENDA);
    let out = p.command(&["ingest"]).env("LAKEHOUSE_FAULT", "after-child-commit").output().unwrap();
    assert!(!out.status.success());
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dates = p.warehouse_url("bronze", "events__dates");
    assert_eq!(query_i64(&dates, "SELECT count(*) FROM t").await, 2);
    let bronze = p.warehouse_url("bronze", "events");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 2);
}

/// Models read a child table with `source('<source>__<child>')`; it follows its source in `lakehouse run`.
#[test]
fn models_read_child_tables() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write("sources/events.yaml", manifest("append"));
    p.write("drop/agenda.json", AGENDA);
    p.write(
        "transforms/silver/event_dates.sql",
        "SELECT e.id, e.title, d.starts_at FROM {{ source('events') }} e JOIN {{ source('events__dates') }} d ON d.id = e.id",
    );
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let rows = sql_csv(&p, "SELECT count(*) AS n FROM silver.event_dates");
    assert_eq!(rows.lines().nth(1), Some("2"), "{rows}");
    // Described like bronze: the record's key, the element's position, the element's columns with their types.
    let out = run_ok(&p, &["describe", "bronze.events__phones", "--format", "csv"]);
    assert!(out.contains("id,string,pii: none"), "{out}");
    assert!(out.contains("_index,int,position of the element in its array"), "{out}");
    assert!(out.contains("phone,string,pii: direct (keyed pseudonym)"), "{out}");
    assert!(run_ok(&p, &["tables"]).contains("bronze.events__dates"));
}

/// The key id pseudonyms carry: the key file's id with the key's fingerprint, computed here independently.
fn citizens_key_id() -> String {
    format!("t1:{}", &hmac_hex(CITIZENS_KEY_HEX, "lakehouse key fingerprint")[..12])
}

/// `type: json` in a CSV file: the text must be JSON, kept compact; other text is quarantined.
#[tokio::test]
async fn json_text_in_csv_is_checked_and_kept_compact() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write(
        "sources/events.yaml",
        "version: 1\nname: events\ndescription: t\nowner: ville\nschedule: \"0 * * * *\"\n\
         connector: { kind: files, location: drop }\nformat: { kind: csv, delimiter: \";\" }\ncolumns:\n  \
         id: { type: string }\n  payload: { type: json }\nretention: 1 year\n",
    );
    p.write("drop/a.csv", "id;payload\n1;{ \"a\" : [1, 2] }\n2;{not json\n3;\n");
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.written, r.records.quarantined), (2, 1));
    let bronze = p.warehouse_url("bronze", "events");
    assert_eq!(
        query_rows(&bronze, "SELECT id, payload FROM t ORDER BY id").await,
        rows(&[&["1", r#"{"a":[1,2]}"#], &["3", ""]])
    );
    let q = p.warehouse_url("bronze", "events__quarantine");
    assert_eq!(
        query_rows(&q, "SELECT CAST(line AS VARCHAR) AS l, \"column\", reason FROM t").await,
        rows(&[&["3", "payload", "not valid JSON (column 2 of the value)"]])
    );
}

/// `list` and `struct`: Arrow lists and structs, their items and fields typed and checked like columns; a fault
/// names the item or the field.
#[tokio::test]
async fn lists_and_structs_are_typed_item_by_item() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write(
        "sources/events.yaml",
        r#"version: 1
name: events
description: t
owner: ville
schedule: "0 * * * *"
connector: { kind: files, location: drop }
format: { kind: ndjson }
columns:
  id: { type: string, key: true }
  tags: { type: list, items: string, values: [music, free, outdoor] }
  scores: { type: list, items: int, range: [0, 10] }
  venue:
    type: struct
    fields:
      name: { type: string, required: true }
      capacity: { type: int }
      opens: { type: timestamp, from: hours.opens }
retention: 1 year
"#,
    );
    p.write(
        "drop/a.ndjson",
        concat!(
            r#"{"id": "A", "tags": ["music", "free"], "scores": [1, 2, null], "venue": {"name": "Dock", "capacity": 2000, "hours": {"opens": "2026-12-01T18:00:00Z"}}}"#,
            "\n",
            r#"{"id": "B", "tags": [], "venue": null}"#,
            "\n",
            r#"{"id": "C", "tags": ["jazz"]}"#,
            "\n",
            r#"{"id": "D", "scores": [1, "2"]}"#,
            "\n",
            r#"{"id": "E", "venue": {"capacity": 10}}"#,
            "\n",
            r#"{"id": "F", "tags": "music"}"#,
            "\n",
            r#"{"id": "G", "scores": [11]}"#,
            "\n",
        ),
    );
    let r = &ingest_all(&p).await[0];
    assert_eq!((r.records.read, r.records.written, r.records.quarantined), (7, 2, 5));
    let q = p.warehouse_url("bronze", "events__quarantine");
    assert_eq!(
        query_rows(&q, "SELECT CAST(line AS VARCHAR) AS l, \"column\", reason FROM t ORDER BY line").await,
        rows(&[
            &["3", "tags", "item 0: not one of the 3 allowed values"],
            &["4", "scores", "item 1: expected a number, found a string (`coerce: true` reads it through its text)"],
            &["5", "venue", "name: required but missing"],
            &["6", "tags", "expected a list (a JSON array), found a string"],
            &["7", "scores", "item 0: out of range [0, 10]"],
        ])
    );
    let bronze = p.warehouse_url("bronze", "events");
    assert_eq!(
        query_rows(
            &bronze,
            "SELECT id, CAST(array_length(tags) AS VARCHAR) AS n, tags[1] AS first, CAST(scores[3] IS NULL AS VARCHAR) AS s3, \
             venue['name'] AS venue, CAST(venue['capacity'] AS VARCHAR) AS cap, CAST(venue['opens'] AS VARCHAR) AS opens \
             FROM t ORDER BY id"
        )
        .await,
        rows(&[
            &["A", "2", "music", "true", "Dock", "2000", "2026-12-01T18:00:00Z"],
            &["B", "0", "", "true", "", "", ""],
        ])
    );
}

/// GeoJSON: one record per feature, its properties by path, its geometry as WKT with a representative point; a
/// feature with projected coordinates or an invalid geometry is quarantined (column `geometry`); a document in
/// another coordinate system is not taken, with the reason.
#[tokio::test]
async fn geojson_features_land_with_wkt_and_a_point_and_projected_ones_are_refused() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write(
        "sources/parcels.yaml",
        r#"version: 1
name: parcels
description: Urban planning parcels
owner: ville
schedule: "0 * * * *"
connector: { kind: files, location: drop, pattern: "*.geojson" }
format: { kind: geojson }
columns:
  parcel: { type: string, from: properties.ref, key: true }
  zone: { type: string, from: properties.zone }
  shape: { type: string, from: geometry }
  lat: { type: double, pii: quasi }
  lon: { type: double, pii: quasi }
retention: 5 years
"#,
    );
    p.write(
        "drop/parcels.geojson",
        r#"{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:OGC:1.3:CRS84"}},
 "features": [
  {"type": "Feature", "id": 1, "properties": {"ref": "P1", "zone": "UA", "height": 12},
   "geometry": {"type": "Point", "coordinates": [2.3522, 48.8566]}},
  {"type": "Feature", "properties": {"ref": "P2", "zone": "UB"},
   "geometry": {"type": "Polygon", "coordinates": [[[2.0, 48.0], [2.5, 48.0], [2.5, 49.0], [2.0, 48.0]]]}},
  {"type": "Feature", "properties": {"ref": "P3", "zone": null}, "geometry": null},
  {"type": "Feature", "properties": {"ref": "P4", "zone": "N"},
   "geometry": {"type": "Point", "coordinates": [652469.0, 6862035.0]}},
  {"type": "Feature", "properties": {"ref": "P5", "zone": "N"}, "geometry": {"type": "Point"}}
 ]}"#,
    );
    p.write(
        "drop/lambert.geojson",
        r#"{"type": "FeatureCollection", "crs": {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::2154"}},
 "features": [{"type": "Feature", "properties": {"ref": "L1"}, "geometry": {"type": "Point", "coordinates": [652469, 6862035]}}]}"#,
    );
    let out = p.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(1), "the Lambert-93 file is not taken: {}", stdout(&out));
    let err = stderr(&out);
    assert!(err.contains("lambert.geojson") && err.contains("not WGS 84") && err.contains("EPSG::2154"), "{err}");
    let bronze = p.warehouse_url("bronze", "parcels");
    let got = query_rows(&bronze, "SELECT parcel, zone, shape, lat, lon FROM t ORDER BY parcel").await;
    assert_eq!(
        got,
        rows(&[
            &["P1", "UA", "POINT (2.3522 48.8566)", "48.8566", "2.3522"],
            &["P2", "UB", "POLYGON ((2.0 48.0, 2.5 48.0, 2.5 49.0, 2.0 48.0))", "48.5", "2.25"],
            &["P3", "", "", "", ""],
        ])
    );
    let q = p.warehouse_url("bronze", "parcels__quarantine");
    let reasons = query_rows(&q, "SELECT \"column\", reason FROM t ORDER BY record").await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(reasons.iter().all(|r| r[0] == "geometry"), "{reasons:?}");
    assert!(reasons[0][1].contains("outside WGS 84"), "{reasons:?}");
    assert!(reasons[1][1].contains("a Point without `coordinates`"), "{reasons:?}");
    // A property no column declares is named in the ledger.
    let ledger = p.warehouse_url("bronze", "parcels__files");
    assert_eq!(query_rows(&ledger, "SELECT new_fields FROM t").await, rows(&[&["properties.height"]]));
}
