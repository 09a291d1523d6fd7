//! The `http` connector against a real HTTP server process (`tests/fixtures/http_api.py`): incremental reads with
//! the cursor committed in the ledger, every pagination and authentication, faults refused or retried, a crash
//! between commits completed from the archived responses, and no secret or clear identifier left in the lake.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use lakehouse_tests::*;

/// The secrets the test API checks (`tests/fixtures/http_api.py`).
const BEARER: &str = "s3cret-bearer-canary";
const API_KEY: &str = "s3cret-apikey-canary";
const BASIC_PASSWORD: &str = "s3cret-basic-canary";
const OAUTH_SECRET: &str = "s3cret-oauth-canary";
const OAUTH_TOKEN: &str = "tok-oauth-canary-1";
/// Every record's reporter starts with it: a direct identifier, never in clear in the lake.
const NAME_CANARY: &str = "Canary-Dupont";

const PROJECT: &str = "version: 1
name: test
drop_zones: [drop]
partners:
  - { id: meteo, name: Weather service, kind: external }
privacy:
  domains: [citizens]
  keys: { from: file, path: KEYFILE }
";

/// The test API, killed when dropped.
struct Api {
    child: Child,
    port: u16,
}

impl Api {
    fn start(records: usize) -> Api {
        let script = fixtures().join("http_api.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--records", &records.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the test API");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port = line.trim().strip_prefix("PORT ").and_then(|p| p.parse().ok()).expect("the API's port");
        Api { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// One request to the API's admin endpoints: the body of its answer.
    fn call(&self, method: &str, path: &str) -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let (head, body) = answer.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    }

    /// The requests the API received: (path, query).
    fn requests(&self) -> Vec<(String, String)> {
        let body = self.call("GET", "/_admin/requests");
        let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
        list.iter()
            .map(|r| (r["path"].as_str().unwrap().to_string(), r["query"].as_str().unwrap().to_string()))
            .collect()
    }

    fn admin(&self, what: &str) {
        self.call("POST", &format!("/_admin/{what}"));
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A source reading `path` of the API with the given connector lines (indented under `connector:`).
fn manifest(name: &str, api: &Api, path: &str, connector: &str, format: &str, load: &str) -> String {
    format!(
        "version: 1
name: {name}
description: observations of the weather service's API
owner: meteo
agreement: CONV-2024-12
schedule: \"*/10 * * * *\"
connector:
  kind: http
  url: {url}
{connector}
format: {format}
columns:
  id: {{ type: string, key: true }}
  updated_at: {{ type: timestamp, from: updatedAt }}
  reporter: {{ type: string, pii: direct, domain: citizens }}
  value: {{ type: int }}
load: {load}
retention: 1 year
",
        url = api.url(path)
    )
}

fn project(sources: &[(&str, String)]) -> TestProject {
    let p = TestProject::empty();
    p.write_project(PROJECT);
    std::fs::create_dir_all(p.path().join("drop")).unwrap();
    for (name, text) in sources {
        p.write(&format!("sources/{name}.yaml"), text);
    }
    p
}

/// `lakehouse` with the test secrets in its environment.
fn with_secrets(mut cmd: Command) -> Command {
    cmd.env("METEO_TOKEN", BEARER)
        .env("METEO_KEY", API_KEY)
        .env("METEO_USER", "partner")
        .env("METEO_PASSWORD", BASIC_PASSWORD)
        .env("METEO_CLIENT", "client-1")
        .env("METEO_CLIENT_SECRET", OAUTH_SECRET);
    cmd
}

fn ingest(p: &TestProject, args: &[&str]) -> std::process::Output {
    let mut all = vec!["ingest"];
    all.extend_from_slice(args);
    with_secrets(p.command(&all)).output().unwrap()
}

/// Every file of the project's warehouse, as bytes.
fn warehouse_bytes(p: &TestProject) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    files_under(&p.path().join("warehouse")).into_iter().map(|f| (f.clone(), std::fs::read(&f).unwrap())).collect()
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

const INCREMENTAL: &str = "  params: { auth: bearer, per_page: \"40\" }
  auth: { kind: bearer, token_env: METEO_TOKEN }
  pagination: { kind: page, param: page, size_param: per_page, size: 40 }
  cursor: { field: updatedAt, param: updated_since, initial: \"2024-01-01T00:00:00Z\", lookback: 1 hour }";

#[tokio::test]
async fn an_api_is_read_incrementally_exactly_once_with_its_cursor_committed_with_the_rows() {
    let api = Api::start(250);
    let m = manifest("meteo_obs", &api, "/page", INCREMENTAL, "{ kind: json, records: data }", "{ mode: upsert }");
    let p = project(&[("meteo_obs", m)]);
    let out = ingest(&p, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let bronze = p.warehouse_url("bronze", "meteo_obs");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 250);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 250);
    // 250 records, 40 a page: 7 pages, the last one short.
    let first: Vec<_> = api.requests().into_iter().filter(|(path, _)| path == "/page").collect();
    assert_eq!(first.len(), 7, "{first:?}");
    assert!(first[0].1.contains("updated_since=2024-01-01T00%3A00%3A00Z"), "{first:?}");
    let ledger = p.warehouse_url("bronze", "meteo_obs__files");
    assert_eq!(query_i64(&ledger, "SELECT count(*) FROM t").await, 7);
    // The highest `updatedAt` of the 250 (record 249: 12:09), committed with the batch.
    let positions = query_rows(&ledger, "SELECT DISTINCT position FROM t").await;
    assert_eq!(positions, rows(&[&["2024-03-01T12:09:00Z"]]));

    // New and changed records: the next run asks from the position minus the lookback.
    api.admin("add?n=5&updated=2024-03-01T13:00:00Z");
    api.admin("update?id=r0003&value=-3&updated=2024-03-01T13:30:00Z");
    let out = ingest(&p, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    let second: Vec<_> = api.requests().into_iter().filter(|(path, _)| path == "/page").skip(7).collect();
    assert!(second[0].1.contains("updated_since=2024-03-01T11%3A09%3A00Z"), "{second:?}");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 255);
    assert_eq!(query_i64(&bronze, "SELECT value FROM t WHERE id = 'r0003'").await, -3);
    let positions = query_rows(&ledger, "SELECT position FROM t WHERE batch = 2 LIMIT 1").await;
    assert_eq!(positions, rows(&[&["2024-03-01T13:30:00Z"]]));

    // The responses are archived, encrypted: no identifier, no secret in the lake, nor in what the runs printed.
    let archive = files_under(&p.path().join("warehouse/archive/meteo_obs"));
    assert!(archive.len() >= 8, "{archive:?}");
    assert!(archive.iter().all(|f| f.to_string_lossy().ends_with(".json.gz.aes")), "{archive:?}");
    for (file, bytes) in warehouse_bytes(&p) {
        for canary in [NAME_CANARY, BEARER] {
            assert!(!contains(&bytes, canary), "{canary} in {}", file.display());
        }
    }
    for text in [stdout(&out), stderr(&out)] {
        assert!(!text.contains(BEARER), "{text}");
    }
    let pseudonyms = query_i64(&bronze, "SELECT count(*) FROM t WHERE length(reporter) = 64").await;
    assert_eq!(pseudonyms, 255);

    // Retention deletes the archived responses with the rows they gave.
    let out = p.run(&["retention", "--dry-run", "--as-of", "2099-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(files_under(&p.path().join("warehouse/archive/meteo_obs")).len(), archive.len());
    let out = p.run(&["retention", "--as-of", "2099-01-01T00:00:00Z"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = stdout(&out);
    let pages = format!(" {}", archive.len());
    assert!(summary.lines().next().is_some_and(|header| header.trim_end().ends_with("archived_pages")), "{summary}");
    assert!(summary.lines().any(|l| l.starts_with("meteo_obs") && l.trim_end().ends_with(&pages)), "{summary}");
    assert!(files_under(&p.path().join("warehouse/archive/meteo_obs")).is_empty());
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 0);
}

#[tokio::test]
async fn every_pagination_and_authentication_reads_every_record() {
    let api = Api::start(130);
    let json = "{ kind: json, records: data }";
    let replace = "{ mode: replace }";
    let sources = [
        (
            "by_offset",
            "/offset",
            "  params: { auth: apikey }
  auth: { kind: api_key, name: X-Partner-Key, value_env: METEO_KEY }
  pagination: { kind: offset, limit: 40 }",
            json,
        ),
        (
            "by_token",
            "/cursor",
            "  params: { auth: basic }
  auth: { kind: basic, username_env: METEO_USER, password_env: METEO_PASSWORD }
  pagination: { kind: cursor, from: meta.next, param: cursor }",
            json,
        ),
        (
            "by_next_url",
            "/next",
            "  params: { auth: oauth }
  auth: { kind: oauth2, token_url: \"TOKEN_URL\", client_id_env: METEO_CLIENT, client_secret_env: METEO_CLIENT_SECRET }
  pagination: { kind: next_url, from: links.next }",
            json,
        ),
        (
            "by_link",
            "/link",
            "  params: { auth: apikey_query }
  auth: { kind: api_key, name: key, in: query, value_env: METEO_KEY }
  pagination: { kind: link_header }",
            "{ kind: json }",
        ),
        ("as_lines", "/ndjson", "  rate_limit: 20", "{ kind: ndjson }"),
    ];
    let token_url = api.url("/oauth/token");
    let manifests: Vec<(&str, String)> = sources
        .iter()
        .map(|(name, path, connector, format)| {
            (*name, manifest(name, &api, path, &connector.replace("TOKEN_URL", &token_url), format, replace))
        })
        .collect();
    let p = project(&manifests);
    let out = ingest(&p, &[]);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    for (name, ..) in &sources {
        let bronze = p.warehouse_url("bronze", name);
        assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 130, "{name}");
        assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 130, "{name}");
    }
    let requests = api.requests();
    let count = |path: &str| requests.iter().filter(|(p, _)| p == path).count();
    // 130 records, 40 a page: 4 pages; offset pagination asks once more when the last page is full… it is not.
    assert_eq!(count("/offset"), 4, "{requests:?}");
    assert_eq!(count("/cursor"), 4, "{requests:?}");
    assert_eq!(count("/next"), 4, "{requests:?}");
    assert_eq!(count("/link"), 4, "{requests:?}");
    assert_eq!(count("/oauth/token"), 1, "one token for the run: {requests:?}");
    // A second run of a `replace` source reads the API again and replaces the table: still every record once.
    let out = ingest(&p, &["by_link"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&p.warehouse_url("bronze", "by_link"), "SELECT count(*) FROM t").await, 130);
    // The API key sent in the query is in no message and no file of the lake.
    for text in [stdout(&out), stderr(&out)] {
        for secret in [API_KEY, BASIC_PASSWORD, OAUTH_SECRET, OAUTH_TOKEN] {
            assert!(!text.contains(secret), "{secret}: {text}");
        }
    }
    for (file, bytes) in warehouse_bytes(&p) {
        for secret in [API_KEY, BASIC_PASSWORD, OAUTH_SECRET, OAUTH_TOKEN, NAME_CANARY] {
            assert!(!contains(&bytes, secret), "{secret} in {}", file.display());
        }
    }
}

#[tokio::test]
async fn a_response_that_is_not_what_the_manifest_declares_fails_the_run_and_commits_nothing() {
    let api = Api::start(20);
    let json = "{ kind: json, records: data }";
    let cases = [
        ("html", "/html", "", "the body is an HTML or XML page, not JSON"),
        ("truncated", "/truncated", "", "the JSON document is cut short"),
        ("missing", "/missing", "", "no `data` in the document (format.records is `data`)"),
        ("notfound", "/notfound", "", "answered 404 Not Found: check connector.url"),
        ("huge", "/huge", "", "the response is larger than 256 MiB"),
        ("elsewhere", "/elsewhere", "  pagination: { kind: next_url, from: links.next }", "on another origin"),
        ("looping", "/loop", "  pagination: { kind: cursor, from: meta.next, param: cursor }", "would not end"),
        (
            "unauthorized",
            "/page",
            "  params: { auth: bearer }\n  auth: { kind: bearer, token_env: WRONG_TOKEN }",
            "401",
        ),
        (
            "bad_client",
            "/page",
            "  params: { auth: oauth }
  auth: { kind: oauth2, token_url: \"TOKEN_URL\", client_id_env: METEO_CLIENT, client_secret_env: WRONG_TOKEN }",
            "answered 401 Unauthorized: check the client id and secret",
        ),
    ];
    for (name, path, connector, expected) in cases {
        let connector = connector.replace("TOKEN_URL", &api.url("/oauth/token"));
        let p = project(&[(name, manifest(name, &api, path, &connector, json, "{ mode: replace }"))]);
        let out = with_secrets(p.command(&["ingest"])).env("WRONG_TOKEN", "not-the-token").output().unwrap();
        let err = stderr(&out);
        assert!(!out.status.success(), "{name}: {}", stdout(&out));
        assert!(err.contains(expected), "{name}: {err}");
        assert!(err.contains("nothing was committed"), "{name}: {err}");
        assert!(err.contains(&format!("127.0.0.1:{}{path}", api.port)), "{name} names the request: {err}");
        assert!(!err.contains("not-the-token") && !err.contains(NAME_CANARY), "{name}: {err}");
        // No table, and no archived page left behind.
        assert!(!p.path().join(format!("warehouse/bronze/{name}/_delta_log")).exists(), "{name}");
        assert!(files_under(&p.path().join("warehouse/archive")).is_empty(), "{name}");
    }
    // A secret missing from the environment fails before any request, naming the variable.
    let before = api.requests().len();
    let connector = "  params: { auth: bearer }\n  auth: { kind: bearer, token_env: NOT_EXPORTED }";
    let p = project(&[("nosecret", manifest("nosecret", &api, "/page", connector, json, "{ mode: replace }"))]);
    let out = ingest(&p, &[]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("`NOT_EXPORTED` (connector.auth.token_env) is not set"), "{}", stderr(&out));
    assert_eq!(api.requests().len(), before);
}

#[tokio::test]
async fn busy_and_failing_servers_are_retried_then_given_up_clearly() {
    let api = Api::start(20);
    let json = "{ kind: json, records: data }";
    // 429 with `Retry-After: 1`, then the page.
    let p = project(&[("limited", manifest("limited", &api, "/limited", "", json, "{ mode: replace }"))]);
    let started = std::time::Instant::now();
    let out = with_secrets(p.command(&["ingest"])).env("LAKEHOUSE_LOG", "warn").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(started.elapsed() >= std::time::Duration::from_secs(1), "Retry-After was not waited for");
    assert!(stderr(&out).contains("retrying"), "{}", stderr(&out));
    assert_eq!(query_i64(&p.warehouse_url("bronze", "limited"), "SELECT count(*) FROM t").await, 20);
    // 503 twice: one retry is not enough.
    let p = project(&[("flaky", manifest("flaky", &api, "/flaky", "  retries: 1", json, "{ mode: replace }"))]);
    let out = ingest(&p, &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("answered 503 Service Unavailable (2 attempts; connector.retries is 1)"),
        "{}",
        stderr(&out)
    );
    // The third attempt is answered.
    let out = ingest(&p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[tokio::test]
async fn a_crash_after_the_ledger_commit_is_completed_from_the_archive_without_asking_again() {
    let api = Api::start(100);
    let m = manifest("meteo_obs", &api, "/page", INCREMENTAL, "{ kind: json, records: data }", "{ mode: upsert }");
    let p = project(&[("meteo_obs", m)]);
    let out = with_secrets(p.command(&["ingest"])).env("LAKEHOUSE_FAULT", "after-ledger-commit").output().unwrap();
    assert!(!out.status.success(), "the fault point did not stop the run");
    let asked = api.requests().len();
    let out = ingest(&p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("completed a batch left pending"), "{}", stdout(&out));
    assert_eq!(api.requests().len(), asked, "the pending batch is read from the archive");
    let bronze = p.warehouse_url("bronze", "meteo_obs");
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 100);
    // A crash before the ledger commit: the next run asks again from the committed position.
    api.admin("add?n=3&updated=2024-03-01T13:00:00Z");
    let out = with_secrets(p.command(&["ingest"])).env("LAKEHOUSE_FAULT", "reader-panic").output().unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("nothing was committed"), "{}", stderr(&out));
    let out = ingest(&p, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(query_i64(&bronze, "SELECT count(*) FROM t").await, 103);
    assert_eq!(query_i64(&bronze, "SELECT count(DISTINCT id) FROM t").await, 103);
}

#[test]
fn validate_names_what_an_http_source_cannot_do() {
    let api = Api::start(1);
    let json = "{ kind: json, records: data }";
    let bad = [
        ("clear", "http://example.org/obs", "", json, "{ mode: replace }", "connector.url", "only https://"),
        (
            "secret_header",
            "https://api.example.org/obs",
            "  headers: { Authorization: \"Bearer abc\" }",
            json,
            "{ mode: replace }",
            "connector.headers",
            "would hold a secret in the manifest",
        ),
        (
            "appended",
            "https://api.example.org/obs",
            "  cursor: { field: updatedAt, param: since, initial: \"2024-01-01T00:00:00Z\" }",
            json,
            "{ mode: append }",
            "connector.cursor",
            "would land them twice",
        ),
        (
            "every_run",
            "https://api.example.org/obs",
            "",
            json,
            "{ mode: append }",
            "connector",
            "every run reads the whole API again",
        ),
        (
            "csv_pages",
            "https://api.example.org/obs.csv",
            "  pagination: { kind: page }",
            "{ kind: csv }",
            "{ mode: replace }",
            "connector.pagination",
            "must be json or ndjson",
        ),
    ];
    for (name, url, connector, format, load, field, words) in bad {
        let text = manifest(name, &api, "/x", connector, format, load).replace(&api.url("/x"), url);
        let p = project(&[(name, text)]);
        let out = p.run(&["validate"]);
        let err = format!("{}{}", stdout(&out), stderr(&out));
        assert!(!out.status.success(), "{name}: {err}");
        assert!(err.contains(&format!("sources/{name}.yaml:")), "{name} is located: {err}");
        assert!(err.contains(field) && err.contains(words), "{name}: {err}");
    }
}
