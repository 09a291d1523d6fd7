//! The audit trail does not expire (issue 10): every table keeps its Delta log as long as the deployment's
//! `log_retention`, and an incremental model whose pinned input version can no longer be read rebuilds in full.

use lakehouse_tests::*;

/// Every table the pipeline creates — bronze, ledgers, quarantine, silver, gold, the run log — sets its log
/// retention explicitly (delta-rs would otherwise delete log entries older than 30 days). Without
/// `log_retention`, it follows the longest source retention, at least 10 years: here 10 years once the weather
/// source, kept `forever`, is left out.
#[tokio::test]
async fn every_table_keeps_its_log_for_the_log_retention() {
    let p = TestProject::example(None);
    std::fs::remove_file(p.path().join("sources/meteo_observations.yaml")).unwrap();
    std::fs::remove_file(p.path().join("transforms/silver/meteo_observations.sql")).unwrap();
    let _ = std::fs::remove_file(p.path().join("transforms/silver/meteo_observations.yaml"));
    std::fs::remove_file(p.path().join("transforms/gold/incidents_weather_daily.sql")).unwrap();
    let _ = std::fs::remove_file(p.path().join("transforms/gold/incidents_weather_daily.yaml"));
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lh = p.load();
    let mut seen = 0;
    for layer in ["bronze", "silver", "gold", "system"] {
        for name in lh.warehouse.list_tables(layer).await.unwrap() {
            let table = open_table(lh.warehouse.table_url(layer, &name).as_str()).await;
            let config = table.snapshot().unwrap().metadata().configuration().clone();
            assert_eq!(
                config.get("delta.logRetentionDuration").map(String::as_str),
                Some("interval 3660 days"),
                "{layer}.{name}: {config:?}"
            );
            assert_eq!(config.get("delta.enableExpiredLogCleanup").map(String::as_str), Some("true"), "{layer}.{name}");
            seen += 1;
        }
    }
    // Six sources with their ledgers, five with quarantined records (not the sectors' layer); four silver, four
    // gold models; the run log.
    assert_eq!(seen, 6 * 2 + 5 + 4 + 4 + 1, "bronze (with ledgers and quarantines), silver, gold, system");
}

/// A source retention longer than an explicit `log_retention` is refused; a source kept `forever` turns log
/// cleanup off.
#[test]
fn log_retention_is_validated_and_forever_keeps_everything() {
    let p = TestProject::example(None);
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write("lakehouse.yaml", format!("{yaml}log_retention: 1 year\n"));
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("sources/ddsp_incidents.yaml:")
            && err.contains("is longer than the project's `log_retention` (1 year)"),
        "{err}"
    );
    // Without `log_retention`, a source kept `forever` (the weather) keeps every log entry.
    p.write("lakehouse.yaml", &yaml);
    run_ok(&p, &["ingest", "meteo_observations"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let config = rt.block_on(async {
        let t = open_table(&p.warehouse_url("bronze", "meteo_observations")).await;
        t.snapshot().unwrap().metadata().configuration().clone()
    });
    assert_eq!(config.get("delta.enableExpiredLogCleanup").map(String::as_str), Some("false"), "{config:?}");
}

/// A log cleanup (checkpoint, then the older commit entries deleted, as delta-rs does past the retention):
/// the incremental model cannot read the input version it last read, so it rebuilds in full and says why.
#[test]
fn an_expired_input_version_means_a_full_rebuild_not_a_failure() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let body = "DDSP-2026-990001;22/11/2026 23:10;accident;43,29;5,38;1;A B;0612;x\n";
    p.write("sources/data/ddsp/incidents_2026-11-22.csv", format!("{POLICE_HEADER}{body}"));
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    let url = p.warehouse_url("bronze", "ddsp_incidents");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let version = rt.block_on(async {
        let t = open_table(&url).await;
        deltalake::checkpoints::create_checkpoint(&t, None).await.unwrap();
        t.version().unwrap()
    });
    let log = p.path().join("warehouse/bronze/ddsp_incidents/_delta_log");
    for v in 0..version {
        std::fs::remove_file(log.join(format!("{v:020}.json"))).unwrap();
    }
    let out = run_ok(&p, &["transform"]);
    assert!(
        out.contains("silver.ddsp_incidents: full rebuild: version") && out.contains("can no longer be read"),
        "{out}"
    );
    let counts = sql_csv(&p, "SELECT count(*) AS n FROM silver.ddsp_incidents");
    assert_eq!(counts, "n\n1486\n");
}
