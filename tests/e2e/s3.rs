//! The same pipeline on a real S3-compatible server (SeaweedFS from `ci/start-s3.sh`): warehouse and drop zone
//! on `s3://`, concurrent writers, crash recovery.

use lakehouse_tests::*;
use object_store::ObjectStoreExt;

use crate::ingest::ingest_all;

/// The example deployment with its warehouse on S3 and the police drop zone on S3.
pub(crate) async fn example_on_s3() -> (TestProject, String) {
    let prefix = s3_prefix("example");
    let p = TestProject::example(Some(&format!("{prefix}/lake")));
    let drops = url::Url::parse(&format!("{prefix}/drops/ddsp/")).unwrap();
    let (store, base) =
        object_store::parse_url_opts(&drops, lakehouse::storage::storage_options(&drops, &Default::default())).unwrap();
    for f in files_under(&repo().join("sources/data/ddsp")) {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let path = object_store::path::Path::from(format!("{}/{name}", base.as_ref()));
        store.put(&path, std::fs::read(&f).unwrap().into()).await.unwrap();
    }
    let manifest = std::fs::read_to_string(p.path().join("sources/ddsp_incidents.yaml"))
        .unwrap()
        .replace("location: sources/data/ddsp", &format!("location: \"{drops}\""));
    p.write("sources/ddsp_incidents.yaml", manifest);
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    // A short lock lease: a rerun after a crash waits for the dead process's lease that long.
    let yaml = yaml.replace("drop_zones: [sources/data]", &format!("drop_zones: [sources/data, \"{prefix}/drops/\"]"));
    p.write("lakehouse.yaml", format!("{yaml}storage: {{ lock_lease: 5 seconds }}\n"));
    (p, prefix)
}

#[tokio::test]
async fn example_deployment_on_s3() {
    let (p, prefix) = example_on_s3().await;
    let reports = ingest_all(&p).await;
    for r in &reports {
        assert!(r.failed.is_empty(), "{}: {:?}", r.source, r.failed);
        assert!(r.records.balanced(), "{}: {:?}", r.source, r.records);
    }
    let url = p.warehouse_url("bronze", "ddsp_incidents");
    assert!(url.starts_with(&prefix), "{url}");
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 1485);
    assert_eq!(query_i64(&url, "SELECT count(DISTINCT _source_file) FROM t").await, 3);
    let src = query_pretty(&url, "SELECT DISTINCT _source_file FROM t ORDER BY 1").await;
    assert!(src.contains("s3://") && src.contains("/drops/ddsp/incidents_2026-11-15.csv.gz"), "{src}");
    let meteo = p.warehouse_url("bronze", "meteo_observations");
    assert_eq!(query_i64(&meteo, "SELECT count(*) FROM t").await, 960);
    // Idempotent.
    for r in ingest_all(&p).await {
        assert_eq!(r.batch, None, "{}", r.source);
    }
}

