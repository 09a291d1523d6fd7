//! The run log stays bounded (issue 10): only attempts that did something are recorded, one commit per command
//! or scheduler check, and the scheduler's maintenance compacts it.

use lakehouse_tests::*;

fn commits(p: &TestProject) -> usize {
    let log = p.path().join("warehouse/system/runs/_delta_log");
    files_under(&log).iter().filter(|f| f.extension().is_some_and(|e| e == "json")).count()
}

fn count(p: &TestProject, sql: &str) -> String {
    sql_csv(p, sql).lines().nth(1).unwrap_or_default().to_string()
}

#[test]
fn up_to_date_models_are_not_recorded_and_each_phase_is_one_commit() {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    let (after_first, rows_first) = (commits(&p), count(&p, "SELECT count(*) FROM system.runs"));
    // The table's creation, then one commit for the ingests and one for the models.
    assert_eq!(after_first, 3);
    assert_eq!(rows_first, "17", "7 ingests and 10 models");
    // Nothing new: the ingests are recorded (a source checked on time), the up-to-date models are not.
    let out = run_ok(&p, &["run"]);
    assert!(out.contains("up to date"), "{out}");
    assert_eq!(commits(&p), after_first + 1);
    assert_eq!(count(&p, "SELECT count(*) FROM system.runs"), "24");
    assert_eq!(count(&p, "SELECT count(*) FROM system.runs WHERE status = 'up_to_date'"), "0");
    // The catalog indexes the attempts incrementally and agrees with the lake.
    assert_eq!(count(&p, "SELECT count(*) FROM catalog.attempts"), "24");
}

#[tokio::test]
async fn the_run_log_is_compacted_without_losing_a_record() {
    let p = TestProject::example(None);
    for day in 22..25 {
        let body = format!("DDSP-2026-99{day:04};{day}/11/2026 23:10;accident;43,29;5,38;1;A B;0612;x\n");
        p.write(&format!("sources/data/ddsp/incidents_2026-11-{day}.csv"), format!("{POLICE_HEADER}{body}"));
        let out = p.run(&["run"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let lh = p.load();
    let before = lakehouse::runlog::read(&lh.warehouse).await.unwrap();
    let url = lh.warehouse.table_url("system", "runs");
    let files = |t: &deltalake::DeltaTable| t.snapshot().unwrap().log_data().iter().count();
    let table = open_table(url.as_str()).await;
    assert!(files(&table) >= 6, "{}", files(&table));
    lakehouse::runlog::RUNS.compact(&lh.warehouse).await.unwrap();
    let table = open_table(url.as_str()).await;
    assert_eq!(files(&table), 1);
    assert_eq!(lakehouse::runlog::read(&lh.warehouse).await.unwrap(), before);
}
