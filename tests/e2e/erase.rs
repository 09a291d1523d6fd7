//! `lakehouse erase`: a person erased from bronze (two batches), the quarantine, silver and gold, with no file,
//! log entry or checkpoint left holding their pseudonyms, time travel to before the erasure impossible, evidence
//! in `system.erasures`; dry run, crash and resume, key rotation; on local disk and on S3.

use futures::TryStreamExt;
use lakehouse::manifest::Normalize;
use lakehouse::privacy::Pseudonymizer;
use lakehouse_tests::*;
use object_store::ObjectStoreExt;

const NAME: &str = "Zoé Erasmus-Canary";
const PHONE: &str = "06 99 88 77 66";

/// A police export with the person in two good records, one refused for its category and one that cannot be split
/// into fields (a field short), and one record of somebody else.
fn first_batch() -> String {
    let mut s = String::from(POLICE_HEADER);
    s.push_str(&format!("ERA-1;03/11/2026 10:00;vol;43,30;5,40;4;{NAME};{PHONE};sac vole\n"));
    s.push_str(&format!("ERA-2;03/11/2026 11:00;rixe;43,30;5,40;4;  zoé ERASMUS-canary ;{PHONE};\n"));
    s.push_str(&format!("ERA-3;03/11/2026 12:00;licorne;43,30;5,40;4;{NAME};{PHONE};\n"));
    s.push_str(&format!("ERA-4;03/11/2026 13:00;vol;43,30;5,40;{NAME};{PHONE};\n"));
    s.push_str("ERA-5;03/11/2026 14:00;vol;43,30;5,40;4;Paul Témoin;06 11 11 11 11;\n");
    s
}

fn second_batch() -> String {
    format!("{POLICE_HEADER}ERA-6;04/11/2026 09:00;tapage;43,31;5,41;5;{NAME};07 00 00 00 01;\n")
}

fn write_police(p: &TestProject, name: &str, text: &str) {
    p.write(&format!("sources/data/ddsp/{name}"), encoding_rs::WINDOWS_1252.encode(text).0);
}

/// The pseudonyms of the person under every key of `police`: their name (casefold) and both phone numbers.
fn tokens(p: &TestProject) -> Vec<String> {
    let lh = p.load();
    let mut out = Vec::new();
    for key in lh.keys.all("police").unwrap() {
        for (value, n) in [(NAME, Normalize::Casefold), (PHONE, Normalize::Digits), ("0700000001", Normalize::Digits)] {
            let mut hex = String::new();
            assert!(Pseudonymizer::new(key, n, None).pseudonym_into(value, &mut hex));
            out.push(hex);
        }
    }
    out
}

/// Every stored object of the warehouse (local or S3), with its bytes.
async fn stored(p: &TestProject) -> Vec<(String, Vec<u8>)> {
    let lh = p.load();
    let root = lh.warehouse.root().clone();
    let (store, prefix) = lh.warehouse.object_store(&root).unwrap();
    let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await.unwrap();
    let mut out = Vec::new();
    for m in metas {
        let bytes = store.get(&m.location).await.unwrap().bytes().await.unwrap();
        out.push((m.location.to_string(), bytes.to_vec()));
    }
    out
}

/// The stored objects holding one of `needles`.
async fn holding(p: &TestProject, needles: &[String]) -> Vec<String> {
    stored(p)
        .await
        .into_iter()
        .filter(|(_, bytes)| needles.iter().any(|n| bytes.windows(n.len()).any(|w| w == n.as_bytes())))
        .map(|(path, _)| path)
        .collect()
}

fn count_in(p: &TestProject, table: &str, column: &str, tokens: &[String]) -> i64 {
    let list = tokens.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",");
    let out = sql_csv(p, &format!("SELECT count(*) AS n FROM {table} WHERE {column} IN ({list})"));
    out.lines().nth(1).unwrap().trim().parse().unwrap()
}

fn evidence(p: &TestProject, request: &str) -> Vec<Vec<String>> {
    let rt = tokio::runtime::Handle::current();
    let url = p.warehouse_url("system", "erasures");
    tokio::task::block_in_place(|| {
        rt.block_on(query_rows(
            &url,
            &format!(
                "SELECT \"table\", action, CAST(sum(rows_deleted) AS BIGINT) FROM t WHERE request_id = '{request}' \
                 GROUP BY \"table\", action ORDER BY \"table\""
            ),
        ))
    })
}

/// Ingests the example and the person's two batches, builds the models.
fn landed(warehouse: Option<&str>) -> TestProject {
    let p = TestProject::example(warehouse);
    run_ok(&p, &["run"]);
    write_police(&p, "incidents_2026-11-20.csv", &first_batch());
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    write_police(&p, "incidents_2026-11-21.csv", &second_batch());
    run_ok(&p, &["run"]);
    p
}

