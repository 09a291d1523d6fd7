//! The stream connectors against real brokers of their own (a Mosquitto and a NATS server with JetStream, started
//! per test on a free port, so that a test can restart its broker): messages published while the scheduler takes
//! them and is killed with SIGKILL, stopped with SIGTERM, or its broker restarted — each message lands exactly
//! once, malformed ones in the quarantine with their reason.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lakehouse_tests::*;

const PROJECT: &str = "version: 1
name: test
partners:
  - { id: city, name: City, kind: internal }
privacy:
  domains: [police]
  keys: { from: file, path: KEYFILE }
";

/// Mosquitto started as root runs as the user `mosquitto`, which cannot read the test's private temporary
/// directories: it stays the user who started it (ignored when that is not root).
const RUN_AS: &str = "user root\n";

/// A broker process of the test's own.
struct Broker {
    kind: &'static str,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The broker's binary: as `ci/brokers.sh` found it, else on the PATH or in /usr/sbin, where Debian puts it.
fn binary(name: &str) -> String {
    let var = if name == "mosquitto" { "LAKEHOUSE_TEST_MOSQUITTO" } else { "LAKEHOUSE_TEST_NATS_SERVER" };
    if let Ok(path) = std::env::var(var) {
        return path;
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain(["/usr/sbin", "/usr/local/sbin"]) {
        let path = std::path::Path::new(dir).join(name);
        if path.exists() {
            return path.display().to_string();
        }
    }
    panic!("{name} is not installed: ci/test.sh installs it (ci/brokers.sh)")
}

impl Broker {
    fn mosquitto() -> Self {
        let mut b = Broker { kind: "mosquitto", port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        let conf = format!(
            "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\n\
             max_queued_messages 0\nmax_inflight_messages 0\nlog_dest none\n{RUN_AS}",
            b.port,
            b.dir.path().display()
        );
        std::fs::write(b.dir.path().join("mosquitto.conf"), conf).unwrap();
        b.start();
        b
    }

    fn nats() -> Self {
        let mut b = Broker { kind: "nats-server", port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
        b.start();
        b
    }

    fn start(&mut self) {
        let dir = self.dir.path().display().to_string();
        let port = self.port.to_string();
        let mut cmd = match self.kind {
            "mosquitto" => {
                let mut c = Command::new(binary("mosquitto"));
                c.args(["-c", &format!("{dir}/mosquitto.conf")]);
                c
            }
            _ => {
                let mut c = Command::new(binary("nats-server"));
                c.args(["-a", "127.0.0.1", "-p", &port, "-js", "-sd", &dir]);
                c
            }
        };
        self.child = Some(cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("broker starts"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen on {}", self.kind, self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
        // JetStream answers a little after the port opens.
        std::thread::sleep(Duration::from_millis(300));
    }

    /// Stops the broker cleanly (it saves its state) and starts it again.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

fn mqtt_manifest(port: u16) -> String {
    format!(
        "version: 1
name: sensors
description: traffic sensors over MQTT
owner: city
schedule: continuous
connector:
  kind: mqtt
  url: mqtt://127.0.0.1:{port}
  topics: [\"city/traffic/+/flow\"]
  topic_field: topic
  message_id: reading_id
  batch: {{ max_records: 5000, max_wait: 1 second }}
columns:
  reading_id: {{ type: string, required: true }}
  topic: {{ type: string }}
  vehicles: {{ type: int, range: [0, 5000] }}
  measured_at: {{ type: timestamp, required: true }}
retention: 1 year
retry: {{ attempts: 3, backoff: 1 second, max_backoff: 2 seconds }}
"
    )
}

fn nats_manifest(port: u16) -> String {
    format!(
        "version: 1
name: alarms
description: patrol alarms over NATS JetStream
owner: city
schedule: continuous
connector:
  kind: nats
  url: nats://127.0.0.1:{port}
  stream: PATROL
  subject: patrol.alarms.>
  subject_field: subject
  sequence_field: sequence
  ack_wait: 2 seconds
  batch: {{ max_records: 5000, max_wait: 1 second }}
columns:
  sequence: {{ type: int, required: true }}
  subject: {{ type: string }}
  alarm_id: {{ type: string, required: true }}
  raised_at: {{ type: timestamp, required: true }}
  officer: {{ type: string, pii: direct, domain: police }}
retention: 1 year
retry: {{ attempts: 3, backoff: 1 second, max_backoff: 2 seconds }}
"
    )
}

fn project(name: &str, manifest: String) -> TestProject {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    p.write(&format!("sources/{name}.yaml"), manifest);
    p
}

fn feed(p: &TestProject, source: &str, count: u64, rate: u64, bad_every: u64) -> Child {
    p.command(&["feed", source, "--count", &count.to_string(), "--rate", &rate.to_string(), "--bad-every"])
        .arg(bad_every.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn schedule(p: &TestProject) -> Child {
    p.command(&["schedule", "--grace", "30"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap()
}

fn wait_ok(child: Child, what: &str) {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{what}: {}\n{}", stdout(&out), stderr(&out));
}

/// Drains the source with `lakehouse ingest` until bronze and the quarantine hold `expected` messages between
/// them (redeliveries of a killed run come back after the broker's wait), at most a minute.
async fn drain(p: &TestProject, source: &str, expected: i64) {
    let bronze = p.warehouse_url("bronze", source);
    let quarantine = p.warehouse_url("bronze", &format!("{source}__quarantine"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = p.run(&["ingest", source]);
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        let landed = query_i64(&bronze, "SELECT count(*) FROM t").await;
        let quarantined = query_i64(&quarantine, "SELECT count(*) FROM t").await;
        assert!(landed + quarantined <= expected, "more than published: {landed} + {quarantined}");
        if landed + quarantined == expected || Instant::now() > deadline {
            return;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// 100,000 messages (one in 1,000 not JSON) published while the scheduler takes them, is killed twice with
/// SIGKILL, restarted, and finally stopped with SIGTERM; then what is pending is drained: each message is in
/// bronze or the quarantine exactly once.
async fn exactly_once_through_kills(p: &TestProject, source: &str, id: &str, publisher: Child) {
    const N: i64 = 100_000;
    let mut scheduler = schedule(p);
    for _ in 0..2 {
        std::thread::sleep(Duration::from_secs(4));
        scheduler.kill().unwrap();
        scheduler.wait().unwrap();
        scheduler = schedule(p);
    }
    wait_ok(publisher, "feed");
    std::thread::sleep(Duration::from_secs(2));
    // SIGTERM in the middle of the stream: the open batch is committed or left to the broker.
    signal(&scheduler, "TERM");
    let status = scheduler.wait().unwrap();
    assert!(status.success(), "the scheduler stops cleanly on SIGTERM: {status}");
    drain(p, source, N).await;
    let bronze = p.warehouse_url("bronze", source);
    assert_eq!(query_i64(&bronze, &format!("SELECT count(DISTINCT {id}) FROM t")).await, N - N / 1000);
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, N - N / 1000);
    let quarantine = p.warehouse_url("bronze", &format!("{source}__quarantine"));
    assert_eq!(query_i64(&quarantine, "SELECT count(*) FROM t").await, N / 1000);
    // Each with its reason, at its message's line in the batch's archived unit.
    let reasons = query_rows(&quarantine, "SELECT DISTINCT reason FROM t").await;
    assert!(reasons.iter().all(|r| r[0].contains("JSON") || r[0].contains("EOF")), "{reasons:?}");
    assert_eq!(query_i64(&quarantine, "SELECT count(*) FROM t WHERE line >= 1").await, N / 1000);
}

#[tokio::test]
async fn mqtt_messages_land_exactly_once_through_kills_a_stop_and_a_broker_restart() {
    let mut broker = Broker::mosquitto();
    let p = project("sensors", mqtt_manifest(broker.port));
    // The first run opens the persistent session: from then on, the broker keeps the messages for it.
    let out = p.run(&["ingest", "sensors"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let publisher = feed(&p, "sensors", 100_000, 8_000, 1000);
    exactly_once_through_kills(&p, "sensors", "reading_id", publisher).await;
    let bronze = p.warehouse_url("bronze", "sensors");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t WHERE topic = 'city/traffic/demo/flow'").await, 99_900);

    // The broker restarts (saving its sessions) while the scheduler runs: it reconnects, the session is there,
    // and what is published after lands once.
    restart_under_scheduler(&p, &mut broker, "sensors", "reading_id", 99_900).await;
}

#[tokio::test]
async fn nats_messages_land_exactly_once_through_kills_a_stop_and_a_broker_restart() {
    let mut broker = Broker::nats();
    let p = project("alarms", nats_manifest(broker.port));
    let publisher = feed(&p, "alarms", 100_000, 8_000, 1000);
    exactly_once_through_kills(&p, "alarms", "alarm_id", publisher).await;
    let bronze = p.warehouse_url("bronze", "alarms");
    // The stream's sequence and subject land with each message; the officer is pseudonymized.
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT sequence) FROM t").await, 99_900);
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t WHERE subject = 'patrol.alarms.demo'").await, 99_900);
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t WHERE length(officer) = 64").await, 99_900);

    // The broker restarts while the scheduler runs: it reconnects, and what is published after lands once.
    restart_under_scheduler(&p, &mut broker, "alarms", "alarm_id", 99_900).await;
}

/// Restarts the broker while `lakehouse schedule` takes the source, publishes 5,000 messages after the restart and
/// checks that each lands once (on top of the `landed` rows already in bronze).
async fn restart_under_scheduler(p: &TestProject, broker: &mut Broker, source: &str, id: &str, landed: i64) {
    let bronze = p.warehouse_url("bronze", source);
    let mut scheduler = schedule(p);
    std::thread::sleep(Duration::from_secs(2));
    broker.stop();
    std::thread::sleep(Duration::from_secs(2));
    broker.start();
    wait_ok(feed(p, source, 5_000, 0, 0), "feed after the restart");
    let expected = landed + 5_000;
    let deadline = Instant::now() + Duration::from_secs(60);
    while query_i64(&bronze, "SELECT count(*) FROM t").await < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    signal(&scheduler, "TERM");
    assert!(scheduler.wait().unwrap().success());
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, expected);
    assert_eq!(query_i64(&bronze, &format!("SELECT count(DISTINCT {id}) FROM t")).await, expected);
}

#[tokio::test]
async fn a_stream_run_without_its_broker_fails_naming_it_and_commits_nothing() {
    let port = free_port();
    let p = project("alarms", nats_manifest(port));
    let out = p.run(&["ingest", "alarms"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("nats 127.0.0.1:{port} stream `PATROL`")) && err.contains("nothing was committed"),
        "{err}"
    );
    let p = project("sensors", mqtt_manifest(port));
    let out = p.run(&["ingest", "sensors"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("127.0.0.1:{port}: cannot connect")) && err.contains("nothing was committed"),
        "{err}"
    );
}

/// A crash after bronze's commit and before the acknowledgements (`after-commit-before-ack`), or between the
/// ledger's commit and bronze's (`after-ledger-commit`: the next run completes the pending batch from its archived
/// unit): the broker delivers the batch again, and the next run recognizes every message instead of landing it
/// twice.
#[tokio::test]
async fn messages_delivered_again_after_a_crash_are_recognized_not_landed_twice() {
    for point in ["after-commit-before-ack", "after-ledger-commit"] {
        for kind in ["mqtt", "nats"] {
            let (broker, source, p) = if kind == "mqtt" {
                let b = Broker::mosquitto();
                let p = project("sensors", mqtt_manifest(b.port));
                assert!(p.run(&["ingest", "sensors"]).status.success(), "the session is opened");
                (b, "sensors", p)
            } else {
                let b = Broker::nats();
                let p = project("alarms", nats_manifest(b.port));
                (b, "alarms", p)
            };
            wait_ok(feed(&p, source, 3_000, 0, 500), "feed");
            let out = p.command(&["ingest", source]).env("LAKEHOUSE_FAULT", point).output().unwrap();
            assert!(!out.status.success(), "{kind} {point}: the run is aborted");
            // The broker's wait before it delivers unacknowledged messages again (NATS's ack_wait).
            std::thread::sleep(Duration::from_secs(3));
            let out = p.run(&["ingest", source]);
            assert!(out.status.success(), "{kind} {point}: {}\n{}", stdout(&out), stderr(&out));
            let log = stderr(&out);
            assert!(log.contains("delivered again after their commit"), "{kind} {point}: {log}");
            let bronze = p.warehouse_url("bronze", source);
            assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 2_994, "{kind} {point}");
            let quarantine = p.warehouse_url("bronze", &format!("{source}__quarantine"));
            assert_eq!(query_i64(&quarantine, "SELECT count(*) FROM t").await, 6, "{kind} {point}");
            // Nothing else comes: the redeliveries were acknowledged.
            std::thread::sleep(Duration::from_secs(3));
            let out = p.run(&["ingest", source]);
            assert!(
                out.status.success() && !stderr(&out).contains("delivered again"),
                "{kind} {point}: {}",
                stderr(&out)
            );
            assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 2_994, "{kind} {point}");
            drop(broker);
        }
    }
}

/// Many micro-batches make many small commits: Delta checkpoints every 100 commits, and the daily retention job
/// (or `lakehouse retention`) compacts a stream's tables without changing a row.
#[tokio::test]
async fn a_stream_of_small_batches_is_checkpointed_and_compacted() {
    let broker = Broker::nats();
    let p = project("alarms", nats_manifest(broker.port).replace("max_records: 5000", "max_records: 25"));
    wait_ok(feed(&p, "alarms", 2_600, 0, 0), "feed");
    // The lag as the broker tells it (`lakehouse status`).
    let status = |p: &TestProject| {
        let out = p.run(&["status", "--format", "csv"]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out).lines().find(|l| l.starts_with("bronze.alarms")).unwrap_or_default().to_string()
    };
    let out = p.run(&["ingest", "alarms"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let bronze = p.warehouse_url("bronze", "alarms");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 2_600);
    let log = p.path().join("warehouse/bronze/alarms/_delta_log");
    assert!(log.join("00000000000000000099.checkpoint.parquet").exists(), "one at the 100th commit");
    assert!(log.join("_last_checkpoint").exists());
    let line = status(&p);
    assert!(line.contains("streaming: 0 pending") && line.contains("records/s over 5 min"), "{line}");
    wait_ok(feed(&p, "alarms", 40, 0, 0), "feed");
    let line = status(&p);
    assert!(line.contains("streaming: 40 pending, the oldest "), "{line}");
    assert!(p.run(&["ingest", "alarms"]).status.success());
    let files = |url: String| async move { open_table(&url).await.snapshot().unwrap().log_data().num_files() };
    assert!(files(bronze.clone()).await >= 100);
    let out = p.run(&["retention", "alarms"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(files(bronze.clone()).await <= 2, "compacted");
    assert!(files(p.warehouse_url("bronze", "alarms__files")).await <= 2, "the ledger too");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 2_640);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT alarm_id) FROM t").await, 2_640);
    // The stream goes on after the compaction.
    wait_ok(feed(&p, "alarms", 100, 0, 0), "feed");
    assert!(p.run(&["ingest", "alarms"]).status.success());
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 2_740);
    drop(broker);
}

/// The example's stream sources (`sources/optional/`), enabled as `feeds.sh` does, against brokers of the test:
/// the traffic sensors' readings with their topic, the patrol alarms with their subject, sequence and a
/// pseudonymized officer; malformed readings quarantined.
#[tokio::test]
async fn the_example_stream_sources_land_what_is_published() {
    let (mosquitto, nats) = (Broker::mosquitto(), Broker::nats());
    let p = TestProject::example(None);
    for (name, port, default) in
        [("ville_traffic_sensors", mosquitto.port, "127.0.0.1:1883"), ("patrol_alarms", nats.port, "127.0.0.1:4222")]
    {
        let text = std::fs::read_to_string(repo().join(format!("sources/optional/{name}.yaml"))).unwrap();
        assert!(text.contains(default), "{name}");
        p.write(&format!("sources/{name}.yaml"), text.replace(default, &format!("127.0.0.1:{port}")));
    }
    wait_ok(feed(&p, "patrol_alarms", 1, 0, 0), "the stream is created");
    let out = p.run(&["ingest", "ville_traffic_sensors", "patrol_alarms"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    wait_ok(feed(&p, "ville_traffic_sensors", 500, 0, 50), "feed");
    wait_ok(feed(&p, "patrol_alarms", 99, 0, 0), "feed");
    let out = p.run(&["ingest", "ville_traffic_sensors", "patrol_alarms"]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let sensors = p.warehouse_url("bronze", "ville_traffic_sensors");
    assert_eq!(query_i64(&sensors, "SELECT count(*) FROM t WHERE topic = 'city/traffic/demo/flow'").await, 490);
    let quarantine = p.warehouse_url("bronze", "ville_traffic_sensors__quarantine");
    assert_eq!(query_i64(&quarantine, "SELECT count(*) FROM t").await, 10);
    let alarms = p.warehouse_url("bronze", "patrol_alarms");
    assert_eq!(query_i64(&alarms, "SELECT count(DISTINCT sequence) FROM t").await, 100);
    assert_eq!(query_i64(&alarms, "SELECT count(*) FROM t WHERE length(officer) = 64").await, 100);
    assert_eq!(query_i64(&alarms, "SELECT count(*) FROM t WHERE subject = 'patrol.alarms.demo'").await, 100);
}

/// A TCP proxy to the S3 server of `ci/start-s3.sh` that can be taken down (every connection closed, new ones
/// refused) and brought back.
struct SwitchProxy {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SwitchProxy {
    fn start(upstream: String) -> Self {
        use std::io::{Read, Write};
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let down = Arc::new(AtomicBool::new(false));
        let flag = down.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if flag.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let Ok(server) = std::net::TcpStream::connect(&upstream) else { continue };
                for (mut from, mut to) in [(client.try_clone().unwrap(), server.try_clone().unwrap()), (server, client)]
                {
                    let flag = flag.clone();
                    std::thread::spawn(move || {
                        let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
                        let mut buf = [0u8; 16384];
                        loop {
                            if flag.load(Ordering::SeqCst) {
                                break;
                            }
                            let n = match from.read(&mut buf) {
                                Ok(0) => break,
                                Ok(n) => n,
                                Err(e)
                                    if matches!(
                                        e.kind(),
                                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                                    ) =>
                                {
                                    continue;
                                }
                                Err(_) => break,
                            };
                            if to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                        let _ = from.shutdown(std::net::Shutdown::Both);
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                }
            }
        });
        Self { port, down }
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The object store stops for 10 seconds while messages arrive: the scheduler's runs fail and are retried, the
/// messages wait in the broker (nothing buffered by us), and once the store is back every message lands once —
/// a batch cut between two commits included.
#[tokio::test]
async fn a_store_stopped_for_ten_seconds_holds_the_stream_back_and_loses_nothing() {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").expect("the S3 server of ci/start-s3.sh");
    let proxy = SwitchProxy::start(endpoint.trim_start_matches("http://").trim_end_matches('/').to_string());
    let broker = Broker::nats();
    let p = project("alarms", nats_manifest(broker.port).replace("max_records: 5000", "max_records: 500"));
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    p.write(
        "lakehouse.yaml",
        format!(
            "{yaml}warehouse: {}/lake\nstorage: {{ connect_timeout: 1 second, request_timeout: 3 seconds, retries: 1, \
             retry_timeout: 3 seconds, lock_lease: 3 seconds }}\n",
            s3_prefix("stream-outage")
        ),
    );
    let via_proxy = |mut c: Command| {
        c.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{}", proxy.port));
        c
    };
    let publisher = feed(&p, "alarms", 30_000, 2_000, 0);
    let mut scheduler = via_proxy(p.command(&["schedule", "--grace", "30"]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    proxy.set_down(true);
    std::thread::sleep(Duration::from_secs(10));
    proxy.set_down(false);
    wait_ok(publisher, "feed");
    std::thread::sleep(Duration::from_secs(3));
    signal(&scheduler, "TERM");
    assert!(scheduler.wait().unwrap().success());
    let bronze = p.warehouse_url("bronze", "alarms");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = via_proxy(p.command(&["ingest", "alarms"])).output().unwrap();
        assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
        let n = query_i64(&bronze, "SELECT count(*) FROM t").await;
        if n >= 30_000 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 30_000);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT alarm_id) FROM t").await, 30_000);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT sequence) FROM t").await, 30_000);
    drop(broker);
}

/// `mqtts://` with credentials from the environment: a broker with TLS (a test CA, trusted through `ca_file_env`)
/// and a password file. The right credentials land the messages; a wrong password is refused with the broker's
/// reason and nothing committed; a missing variable is named before any connection; the password (a canary) is
/// in no output and no file of the lake.
#[tokio::test]
async fn mqtt_over_tls_with_credentials_from_the_environment() {
    const PASSWORD: &str = "mqtt-canary-s3cret";
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(d).output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=lakehouse test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=localhost",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(d.join("ext"), "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\n").unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.pem",
        "-extfile",
        "ext",
    ]);
    let passwd = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(d.join("passwords"))
        .args(["sensors", PASSWORD])
        .output()
        .expect("mosquitto_passwd (Debian's mosquitto package; ci/brokers.sh installs it)");
    assert!(passwd.status.success(), "{}", String::from_utf8_lossy(&passwd.stderr));
    let mut broker = Broker { kind: "mosquitto", port: free_port(), dir: tempfile::tempdir().unwrap(), child: None };
    let conf = format!(
        "listener {port} 127.0.0.1\nallow_anonymous false\npassword_file {d}/passwords\ncafile {d}/ca.pem\n\
         certfile {d}/server.pem\nkeyfile {d}/server.key\npersistence false\nmax_queued_messages 0\nlog_dest none\n\
         {RUN_AS}",
        port = broker.port,
        d = d.display()
    );
    std::fs::write(broker.dir.path().join("mosquitto.conf"), conf).unwrap();
    broker.start();
    let manifest = mqtt_manifest(broker.port)
        .replace(&format!("mqtt://127.0.0.1:{}", broker.port), &format!("mqtts://localhost:{}", broker.port))
        .replace(
            "  message_id: reading_id\n",
            "  message_id: reading_id\n  username_env: SENSORS_USER\n  password_env: SENSORS_PASSWORD\n  ca_file_env: SENSORS_CA\n",
        );
    let p = project("sensors", manifest);
    let with_env = |mut c: Command, password: &str| {
        c.env("SENSORS_USER", "sensors").env("SENSORS_PASSWORD", password).env("SENSORS_CA", d.join("ca.pem"));
        c
    };
    // No variable: named, before any connection.
    let out = p.run(&["ingest", "sensors"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`SENSORS_USER` (connector.username_env) is not set"), "{}", stderr(&out));
    // A wrong password: the broker's reason, nothing committed.
    let out = with_env(p.command(&["ingest", "sensors"]), "wrong-password").output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("connection refused: not authorized") && err.contains("nothing was committed"), "{err}");
    // Without the CA, the broker's certificate is not trusted.
    let out = p
        .command(&["ingest", "sensors"])
        .env("SENSORS_USER", "sensors")
        .env("SENSORS_PASSWORD", PASSWORD)
        .env("SENSORS_CA", "/etc/ssl/certs/ca-certificates.crt")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("TLS"), "{}", stderr(&out));
    // The right ones.
    let out = with_env(p.command(&["ingest", "sensors"]), PASSWORD).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let published =
        with_env(p.command(&["feed", "sensors", "--count", "300", "--rate", "0"]), PASSWORD).output().unwrap();
    assert!(published.status.success(), "{}", stderr(&published));
    let out = with_env(p.command(&["ingest", "sensors"]), PASSWORD).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let bronze = p.warehouse_url("bronze", "sensors");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 300);
    for file in files_under(p.path()) {
        let bytes = std::fs::read(&file).unwrap();
        assert!(!bytes.windows(PASSWORD.len()).any(|w| w == PASSWORD.as_bytes()), "{}", file.display());
    }
    for text in [stdout(&out), stderr(&out), stdout(&published), stderr(&published)] {
        assert!(!text.contains(PASSWORD), "{text}");
    }
}