#[tokio::test]
async fn concurrent_writers_on_one_s3_table() {
    let (p, prefix) = example_on_s3().await;
    // Processes take the source's lock (a lease created with a conditional PUT) in turn.
    let outs = run_concurrently(&p, 4, &["ingest", "ddsp_incidents"]);
    for o in &outs {
        assert!(o.status.success(), "{}", stderr(o));
    }
    // Without the lock, racing runs (in one process here) are kept apart by Delta's conditional commits: each
    // commits or fails with the clear concurrency error, and nothing is doubled.
    let lh = p.load();
    let src = lh.project.select_sources(&["ddsp_incidents".into()]).unwrap()[0].clone();
    let drops = url::Url::parse(&format!("{prefix}/drops/ddsp/")).unwrap();
    let (store, base) =
        object_store::parse_url_opts(&drops, lakehouse::storage::storage_options(&drops, &Default::default())).unwrap();
    let csv = format!("{POLICE_HEADER}DDSP-2026-990001;22/11/2026 23:10;accident;43,29;5,38;1;A B;0612;x\n");
    let path = object_store::path::Path::from(format!("{}/incidents_2026-11-22.csv", base.as_ref()));
    store.put(&path, csv.into_bytes().into()).await.unwrap();
    let races = futures::future::join_all((0..4).map(|_| lakehouse::ingest::ingest_source(&lh, &src))).await;
    for r in &races {
        if let Err(e) = r {
            assert!(e.to_string().contains("at the same time"), "{e}");
        }
    }
    assert!(races.iter().any(|r| r.as_ref().is_ok_and(|r| r.batch == Some(2))), "one run committed batch 2");
    let out = p.run(&["ingest", "ddsp_incidents"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let url = p.warehouse_url("bronze", "ddsp_incidents");
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 1486);
    assert_eq!(query_i64(&url, "SELECT count(DISTINCT incident_id) FROM t").await, 1486);
    let q = p.warehouse_url("bronze", "ddsp_incidents__quarantine");
    assert_eq!(query_i64(&q, "SELECT count(*) FROM t").await, 15);
    let ledger = p.warehouse_url("bronze", "ddsp_incidents__files");
    assert_eq!(query_i64(&ledger, "SELECT count(*) FROM t").await, 4);
}

#[tokio::test]
async fn crash_then_rerun_on_s3() {
    let (p, _) = example_on_s3().await;
    let out =
        p.command(&["ingest", "ddsp_incidents"]).env("LAKEHOUSE_FAULT", "after-quarantine-commit").output().unwrap();
    assert!(!out.status.success());
    let out = p.run(&["ingest", "ddsp_incidents"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let url = p.warehouse_url("bronze", "ddsp_incidents");
    assert_eq!(query_i64(&url, "SELECT count(*) FROM t").await, 1485);
    let q = p.warehouse_url("bronze", "ddsp_incidents__quarantine");
    assert_eq!(query_i64(&q, "SELECT count(*) FROM t").await, 15);
}

/// `lakehouse run` on an S3 warehouse: bronze, silver and gold, then an incremental run after a new file.
#[tokio::test]
async fn transform_pipeline_on_s3() {
    let (p, prefix) = example_on_s3().await;
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let lh = p.load();
    assert!(lh.warehouse.root().as_str().starts_with(&prefix));
    let counts = query_lake(
        &lh,
        "SELECT (SELECT count(*) FROM silver.ddsp_incidents) AS a, (SELECT count(*) FROM gold.incidents_by_arrondissement_period) AS b,
                (SELECT count(*) FROM gold.fire_response_times WHERE interventions < 11) AS c",
    )
    .await;
    assert_eq!(counts, rows(&[&["1485", "64", "0"]]));
    // A new police file in the S3 drop zone: the silver model runs incrementally.
    let drops = url::Url::parse(&format!("{prefix}/drops/ddsp/")).unwrap();
    let (store, base) =
        object_store::parse_url_opts(&drops, lakehouse::storage::storage_options(&drops, &Default::default())).unwrap();
    let csv = "numero_intervention;date_heure;nature;latitude;longitude;arrondissement;nom_declarant;tel_declarant;observations\n\
               DDSP-2026-990001;22/11/2026 23:10;tapage;43,29;5,38;1;Ana Lopez;06 00 00 00 01;\n";
    let path = object_store::path::Path::from(format!("{}/incidents_2026-11-22.csv", base.as_ref()));
    store.put(&path, csv.as_bytes().to_vec().into()).await.unwrap();
    let out = p.run(&["run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.starts_with("silver.ddsp_incidents ")).unwrap();
    assert!(line.contains("incremental"), "{text}");
    let n = query_lake(&lh, "SELECT count(*) FROM silver.ddsp_incidents").await;
    assert_eq!(n, rows(&[&["1486"]]));
    // The analyst's and the auditor's commands work on S3 too (tables are listed from the bucket).
    let out = p.run(&["sql", "--format", "csv", "SELECT count(*) AS n FROM silver.ddsp_incidents"]);
    assert_eq!(stdout(&out), "n\n1486\n", "{}", stderr(&out));
    let out = p.run(&["reproduce", "silver.ddsp_incidents", "--version", "2"]);
    assert!(stdout(&out).contains("IDENTICAL: 1486 rows"), "{}{}", stdout(&out), stderr(&out));
    let out = p.run(&["lineage", "silver.ddsp_incidents"]);
    assert!(
        stdout(&out).contains("drops/ddsp/incidents_2026-11-22.csv (batch 2: 1 read, 1 written, 0 quarantined)"),
        "{}",
        stdout(&out)
    );
    let out = p.run(&["tables"]);
    assert!(
        stdout(&out).lines().any(|l| l.starts_with("silver.ddsp_incidents ") && l.contains(" 2  ")),
        "{}",
        stdout(&out)
    );
}
