//! The catalog database on both backends (SQLite file, PostgreSQL server): filled by the commands (in full, then
//! with only the new table versions), and rebuilt from the lake alone to the same content.

use lakehouse_tests::*;

/// The PostgreSQL server of the tests (`ci/test.sh` starts one when none runs).
fn pg_base() -> String {
    std::env::var("LAKEHOUSE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn psql(sql: &str) {
    let out = std::process::Command::new("psql")
        .args([pg_base().as_str(), "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql (PostgreSQL client) must be installed: ci/test.sh installs it");
    assert!(out.status.success(), "psql {sql}: {}", String::from_utf8_lossy(&out.stderr));
}

async fn recorded_then_rebuilt(p: &TestProject, url: &str, forget: impl Fn()) {
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        yaml.replace("catalog: sqlite://./.lakehouse/catalog.db", &format!("catalog: \"{url}\"")),
    );
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = catalog::Catalog::open(url).await.unwrap().dump().await.unwrap();
    assert_eq!(first.tables.len(), 17, "{:?}", first.tables);
    assert_eq!(first.runs.len(), 17, "one run per table");
    // New police data: the next run's update adds only the new table versions.
    let body = "DDSP-2026-990001;22/11/2026 23:10;accident;43,29;5,38;1;A B;06;\n";
    p.write("sources/data/ddsp/incidents_2026-11-22.csv", format!("{POLICE_HEADER}{body}"));
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded = catalog::Catalog::open(url).await.unwrap().dump().await.unwrap();
    assert!(recorded.runs.len() > first.runs.len(), "new versions indexed");
    assert!(first.runs.iter().all(|r| recorded.runs.contains(r)), "earlier runs kept");
    assert!(recorded.lineage.iter().any(|l| l.target == "bronze.ddsp_incidents"
        && l.output_version == 2
        && l.input.ends_with("incidents_2026-11-22.csv")));
    // Table lineage pinned to versions: gold reads silver at the version it was built from.
    assert!(recorded.lineage.iter().any(|l| l.target == "gold.fire_response_times"
        && l.input == "silver.bmpm_interventions"
        && l.input_version == Some(1)));
    assert!(
        recorded
            .lineage
            .iter()
            .any(|l| l.target == "bronze.ddsp_incidents" && l.input.ends_with("incidents_2026-11-01.csv"))
    );
    // Column lineage with masking.
    assert!(recorded.column_lineage.iter().any(|c| c.output_table == "silver.ddsp_incidents"
        && c.output_column.as_deref() == Some("cell_1km")
        && c.input_column == "lat"
        && c.masked));
    // An attempt and the commit it made share the run id.
    let run = recorded.runs.iter().find(|r| r.target == "silver.ddsp_incidents").unwrap();
    assert!(
        recorded.attempts.iter().any(|a| a.run_id == run.run_id && a.status == "succeeded" && a.trigger == "manual")
    );
    // A documentation change with no new data: the next update opens no table but shows it.
    let manifest = std::fs::read_to_string(p.path().join("sources/ddsp_incidents.yaml")).unwrap();
    let documented =
        manifest.replace("    from: nature\n", "    from: nature\n    description: What the police recorded\n");
    assert_ne!(documented, manifest);
    p.write("sources/ddsp_incidents.yaml", documented);
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let recorded = catalog::Catalog::open(url).await.unwrap().dump().await.unwrap();
    let category = recorded.columns.iter().find(|c| c.table_name == "bronze.ddsp_incidents" && c.name == "category");
    assert_eq!(category.unwrap().description.as_deref(), Some("What the police recorded"));
    forget();
    let out = p.run(&["catalog", "rebuild"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("catalog rebuilt from the lake: 17 tables, "), "{}", stdout(&out));
    let rebuilt = catalog::Catalog::open(url).await.unwrap().dump().await.unwrap();
    assert_eq!(rebuilt, recorded);
}

#[tokio::test]
async fn sqlite_catalog_is_rebuilt_from_the_lake() {
    let p = TestProject::example(None);
    let file = p.path().join(".lakehouse/catalog.db");
    let url = format!("sqlite://{}", file.display());
    recorded_then_rebuilt(&p, &url, || std::fs::remove_file(&file).unwrap()).await;
}

#[tokio::test]
async fn postgres_catalog_is_rebuilt_from_the_lake() {
    let schema = format!(
        "lakehouse_test_{}",
        std::process::id() as u64 * 1000
            + u64::from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().subsec_millis())
    );
    psql(&format!("CREATE SCHEMA {schema}"));
    let url = format!("{}?options=-c%20search_path%3D{schema}", pg_base());
    let p = TestProject::example(None);
    recorded_then_rebuilt(&p, &url, || psql(&format!("DROP SCHEMA {schema} CASCADE; CREATE SCHEMA {schema}"))).await;
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
}

/// A catalog that cannot be reached (nothing listens on its port) costs a warning; the run succeeds and the lake
/// has its data.
#[test]
fn an_unreachable_catalog_is_a_warning() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let p = TestProject::example(None);
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        yaml.replace(
            "catalog: sqlite://./.lakehouse/catalog.db",
            &format!("catalog: \"postgres://lakehouse@127.0.0.1:{closed}/catalog\""),
        ),
    );
    let out = p.run(&["ingest", "ddsp_incidents"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("could not update the catalog"), "{}", stderr(&out));
    assert_eq!(sql_csv(&p, "SELECT count(*) > 0 AS some FROM bronze.ddsp_incidents"), "some\ntrue\n");
}
