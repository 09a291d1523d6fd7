//! Excel workbooks (`format: xlsx`) from a drop zone: the fixtures of `tests/fixtures/xlsx/` (written by its
//! `make.py`: one by openpyxl, one part by part with shared strings and the 1904 date system, a decompression
//! bomb, a truncated file).

use lakehouse_tests::*;

const PROJECT: &str = "version: 1
name: test
drop_zones: [drop]
partners:
  - { id: bmpm, name: Fire brigade, kind: external }
privacy:
  domains: [citizens]
  keys: { from: file, path: KEYFILE }
";

fn interventions(format: &str) -> String {
    format!(
        "version: 1
name: interventions
description: the fire brigade's interventions, sent as a workbook
owner: bmpm
agreement: CONV-2024-07
schedule: \"0 * * * *\"
connector: {{ kind: files, location: drop, pattern: \"*.xlsx\" }}
format: {format}
columns:
  id: {{ type: string, key: true }}
  at: {{ type: timestamp, from: date, timezone: Europe/Paris }}
  arrondissement: {{ type: int }}
  commune: {{ type: string }}
  victims: {{ type: int, from: victimes }}
  cost: {{ type: decimal, precision: 10, scale: 2, from: coût }}
  urgent: {{ type: bool }}
retention: 5 years
"
    )
}

fn project(manifest: String, files: &[&str]) -> TestProject {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write("sources/interventions.yaml", manifest);
    for f in files {
        p.write(&format!("drop/{f}"), std::fs::read(fixtures().join("xlsx").join(f)).unwrap());
    }
    std::fs::create_dir_all(p.path().join("drop")).unwrap();
    p
}

#[tokio::test]
async fn a_sheet_lands_typed_with_excel_dates_and_its_bad_rows_quarantined() {
    let p = project(interventions("{ kind: xlsx, sheet: Interventions, header_row: 2 }"), &["interventions.xlsx"]);
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let bronze = p.warehouse_url("bronze", "interventions");
    // Dates formatted as dates are local times (Paris, UTC+1 in March); the title row, the empty row are skipped;
    // 99999.99000000001 (a float as openpyxl wrote it) is the 99999.99 Excel shows.
    assert_eq!(
        query_rows(
            &bronze,
            "SELECT id, CAST(at AS VARCHAR), arrondissement, commune, victims, CAST(cost AS VARCHAR), urgent FROM t \
             ORDER BY id"
        )
        .await,
        rows(&[
            &["I-001", "2024-03-01T07:30:00Z", "1", "Marseille & Allauch", "2", "1250.50", "true"],
            &["I-002", "2024-03-01T22:59:59Z", "13", "Marseille", "0", "0.10", "false"],
            &["I-005", "2024-03-04T05:15:00Z", "16", "Marseille", "5", "99999.99", "true"],
        ])
    );
    // Text in a number column and an Excel error: quarantined, located by their row in the sheet.
    let q = p.warehouse_url("bronze", "interventions__quarantine");
    let bad = query_rows(&q, "SELECT CAST(line AS VARCHAR) AS l, \"column\", reason FROM t ORDER BY line").await;
    assert_eq!(bad.len(), 2, "{bad:?}");
    assert_eq!((bad[0][0].as_str(), bad[0][1].as_str()), ("5", "victims"), "{bad:?}");
    assert_eq!((bad[1][0].as_str(), bad[1][1].as_str()), ("6", "victims"), "{bad:?}");
    assert!(bad[1][2].contains("the cell holds the Excel error #N/A"), "{bad:?}");
    // The column no manifest declares is reported.
    let ledger = p.warehouse_url("bronze", "interventions__files");
    assert_eq!(query_rows(&ledger, "SELECT new_fields FROM t").await, rows(&[&["observateur"]]));
}

#[tokio::test]
async fn shared_strings_rich_text_and_the_1904_date_system_are_read_as_excel_shows_them() {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write(
        "sources/rain.yaml",
        "version: 1
name: rain
description: rain gauges, a workbook saved on a Mac
owner: bmpm
agreement: CONV-2024-07
schedule: \"0 * * * *\"
connector: { kind: files, location: drop, pattern: \"*.xlsx\" }
format: { kind: xlsx }
columns:
  station: { type: string, key: true }
  day: { type: date }
  rain_mm: { type: double }
retention: 5 years
",
    );
    p.write("drop/shared_1904.xlsx", std::fs::read(fixtures().join("xlsx/shared_1904.xlsx")).unwrap());
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let bronze = p.warehouse_url("bronze", "rain");
    // Rich-text runs joined, the phonetic guide left out, entities resolved; 43768 in the 1904 system; the sum's
    // binary noise gone; 1.2E1 read as 12.
    assert_eq!(
        query_rows(&bronze, "SELECT station, CAST(day AS VARCHAR), CAST(rain_mm AS VARCHAR) FROM t ORDER BY station")
            .await,
        rows(&[&["Pharo", "", "12.0"], &["Saint-Charles & étoile", "2023-11-01", "0.3"]])
    );
}

#[tokio::test]
async fn a_missing_sheet_a_truncated_workbook_and_a_bomb_are_not_taken_and_say_why() {
    let p = project(interventions("{ kind: xlsx, sheet: Budget }"), &["interventions.xlsx", "truncated.xlsx"]);
    let failed = |p: &TestProject, expected: &[&str]| {
        let out = p.run(&["ingest"]);
        assert_eq!(out.status.code(), Some(1), "{}\n{}", stdout(&out), stderr(&out));
        let err = stderr(&out);
        for e in expected {
            assert!(err.contains(e), "`{e}` in: {err}");
        }
    };
    failed(
        &p,
        &[
            "file=interventions.xlsx",
            "the workbook has no sheet `Budget` (its sheets: `Lisez-moi`, `Interventions`): check format.sheet",
            "file=truncated.xlsx",
            "not a readable Excel workbook (.xlsx)",
        ],
    );
    // The first sheet by default: here a notes sheet without the columns; and a decompression bomb.
    p.write("sources/interventions.yaml", interventions("{ kind: xlsx }"));
    p.write("drop/bomb.xlsx", std::fs::read(fixtures().join("xlsx/bomb.xlsx")).unwrap());
    failed(
        &p,
        &[
            "the header row of sheet `Lisez-moi` (row 1) lacks the declared column(s) `id`",
            "file=bomb.xlsx",
            "limits.max_ratio",
        ],
    );
    // Nothing landed; the files stay in the drop zone for the next run.
    let parquet = files_under(&p.path().join("warehouse/bronze"));
    assert!(!parquet.iter().any(|f| f.to_string_lossy().ends_with(".parquet")), "{parquet:?}");
    assert_eq!(files_under(&p.path().join("drop")).len(), 3);
    // The sheet by position: the second one.
    p.write("sources/interventions.yaml", interventions("{ kind: xlsx, sheet: 2, header_row: 2 }"));
    std::fs::remove_file(p.path().join("drop/truncated.xlsx")).unwrap();
    std::fs::remove_file(p.path().join("drop/bomb.xlsx")).unwrap();
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let bronze = p.warehouse_url("bronze", "interventions");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 3);
}
