//! Exactly once: a crash or `kill -9` at any point, then a rerun, gives no duplicate and no loss.

use std::time::{Duration, Instant};

use lakehouse_tests::*;

use crate::ingest::POLICE_PROJECT;

const MANIFEST: &str = r#"version: 1
name: feed
description: t
owner: ddsp
agreement: C-1
schedule: "*/15 * * * *"
connector: { kind: files, location: drop }
format: { kind: csv, delimiter: ";" }
columns:
  id: { type: string, key: true }
  n: { type: int, range: [0, 1000000000] }
  who: { type: string, pii: direct, domain: police }
retention: 1 year
"#;

/// `files` files of `rows` rows; every 1000th row is bad (quarantined).
fn feed(files: usize, rows: usize) -> (TestProject, usize, usize) {
    let p = TestProject::empty();
    p.write_project(POLICE_PROJECT);
    p.write("sources/feed.yaml", MANIFEST);
    let (mut good, mut bad) = (0, 0);
    for f in 0..files {
        let mut text = String::from("id;n;who\n");
        for i in 0..rows {
            if i % 1000 == 999 {
                text.push_str(&format!("f{f}-{i};not-a-number;Someone\n"));
                bad += 1;
            } else {
                text.push_str(&format!("f{f}-{i};{i};Person {i}\n"));
                good += 1;
            }
        }
        p.write(&format!("drop/part-{f}.csv"), text);
    }
    (p, good, bad)
}

/// Checks the final state: every good row once, every bad record once, every file once in the ledger.
async fn assert_exact(p: &TestProject, files: usize, good: usize, bad: usize) {
    let bronze = p.warehouse_url("bronze", "feed");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await as usize, good, "bronze rows");
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await as usize, good, "distinct ids");
    let q = p.warehouse_url("bronze", "feed__quarantine");
    assert_eq!(query_i64(&q, "SELECT count(*) FROM t").await as usize, bad, "quarantined");
    let ledger = p.warehouse_url("bronze", "feed__files");
    assert_eq!(query_i64(&ledger, "SELECT count(DISTINCT path) FROM t").await as usize, files, "ledger files");
    assert_eq!(query_i64(&ledger, "SELECT count(*) FROM t").await as usize, files, "ledger rows");
    assert_eq!(query_i64(&ledger, "SELECT sum(records_read) FROM t").await as usize, good + bad, "ledger read");
}

/// Whether bronze exists: a first batch not committed to it leaves none (it is created by its first commit).
fn bronze_exists(p: &TestProject) -> bool {
    p.path().join("warehouse/bronze/feed/_delta_log").exists()
}

async fn crash_at(point: &str) {
    let (p, good, bad) = feed(3, 2000);
    let out = p.command(&["ingest"]).env("LAKEHOUSE_FAULT", point).output().unwrap();
    assert!(!out.status.success(), "the fault point {point} did not stop the process");
    // Nothing visible in bronze yet: the first batch creates it.
    assert!(!bronze_exists(&p));
    // The rerun completes exactly the pending batch.
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("completed a batch left pending"), "{}", stdout(&out));
    assert_exact(&p, 3, good, bad).await;
    // A new file after the replay becomes batch 2.
    p.write("drop/late.csv", "id;n;who\nlate-1;1;X\n");
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_exact(&p, 4, good + 1, bad).await;
}

#[tokio::test]
async fn crash_after_the_ledger_commit() {
    crash_at("after-ledger-commit").await;
}

#[tokio::test]
async fn crash_after_the_quarantine_commit() {
    crash_at("after-quarantine-commit").await;
}