async fn erases_everywhere(warehouse: Option<&str>) {
    let p = landed(warehouse);
    let tokens = tokens(&p);
    // Landed: three rows in bronze (two batches), two in the quarantine (one with its pseudonyms, one found by its
    // text), three in silver, and the files hold the pseudonyms.
    assert_eq!(count_in(&p, "bronze.ddsp_incidents", "reporter_name", &tokens), 3);
    assert_eq!(count_in(&p, "silver.ddsp_incidents", "reporter_token", &tokens), 3);
    assert!(!holding(&p, &tokens).await.is_empty());
    let bronze_url = p.warehouse_url("bronze", "ddsp_incidents");
    let bronze_before = open_table(&bronze_url).await.version().unwrap();
    let gold_url = p.warehouse_url("gold", "incidents_by_arrondissement_period");
    let gold_before = open_table(&gold_url).await.version().unwrap();

    // Dry run: the counts, nothing changed.
    let dry = run_ok(&p, &["erase", "--domain", "police", "--request", "DPO-2026-1", "--value", NAME, "--dry-run"]);
    assert!(dry.contains("8 rows would be deleted") && dry.contains("nothing was changed"), "{dry}");
    assert!(!dry.contains(NAME) && !dry.contains(&tokens[0]), "{dry}");
    assert_eq!(open_table(&bronze_url).await.version().unwrap(), bronze_before);
    assert_eq!(count_in(&p, "bronze.ddsp_incidents", "reporter_name", &tokens), 3);

    // The value from standard input (not in the process list or shell history).
    let mut child = p
        .command(&["erase", "--domain", "police", "--request", "DPO-2026-1", "--value-stdin", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{NAME}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!text.contains(NAME) && tokens.iter().all(|t| !text.contains(t)), "{text}");

    // Evidence: what was counted, per table.
    let rows_of = |table: &str| {
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["table"] == table)
            .map(|s| s["rows_deleted"].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(rows_of("bronze.ddsp_incidents"), 3);
    assert_eq!(rows_of("bronze.ddsp_incidents__quarantine"), 2);
    assert_eq!(rows_of("silver.ddsp_incidents"), 3);
    let ev = evidence(&p, "DPO-2026-1");
    assert!(ev.contains(&vec!["bronze.ddsp_incidents".into(), "delete".into(), "3".into()]), "{ev:?}");
    assert!(ev.contains(&vec!["bronze.ddsp_incidents__quarantine".into(), "delete".into(), "2".into()]), "{ev:?}");
    assert!(ev.contains(&vec!["silver.ddsp_incidents".into(), "delete".into(), "3".into()]), "{ev:?}");
    assert!(
        ev.contains(&vec!["gold.incidents_by_arrondissement_period".into(), "rebuild".into(), "0".into()]),
        "{ev:?}"
    );

    // Gone: no row, and no stored object (data file, log entry, checkpoint, evidence) holds a pseudonym.
    assert_eq!(count_in(&p, "bronze.ddsp_incidents", "reporter_name", &tokens), 0);
    assert_eq!(count_in(&p, "silver.ddsp_incidents", "reporter_token", &tokens), 0);
    assert_eq!(holding(&p, &tokens).await, Vec::<String>::new());
    // The other records stay: the other person's, and the example's.
    assert_eq!(sql_csv(&p, "SELECT count(*) AS n FROM bronze.ddsp_incidents WHERE incident_id = 'ERA-5'"), "n\n1\n");
    let quarantined = run_ok(&p, &["quarantine", "ddsp_incidents", "--raw"]);
    assert!(!quarantined.to_lowercase().contains("erasmus"), "{quarantined}");
    // No time travel to before the erasure: none of the versions before it can be loaded.
    for (url, before) in [(&bronze_url, bronze_before), (&gold_url, gold_before)] {
        let mut t = open_table(url).await;
        for v in 0..=before {
            assert!(t.load_version(v).await.is_err(), "{url} version {v} still loads");
        }
    }
    // The rebuilt gold table is what a rebuild from the erased silver gives.
    let gold = |p: &TestProject| {
        let mut lines: Vec<String> =
            sql_csv(p, "SELECT * FROM gold.incidents_by_arrondissement_period").lines().map(String::from).collect();
        lines.sort();
        lines
    };
    let after_erasure = gold(&p);
    run_ok(&p, &["transform", "--full-refresh", "--select", "gold.incidents_by_arrondissement_period"]);
    assert_eq!(gold(&p), after_erasure);
    // The pipeline goes on: a new file is taken, the models run.
    write_police(
        &p,
        "incidents_2026-11-22.csv",
        &format!("{POLICE_HEADER}ERA-7;05/11/2026 09:00;vol;43,31;5,41;5;X Y;;\n"),
    );
    run_ok(&p, &["run"]);
    assert_eq!(sql_csv(&p, "SELECT count(*) AS n FROM silver.ddsp_incidents WHERE incident_id = 'ERA-7'"), "n\n1\n");
    // Running the request again finds nothing more and changes nothing.
    let again = run_ok(&p, &["erase", "--domain", "police", "--request", "DPO-2026-1", "--value", NAME]);
    assert!(again.contains("Erasure DPO-2026-1"), "{again}");
    assert_eq!(evidence(&p, "DPO-2026-1"), ev);
}

#[tokio::test(flavor = "multi_thread")]
async fn erases_a_person_from_every_layer_with_evidence() {
    erases_everywhere(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn erases_a_person_on_s3() {
    erases_everywhere(Some(&s3_prefix("erase"))).await;
}

/// Killed between a table's deletion and its purge: the rerun of the same request purges it and goes on.
#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_erasure_is_resumed_by_running_it_again() {
    let p = landed(None);
    let tokens = tokens(&p);
    let args = ["erase", "--domain", "police", "--request", "DPO-2026-2", "--token", &tokens[0]];
    let crashed = p.command(&args).env("LAKEHOUSE_FAULT", "erase-after-delete").output().unwrap();
    assert!(!crashed.status.success(), "{}", stderr(&crashed));
    // Deleted from the current version, not yet from the files and the log.
    assert_eq!(count_in(&p, "bronze.ddsp_incidents", "reporter_name", &tokens), 0);
    assert!(!holding(&p, &tokens[..1]).await.is_empty());
    let out = run_ok(&p, &args);
    assert!(out.contains("Erasure DPO-2026-2"), "{out}");
    assert_eq!(holding(&p, &tokens[..1]).await, Vec::<String>::new());
    assert_eq!(count_in(&p, "silver.ddsp_incidents", "reporter_token", &tokens[..1]), 0);
    let ev = evidence(&p, "DPO-2026-2");
    // The evidence counts the rows the crashed attempt deleted (read from the deletion's log entry).
    assert!(ev.contains(&vec!["bronze.ddsp_incidents".into(), "delete".into(), "3".into()]), "{ev:?}");
    assert!(ev.contains(&vec!["silver.ddsp_incidents".into(), "delete".into(), "3".into()]), "{ev:?}");
    // By a pseudonym, the record that could not be split into fields is not found (it has none).
    assert!(ev.contains(&vec!["bronze.ddsp_incidents__quarantine".into(), "delete".into(), "1".into()]), "{ev:?}");
}

/// Rows pseudonymized before and after a key rotation are both found by the clear value.
#[tokio::test(flavor = "multi_thread")]
async fn erasure_finds_pseudonyms_of_rotated_keys() {
    let p = landed(None);
    let out = run_ok(&p, &["keys", "rotate", "police"]);
    assert!(out.contains("new key k") && !out.contains(POLICE_KEY_HEX), "{out}");
    let keys = std::fs::read_to_string(p.key_file()).unwrap();
    assert!(keys.contains(POLICE_KEY_HEX) && keys.matches("\npolice ").count() == 2, "the old key is kept");
    write_police(
        &p,
        "incidents_2026-11-23.csv",
        &format!("{POLICE_HEADER}ERA-8;06/11/2026 09:00;vol;43,31;5,41;5;{NAME};;\n"),
    );
    run_ok(&p, &["run"]);
    let key_ids = sql_csv(&p, "SELECT DISTINCT reporter_name_key_id AS k FROM bronze.ddsp_incidents ORDER BY k");
    assert_eq!(key_ids.lines().count(), 3, "two key ids in bronze: {key_ids}");
    let tokens = tokens(&p);
    assert_eq!(tokens.len(), 6);
    assert_eq!(count_in(&p, "bronze.ddsp_incidents", "reporter_name", &tokens), 4);
    let out = run_ok(&p, &["erase", "--domain", "police", "--request", "DPO-2026-3", "--value", NAME]);
    assert!(out.contains("t1:") && out.contains(", k"), "both key ids are named: {out}");
    assert_eq!(count_in(&p, "bronze.ddsp_incidents", "reporter_name", &tokens), 0);
    assert_eq!(holding(&p, &tokens).await, Vec::<String>::new());
}

/// Mistakes in a request are named, and nothing is changed.
#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_are_refused_clearly() {
    let p = TestProject::example(None);
    run_ok(&p, &["ingest", "ddsp_incidents"]);
    let cases: [(&[&str], &str); 4] = [
        (&["--domain", "health", "--request", "R", "--value", "x"], "unknown domain `health`"),
        (&["--domain", "police", "--request", "R", "--token", "abc"], "64 hexadecimal digits"),
        (&["--domain", "police", "--request", "R", "--value", "   "], "nothing is left of the value"),
        (&["--domain", "police", "--request", "R"], "one of --value, --value-stdin or --token"),
    ];
    for (args, expected) in cases {
        let out = p.run(&[&["erase"], args].concat());
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(p.run(&["keys", "rotate", "health"]).status.code(), Some(1));
}
