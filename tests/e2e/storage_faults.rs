//! Storage faults: an S3 endpoint that is down or frozen is named as a storage error (exit 1, the URL, what to
//! check) within the timeouts and retries of `lakehouse.yaml`, and nothing is committed.

use std::net::TcpListener;
use std::process::Output;

use lakehouse_tests::*;

/// The example on an S3 warehouse, with short timeouts and one retry (the endpoint is given per command).
fn example_on_faulty_s3() -> TestProject {
    let p = TestProject::example(Some("s3://faults/lake"));
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        format!(
            "{yaml}storage: {{ connect_timeout: 1 second, request_timeout: 2 seconds, retries: 1, retry_timeout: 5 seconds }}\n"
        ),
    );
    p
}

fn run_on(p: &TestProject, endpoint: &str, args: &[&str]) -> Output {
    p.command(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", "faults")
        .env("AWS_SECRET_ACCESS_KEY", "faults-secret")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .unwrap()
}

fn assert_storage_error(out: &Output, location: &str) {
    assert_eq!(out.status.code(), Some(1), "a storage fault is a user-facing error:\n{}", stderr(out));
    let err = stderr(out);
    assert!(err.contains("storage at") && err.contains(location), "names the storage and URL: {err}");
    assert!(err.contains("AWS_ENDPOINT_URL") && err.contains("`storage:`"), "says what to check: {err}");
    assert!(!err.contains("faults-secret"), "no secret in errors: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Nothing listens: connections are refused.
#[test]
fn a_stopped_s3_endpoint_is_a_clear_storage_error() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let p = example_on_faulty_s3();
    let out = run_on(&p, &endpoint, &["ingest", "ddsp_incidents"]);
    assert_storage_error(&out, "s3://faults/lake");
    // Read-only commands too: a store that is down is not shown as empty.
    for args in [vec!["tables"], vec!["sql", "SELECT count(*) FROM gold.fire_response_times"]] {
        let out = run_on(&p, &endpoint, &args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stdout(&out));
        assert!(stderr(&out).contains("storage") && stderr(&out).contains("AWS_ENDPOINT_URL"), "{}", stderr(&out));
    }
}

/// A server that accepts connections and never answers: the request timeout ends the wait.
#[test]
fn a_frozen_s3_endpoint_is_given_up_after_the_configured_timeouts() {
    let frozen = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", frozen.local_addr().unwrap());
    let p = example_on_faulty_s3();
    let out = run_on(&p, &endpoint, &["ingest", "ddsp_incidents"]);
    assert_storage_error(&out, "s3://faults/lake");
    drop(frozen);
}

/// A TCP proxy to the S3 server of `ci/start-s3.sh` that stops — closes every connection and refuses new ones —
/// once `budget` bytes of requests went through: the store going down in the middle of a run.
struct StoppingProxy {
    port: u16,
}

impl StoppingProxy {
    fn start(upstream: String, budget: usize) -> Self {
        use std::io::{Read, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sent = Arc::new(AtomicUsize::new(0));
        let stopped = Arc::new(AtomicBool::new(false));
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if stopped.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                let pipe = |mut from: std::net::TcpStream, mut to: std::net::TcpStream, count: bool| {
                    let (sent, stopped) = (sent.clone(), stopped.clone());
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 16384];
                        loop {
                            let n = match from.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => n,
                            };
                            if count && sent.fetch_add(n, Ordering::SeqCst) + n > budget {
                                stopped.store(true, Ordering::SeqCst);
                            }
                            if stopped.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(client.try_clone().unwrap(), server.try_clone().unwrap(), true);
                pipe(server, client, false);
            }
        });
        Self { port }
    }
}

/// The store goes down while the data files are being uploaded: the run fails with a storage error, commits
/// nothing, and the next run with the store back lands every record once.
#[test]
fn a_store_stopping_mid_ingest_commits_nothing_and_the_rerun_lands_everything_once() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("the S3 server of ci/start-s3.sh");
    let upstream = endpoint.trim_start_matches("http://").trim_end_matches('/').to_string();
    let prefix = s3_prefix("stopping");
    let p = TestProject::example(Some(&format!("{prefix}/lake")));
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        format!(
            "{yaml}storage: {{ connect_timeout: 1 second, request_timeout: 5 seconds, retries: 1, retry_timeout: 5 seconds, \
             lock_lease: 3 seconds }}\n"
        ),
    );
    // The table is created and the small log requests go through; the data files' upload does not.
    let proxy = StoppingProxy::start(upstream, 64 * 1024);
    let out = p
        .command(&["ingest", "ddsp_incidents"])
        .env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", proxy.port))
        .output()
        .unwrap();
    assert_storage_error(&out, &format!("{prefix}/lake"));
    let lh = p.load();
    let count = |lh: lakehouse::Lakehouse| {
        tokio::runtime::Runtime::new().unwrap().block_on(async move {
            match lh.warehouse.open_table("bronze.ddsp_incidents").await.unwrap() {
                None => 0,
                Some(_) => query_lake(&lh, "SELECT count(*) FROM bronze.ddsp_incidents").await[0][0].parse().unwrap(),
            }
        })
    };
    assert_eq!(count(lh), 0, "nothing committed");
    // The store is back (direct endpoint): every record lands once.
    let out = p.run(&["ingest", "ddsp_incidents"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count(p.load()), 1485);
}