#[tokio::test]
async fn kill_9_at_any_moment_then_rerun() {
    let (p, good, bad) = feed(4, 20_000);
    // Kill a real ingest process at increasing delays: before, during and around the commits.
    let mut killed = 0;
    for delay_ms in [50u64, 150, 300, 450, 600, 800, 1000, 1300] {
        let mut child = p
            .command(&["ingest"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(delay_ms) {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            killed += 1;
        }
        child.wait().unwrap();
    }
    assert!(killed > 0, "no run was killed: the feed is too small for this machine");
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_exact(&p, 4, good, bad).await;
}

#[tokio::test]
async fn concurrent_runs_of_one_source_never_duplicate() {
    let (p, good, bad) = feed(3, 3000);
    let outs = run_concurrently(&p, 3, &["ingest"]);
    for o in &outs {
        // Each run either succeeded, found the source locked by another, or lost the race for the commit with the
        // clear concurrency error.
        let err = stderr(o);
        assert!(
            o.status.success() || err.contains("at the same time") || err.contains("another process is running it"),
            "{err}"
        );
    }
    assert!(outs.iter().any(|o| o.status.success()));
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_exact(&p, 3, good, bad).await;
}

#[tokio::test]
async fn a_pending_batch_whose_file_disappeared_is_not_committed_partially() {
    let (p, _, _) = feed(2, 500);
    let out = p.command(&["ingest"]).env("LAKEHOUSE_FAULT", "after-ledger-commit").output().unwrap();
    assert!(!out.status.success());
    let moved = p.path().join("part-1.csv.saved");
    std::fs::rename(p.path().join("drop/part-1.csv"), &moved).unwrap();
    let out = p.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("left batch 1 pending") && stderr(&out).contains("part-1.csv"), "{}", stderr(&out));
    assert!(!bronze_exists(&p));
    let bronze = p.warehouse_url("bronze", "feed");
    // Restored, the batch completes.
    std::fs::rename(&moved, p.path().join("drop/part-1.csv")).unwrap();
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 1000);
}

/// A pending batch is completed with the bytes its ledger rows recorded, or not at all: a file rewritten in
/// between (same path, other content) stops the replay until the original is restored.
#[tokio::test]
async fn a_pending_batch_whose_file_was_rewritten_is_not_completed_with_other_bytes() {
    let (p, _, _) = feed(2, 500);
    let out = p.command(&["ingest"]).env("LAKEHOUSE_FAULT", "after-ledger-commit").output().unwrap();
    assert!(!out.status.success());
    let path = p.path().join("drop/part-1.csv");
    let original = std::fs::read(&path).unwrap();
    std::fs::write(&path, String::from_utf8_lossy(&original).replacen("\n", "\n\n", 1)).unwrap();
    let out = p.run(&["ingest"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("left batch 1 pending") && err.contains("part-1.csv changed since the interrupted run"),
        "{err}"
    );
    assert!(!bronze_exists(&p));
    let bronze = p.warehouse_url("bronze", "feed");
    std::fs::write(&path, original).unwrap();
    let out = p.run(&["ingest"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 1000);
}

/// A manual ingest takes the source's lock: while one run is still committing (made slow here), a second one
/// waits for it instead of "completing a batch left pending by an interrupted run" under it, then finds
/// nothing new.
#[tokio::test]
async fn a_run_still_alive_is_not_taken_for_an_interrupted_one() {
    let (p, good, bad) = feed(2, 2000);
    let slow = p
        .command(&["ingest"])
        .env("LAKEHOUSE_FAULT", "slow-ingest")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the slow run holds the source's lock (an OS file lock beside the tables), then a little more so
    // that it has parsed and waits to commit.
    let lock = p.path().join("warehouse/_locks/bronze.feed.lock");
    let started = Instant::now();
    loop {
        let held =
            std::fs::File::open(&lock).is_ok_and(|f| matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)));
        if held {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "the slow run never took the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = p.run(&["ingest"]);
    assert!(second.status.success(), "{}", stderr(&second));
    let (out, err) = (stdout(&second), stderr(&second));
    assert!(!out.contains("interrupted") && !err.contains("interrupted") && !err.contains("pending"), "{out}{err}");
    let line = out.lines().find(|l| l.starts_with("feed ")).unwrap_or_default();
    assert_eq!(line.split_whitespace().take(3).collect::<Vec<_>>(), ["feed", "-", "0"], "nothing new: {out}");
    let first = slow.wait_with_output().unwrap();
    assert!(first.status.success(), "{}", stderr(&first));
    assert_exact(&p, 2, good, bad).await;
}
