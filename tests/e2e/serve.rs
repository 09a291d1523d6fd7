//! `lakehouse serve` with real clients: psql (libpq, simple protocol, `\dt`/`\d`, TLS), Python's psycopg 3
//! (extended protocol with parameters, binary results, server-side cursors, cancel), Node's `pg` and the JDBC
//! driver (metadata queries, fetch size), logging in with
//! SCRAM-SHA-256 as users of `lakehouse user`, each seeing exactly what `lakehouse sql --as ROLE` shows.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use lakehouse_tests::*;

const PASSWORD: &str = "correct horse battery staple";

/// A running `lakehouse serve`; killed when dropped. Its standard error is kept for the secret scans.
struct Served {
    child: Child,
    port: u16,
    log: Arc<Mutex<String>>,
}

impl Served {
    fn start(p: &TestProject) -> Self {
        Self::try_start(p, &[]).unwrap_or_else(|log| panic!("serve did not start:\n{log}"))
    }

    fn try_start(p: &TestProject, args: &[&str]) -> Result<Self, String> {
        let mut all = vec!["serve"];
        if !args.contains(&"--listen") {
            all.extend(["--listen", "127.0.0.1:0"]);
        }
        all.extend(args);
        Self::launch(p, &all)
    }

    /// Runs `lakehouse ARGS`, a command that serves, until it says where.
    fn launch(p: &TestProject, all: &[&str]) -> Result<Self, String> {
        let mut child = p.command(all).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().expect("spawn serve");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let log = Arc::new(Mutex::new(String::new()));
        let mut port = None;
        for line in lines.by_ref() {
            let line = line.expect("stderr line");
            log.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(rest) = line.strip_prefix("serving on ") {
                let addr = rest.split_whitespace().next().expect("address");
                port = Some(addr.rsplit(':').next().unwrap().parse().expect("port"));
                break;
            }
        }
        let Some(port) = port else {
            let _ = child.wait();
            return Err(log.lock().unwrap().clone());
        };
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&format!("{line}\n"));
            }
        });
        Ok(Self { child, port, log })
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it holds `text` (read from the server's standard error by another thread, so a line the
    /// server wrote before answering may still be on its way); fails after 30 seconds.
    fn wait_for_log(&self, text: &str) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let log = self.log();
            if log.contains(text) {
                return log;
            }
            assert!(std::time::Instant::now() < deadline, "no {text:?} in the server's log:\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill").args([&format!("-{name}"), &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    fn conninfo(&self, user: &str, sslmode: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} dbname=lake sslmode={sslmode} connect_timeout=10", self.port)
    }

    /// psql with the simple query protocol, unaligned CSV-like output.
    /// The server's peak resident memory so far (`VmHWM`).
    fn peak_rss_mib(&self) -> i64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap();
        kb.trim().trim_end_matches("kB").trim().parse::<i64>().unwrap() >> 10
    }

    /// The server's resident memory now (`VmRSS`).
    fn rss_mib(&self) -> i64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap();
        kb.trim().trim_end_matches("kB").trim().parse::<i64>().unwrap() >> 10
    }

    /// The server's CPU time so far, in seconds (user and system, from `/proc/PID/stat`).
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // The fields after the command name (in parentheses): utime and stime are the 12th and 13th, in ticks.
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
        ticks / 100.0
    }

    /// psql reading its statements from a pipe.
    fn psql_session(&self, user: &str, args: &[&str]) -> Child {
        Command::new("psql")
            .arg(self.conninfo(user, "disable"))
            .args(["-X", "-q"])
            .args(args)
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs a client program that prints one JSON document; fails with its stderr and the server's.
    fn client_json(&self, mut client: Command, what: &str) -> serde_json::Value {
        let out = client.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(out.status.success(), "{what}: {}\nserver:\n{}", stderr(&out), self.log());
        serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{what} printed no JSON ({e}): {}", stdout(&out)))
    }

    fn psql(&self, user: &str, password: &str, sql: &str) -> Output {
        self.psql_ssl(user, password, "disable", sql)
    }

    fn psql_ssl(&self, user: &str, password: &str, sslmode: &str, sql: &str) -> Output {
        Command::new("psql")
            .arg(self.conninfo(user, sslmode))
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--csv", "-c", sql])
            .env("PGPASSWORD", password)
            .env("PGAPPNAME", "e2e-psql")
            .output()
            .expect("psql is installed (ci/start-postgres.sh installs it)")
    }

    fn psql_ok(&self, user: &str, sql: &str) -> String {
        let out = self.psql(user, PASSWORD, sql);
        assert!(out.status.success(), "psql as {user}: {sql}\n{}\nserver:\n{}", stderr(&out), self.log());
        stdout(&out)
    }

    fn psql_err(&self, user: &str, sql: &str) -> String {
        let out = self.psql(user, PASSWORD, sql);
        assert!(!out.status.success(), "psql as {user} was served: {sql}\n{}", stdout(&out));
        stderr(&out)
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn add_user(p: &TestProject, name: &str, roles: &[&str]) {
    let mut args = vec!["user", "add", name, "--password-stdin"];
    for r in roles {
        args.extend(["--role", r]);
    }
    let mut child =
        p.command(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "user add {name}: {}", stderr(&out));
}

/// The example after one run, with a user per role tested.
fn example() -> TestProject {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    add_user(&p, "police", &["ddsp"]);
    add_user(&p, "town", &["mairie_secteur_1"]);
    add_user(&p, "analyst", &["city_analyst"]);
    p
}

fn as_role(p: &TestProject, role: &str, query: &str) -> String {
    let out = p.run(&["sql", "--as", role, "--format", "csv", query]);
    assert!(out.status.success(), "--as {role}: {query}\n{}", stderr(&out));
    stdout(&out)
}

#[test]
fn psql_reads_what_its_role_is_granted_and_nothing_else() {
    let p = example();
    let s = Served::start(&p);

    // Rows and masks as `sql --as` computes them (the same policy in the same plan rewrite).
    for (user, role, query) in [
        (
            "police",
            "ddsp",
            "SELECT cell, accidents, from_police, from_fire_brigade FROM gold.accident_hotspots ORDER BY cell",
        ),
        (
            "town",
            "mairie_secteur_1",
            "SELECT arrondissement, period_of_day, incidents FROM gold.incidents_by_arrondissement_period ORDER BY 1, 2",
        ),
        (
            "analyst",
            "city_analyst",
            "SELECT count(*) AS n, count(reporter_token) AS tokens FROM silver.ville_signalements",
        ),
    ] {
        let expected = as_role(&p, role, query);
        assert!(expected.lines().count() > 1, "{role}: {expected}");
        assert_eq!(s.psql_ok(user, query), expected, "{user}: {query}");
    }
    let town =
        s.psql_ok("town", "SELECT DISTINCT arrondissement FROM gold.incidents_by_arrondissement_period ORDER BY 1");
    assert_eq!(town, "arrondissement\n1\n7\n");
    // psql's FETCH_COUNT reads a result through a cursor (BEGIN, DECLARE, FETCH FORWARD 2 … CLOSE, COMMIT):
    // the same rows.
    let query = "SELECT arrondissement, period_of_day, incidents FROM gold.incidents_by_arrondissement_period \
                 ORDER BY 1, 2";
    let expected = as_role(&p, "mairie_secteur_1", query);
    assert!(expected.lines().count() > 4, "{expected}");
    let mut psql = s.psql_session("town", &["--csv", "-v", "ON_ERROR_STOP=1", "-v", "FETCH_COUNT=2"]);
    psql.stdin.take().unwrap().write_all(format!("{query};\n").as_bytes()).unwrap();
    let out = psql.wait_with_output().unwrap();
    assert!(out.status.success(), "{}\nserver:\n{}", stderr(&out), s.log());
    assert_eq!(stdout(&out), expected);

    // Listings: psql's \dt reads pg_catalog; only the granted tables show.
    let listed = s.psql_ok("police", "\\dt gold.*");
    for t in ["accident_hotspots", "incidents_by_arrondissement_period", "incidents_weather_daily"] {
        assert!(listed.contains(t), "{listed}");
    }
    assert!(!listed.contains("fire_response_times"), "{listed}");
    let described = s.psql_ok("police", "\\d gold.accident_hotspots");
    assert!(described.contains("from_fire_brigade"), "{described}");
    let schemas = s.psql_ok(
        "police",
        "SELECT DISTINCT table_schema FROM information_schema.tables WHERE table_schema NOT IN ('information_schema', 'pg_catalog') ORDER BY 1",
    );
    assert_eq!(schemas, "table_schema\ngold\n");
    // Nor are the other layers' names listed to a role granted gold only (`\dn` reads pg_namespace).
    let namespaces = s.psql_ok("police", "SELECT nspname FROM pg_catalog.pg_namespace ORDER BY 1");
    assert!(namespaces.lines().any(|l| l == "gold"), "{namespaces}");
    for layer in ["bronze", "silver", "system", "catalog"] {
        assert!(!namespaces.lines().any(|l| l == layer), "{layer} listed to a gold-only role: {namespaces}");
    }
    let namespaces = s.psql_ok("analyst", "SELECT nspname FROM pg_catalog.pg_namespace ORDER BY 1");
    assert!(namespaces.lines().any(|l| l == "silver"), "{namespaces}");
    assert!(!namespaces.lines().any(|l| l == "bronze"), "{namespaces}");

    // Tables not granted, bronze, and everything that is not a query: refused.
    let e = s.psql_err("police", "SELECT * FROM gold.fire_response_times");
    assert!(e.contains("not found") || e.contains("permission denied"), "{e}");
    let e = s.psql_err("police", "SELECT * FROM bronze.ddsp_interventions");
    assert!(e.contains("not found"), "{e}");
    for statement in [
        "CREATE TABLE gold.x AS SELECT 1",
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "INSERT INTO gold.accident_hotspots SELECT * FROM gold.accident_hotspots",
        "DELETE FROM gold.accident_hotspots",
        "DROP TABLE gold.accident_hotspots",
        "COPY (SELECT 1) TO '/tmp/x.csv'",
        "SELECT * INTO gold.copy FROM gold.accident_hotspots",
        "SET datafusion.runtime.memory_limit = '100G'",
        "SET ROLE dpo",
    ] {
        let e = s.psql_err("police", statement);
        // `CREATE EXTERNAL TABLE` is DataFusion's own syntax, which the PostgreSQL parser does not know.
        assert!(e.contains("refused") || e.contains("sql parser error"), "{statement}: {e}");
    }
    let e = s.psql_err("police", "EXPLAIN SELECT * FROM gold.accident_hotspots");
    assert!(e.contains("EXPLAIN is not served"), "{e}");
    // The identity functions give the connection's user and roles.
    assert_eq!(s.psql_ok("town", "SELECT current_user AS u, current_role() AS r"), "u,r\ntown,mairie_secteur_1\n");
    // Session settings a client sends at startup or later work.
    assert_eq!(s.psql_ok("police", "SET application_name = 'x'; SHOW application_name"), "application_name\nx\n");

    // Logins: a wrong password and an unknown user get the same answer; the password is in no log.
    for (user, password) in [("police", "wrong password"), ("nobody", PASSWORD)] {
        let out = s.psql(user, password, "SELECT 1");
        assert!(!out.status.success());
        let e = stderr(&out);
        assert!(e.contains(&format!("password authentication failed for user \"{user}\"")), "{e}");
    }
    let log = s.wait_for_log("failed login of user \"nobody\"");
    assert!(!log.contains(PASSWORD) && !log.contains("wrong password"), "{log}");
}

#[test]
fn a_plain_connection_is_refused_when_tls_is_set_and_tls_is_needed_beyond_loopback() {
    let p = example();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost"])
        .arg("-keyout")
        .arg(p.keys_dir.path().join("server.key"))
        .arg("-out")
        .arg(p.keys_dir.path().join("server.crt"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", stderr(&out));
    // Without TLS, only loopback.
    let refused = Served::try_start(&p, &["--listen", "0.0.0.0:0"]).err().expect("refused to start");
    assert!(refused.contains("without TLS"), "{refused}");

    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    let tls = format!(
        "serve:\n  tls: {{ cert: {}, key: {} }}\n",
        p.keys_dir.path().join("server.crt").display(),
        p.keys_dir.path().join("server.key").display()
    );
    std::fs::write(p.path().join("lakehouse.yaml"), format!("{yaml}{tls}")).unwrap();
    let s = Served::start(&p);
    let out = s.psql_ssl("police", PASSWORD, "disable", "SELECT 1");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("accepts TLS connections only"), "{}", stderr(&out));
    // verify-full: the client checks the certificate against the development CA (the certificate itself) and
    // the host name.
    let verified = format!(
        "host=localhost port={} user=police dbname=lake sslmode=verify-full sslrootcert={}",
        s.port,
        p.keys_dir.path().join("server.crt").display()
    );
    let out = Command::new("psql")
        .arg(&verified)
        .args(["-X", "-q", "--csv", "-c", "SELECT count(*) > 0 AS ok FROM gold.accident_hotspots"])
        .env("PGPASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stderr(&out), s.log());
    assert_eq!(stdout(&out), "ok\nt\n");
    // The server offers SCRAM only: a client that insists on a password in clear or MD5 gets nothing else
    // (libpq's `require_auth`, PostgreSQL 16 and later: psycopg's own libpq).
    let script = "import sys, psycopg\nfor m in ('password', 'md5'):\n    try:\n        \
                  psycopg.connect(sys.argv[1] + ' require_auth=' + m, password=sys.argv[2]).close()\n        \
                  print(m, 'logged in')\n    except psycopg.OperationalError as e:\n        print(m, e)\n";
    let out = Command::new(python()).args(["-c", script, &verified, PASSWORD]).output().expect("python");
    assert!(out.status.success(), "{}", stderr(&out));
    let answers = stdout(&out);
    assert!(!answers.contains("logged in"), "{answers}");
    assert_eq!(answers.matches("server requested SASL").count(), 2, "{answers}");
}

#[test]
fn limits_reload_and_stop() {
    let p = example();
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    std::fs::write(
        p.path().join("lakehouse.yaml"),
        format!(
            "{yaml}serve:\n  max_rows: 5\n  statement_timeout: 5 seconds\n  max_connections: 2\n  \
             max_memory_bytes: 8388608\n"
        ),
    )
    .unwrap();
    let s = Served::start(&p);
    assert_eq!(s.psql_ok("police", "SELECT * FROM generate_series(1, 5) t(x)").lines().count(), 6);
    let e = s.psql_err("police", "SELECT * FROM generate_series(1, 6) t(x)");
    assert!(e.contains("more than 5 rows (serve.max_rows)"), "{e}");
    let e = s.psql_err("police", "SELECT count(*) FROM generate_series(1, 1000000000000) t(x) WHERE x % 7 = 3");
    assert!(e.contains("statement timeout (5 s"), "{e}");
    // A `SET statement_timeout` in the same message (psql -c sends one simple query) bounds the statements after
    // it: the 1-second timeout, not the server's 5 seconds.
    let e = s.psql_err(
        "police",
        "SET statement_timeout = '1s'; SELECT count(*) FROM generate_series(1, 1000000000000) t(x) WHERE x % 7 = 3",
    );
    assert!(e.contains("statement timeout (1 s"), "{e}");
    // A nested-loop join (a condition that is not an equality, 300,000 × 300,000 rows) out of time stops
    // computing too: the server's CPU time settles within seconds.
    let e = s.psql_err(
        "police",
        "SELECT count(*) FROM generate_series(1, 300000) a(x) JOIN generate_series(1, 300000) b(y) \
         ON (a.x * 7) % 1000 = b.y % 13 OR a.x < b.y - 299990",
    );
    assert!(e.contains("statement timeout"), "{e}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let before = s.cpu_seconds();
        std::thread::sleep(std::time::Duration::from_secs(1));
        let burnt = s.cpu_seconds() - before;
        if burnt < 0.3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the timed-out join still computes ({burnt:.1} s of CPU a second)"
        );
    }
    // A statement that needs more memory than the server's pool fails (nothing spills to disk).
    let e = s.psql_err(
        "police",
        "SELECT count(*) FROM generate_series(1, 2000000) a(x) JOIN generate_series(1, 2000000) b(y) ON a.x = b.y",
    );
    assert!(e.contains("Resources exhausted"), "{e}");
    // One connection over max_connections is refused, with the reason.
    let held: Vec<Child> = (0..2)
        .map(|_| {
            Command::new("psql")
                .arg(s.conninfo("police", "disable"))
                .args(["-X", "-q", "-c", "SELECT count(*) FROM generate_series(1, 1000000000000) t(x) WHERE x % 7 = 3"])
                .env("PGPASSWORD", PASSWORD)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(800));
    let e = s.psql_err("police", "SELECT 1");
    assert!(e.contains("too many clients already (serve.max_connections = 2)"), "{e}");
    for mut h in held {
        let _ = h.wait();
    }

    // A message longer than the server reads is refused from its length alone, before login (16 KiB) and
    // after (64 MiB): the client cannot make the server hold it in memory.
    let mut raw = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    raw.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    let params = b"user\0police\0database\0lake\0\0";
    let mut startup = (8 + params.len() as u32).to_be_bytes().to_vec();
    startup.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    startup.extend_from_slice(params);
    raw.write_all(&startup).unwrap();
    let mut head = [0u8; 5];
    raw.read_exact(&mut head).unwrap();
    assert_eq!(head[0], b'R', "the server asks for authentication");
    let mut body = vec![0u8; u32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4];
    raw.read_exact(&mut body).unwrap();
    // A query claiming 1 GiB, of which only the first bytes are sent.
    raw.write_all(&[b'Q', 0x3f, 0xff, 0xff, 0xfe]).unwrap();
    raw.write_all(b"SELECT 1").unwrap();
    let mut answer = Vec::new();
    let _ = raw.read_to_end(&mut answer);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with('E') && answer.contains("54000"), "{answer}");
    assert!(answer.contains("reads at most 16384 bytes before login"), "{answer}");
    let mut psql = s.psql_session("police", &[]);
    let mut input = psql.stdin.take().unwrap();
    let long = format!("SELECT length('{}') AS n;\n", "x".repeat(65 << 20));
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(long.as_bytes());
    });
    let out = psql.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(stderr(&out).contains("reads at most 67108864 bytes for a statement"), "{}", stderr(&out));

    // SIGHUP: the police lose a table; an open session sees it at its next statement, and its cursors (planned
    // under the old policy) are closed.
    let roles = std::fs::read_to_string(p.path().join("access/roles.yaml")).unwrap();
    let fewer = roles.replacen("      - table: gold.incidents_by_arrondissement_period\n", "", 1);
    assert_ne!(fewer, roles);
    let mut session = s.psql_session("police", &["--csv"]);
    let mut input = session.stdin.take().unwrap();
    writeln!(input, "SELECT count(*) AS n FROM gold.incidents_by_arrondissement_period;").unwrap();
    writeln!(input, "DECLARE held CURSOR WITH HOLD FOR SELECT * FROM gold.incidents_by_arrondissement_period;")
        .unwrap();
    input.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    std::fs::write(p.path().join("access/roles.yaml"), fewer).unwrap();
    s.signal("HUP");
    s.wait_for_log("reloaded the project");
    writeln!(input, "FETCH 1 FROM held;").unwrap();
    writeln!(input, "SELECT count(*) AS n FROM gold.incidents_by_arrondissement_period;").unwrap();
    drop(input);
    let out = session.wait_with_output().unwrap();
    assert!(stdout(&out).starts_with("n\n"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("cursor \"held\" does not exist: closed when the server reloaded its project"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("not found") || stderr(&out).contains("permission denied"), "{}", stderr(&out));

    // SIGTERM: the server stops by itself.
    let mut s = s;
    s.signal("TERM");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", s.log());
}

/// A connection leaves nothing behind: each session (its catalogs, `pg_catalog`, the tables it opened) is freed
/// when its client leaves. (A cycle of references kept every session, 5 MiB each, until the server stopped.)
#[test]
fn sessions_are_freed_when_their_clients_leave() {
    let p = example();
    let s = Served::start(&p);
    let query = "SELECT count(*) AS n FROM gold.accident_hotspots";
    for _ in 0..20 {
        s.psql_ok("police", query);
    }
    let before = s.rss_mib();
    let connections = 60;
    for _ in 0..connections {
        s.psql_ok("police", query);
    }
    let grown = s.rss_mib() - before;
    eprintln!("the server's memory grew by {grown} MiB over {connections} connections");
    assert!(grown < 90, "the server's memory grew by {grown} MiB over {connections} connections, one after the other");
}

#[test]
fn the_scheduler_serves_too_when_configured() {
    let p = example();
    let yaml = std::fs::read_to_string(p.path().join("lakehouse.yaml")).unwrap();
    let yaml = format!("{yaml}serve:\n  listen: 127.0.0.1:0\n  with_schedule: true\n");
    std::fs::write(p.path().join("lakehouse.yaml"), yaml).unwrap();
    let mut s = Served::launch(&p, &["schedule"]).unwrap_or_else(|log| panic!("schedule did not serve:\n{log}"));
    assert_eq!(
        s.psql_ok("police", "SELECT count(*) > 0 AS some FROM gold.incidents_by_arrondissement_period"),
        "some\nt\n"
    );
    // SIGHUP reloads the server's policy; the scheduler goes on.
    s.signal("HUP");
    s.wait_for_log("reloaded the project");
    assert_eq!(s.psql_ok("police", "SELECT 1 AS one"), "one\n1\n");
    // SIGTERM stops both: the scheduler, then the server.
    s.signal("TERM");
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}\n{}", s.log());
    assert!(s.log().contains("stopping: no new connection"), "{}", s.log());
}

/// Python's psycopg 3 (libpq underneath, the extended protocol for every statement with parameters).
const PSYCOPG: &str = r#"
import json, sys, threading, time
import psycopg

dsn, password = sys.argv[1], sys.argv[2]
out = {}
with psycopg.connect(dsn, password=password, application_name="e2e-psycopg", autocommit=True) as conn:
    q = ("SELECT arrondissement, sum(incidents) AS n FROM gold.incidents_by_arrondissement_period "
         "WHERE arrondissement >= %s GROUP BY 1 ORDER BY 1")
    out["text"] = [[a, int(n)] for a, n in conn.execute(q, (1,)).fetchall()]
    with conn.cursor(binary=True) as cur:
        cur.execute(q, (1,))
        out["binary"] = [[a, int(n)] for a, n in cur.fetchall()]
    # The same statement prepared once and run with other parameters.
    out["prepared"] = [[a, int(n)] for a, n in conn.execute(q, (7,), prepare=True).fetchall()]
    out["prepared_again"] = [[a, int(n)] for a, n in conn.execute(q, (2,), prepare=True).fetchall()]
    try:
        conn.execute("DELETE FROM gold.incidents_by_arrondissement_period WHERE arrondissement = %s", (1,))
        out["delete"] = "served"
    except psycopg.Error as e:
        out["delete"] = e.sqlstate
    try:
        conn.execute("SELECT * FROM gold.accident_hotspots WHERE accidents > %s", (3,))
        out["not_granted"] = "served"
    except psycopg.Error as e:
        out["not_granted"] = e.sqlstate
    # A million rows streamed (libpq's single-row mode): the server's default serve.max_rows exactly.
    with conn.cursor() as cur:
        out["million"] = sum(1 for _ in cur.stream("SELECT x FROM generate_series(1, 1000000) t(x)"))
    # Rows as they stream.
    with conn.cursor() as cur:
        out["stream"] = sorted({r[0] for r in cur.stream(
            "SELECT arrondissement FROM gold.incidents_by_arrondissement_period WHERE incidents > %s", (0,))})

    def outcome(f):
        try:
            f()
            return "served"
        except psycopg.Error as e:
            return [e.sqlstate, str(e).splitlines()[0]]

    # Named (server-side) cursors: DECLARE with the parameters bound, then FETCH FORWARD n and MOVE n as the
    # rows are asked for.
    by_period = ("SELECT arrondissement, period_of_day, incidents FROM gold.incidents_by_arrondissement_period "
                 "WHERE incidents >= %s ORDER BY 1, 2")
    out["by_period"] = [list(r) for r in conn.execute(by_period, (0,)).fetchall()]
    with conn.transaction():
        with conn.cursor(name="by_period") as cur:
            cur.execute(by_period, (0,))
            first = cur.fetchmany(2)
            cur.scroll(1)
            rest = cur.fetchall()
            out["named"] = [list(r) for r in first + rest]
            out["named_after_end"] = cur.fetchone()
    with conn.transaction():
        with conn.cursor(name="By Period, binary", binary=True) as cur:
            cur.execute(by_period, (0,))
            out["named_binary"] = [list(r) for r in cur.fetchall()]
    # WITH HOLD outlives its transaction (none here: autocommit), its rows read 50,000 at a time.
    with conn.cursor(name="held", withhold=True) as cur:
        cur.itersize = 50000
        cur.execute("SELECT x FROM generate_series(1, 1000000) t(x)")
        out["held_million"] = sum(1 for _ in cur)

    def over_limit():
        with conn.cursor(name="over", withhold=True) as cur:
            cur.itersize = 200000
            cur.execute("SELECT x FROM generate_series(1, 1000001) t(x)")
            for _ in cur:
                pass
    out["over_limit"] = outcome(over_limit)
    out["without_block"] = outcome(lambda: conn.cursor(name="loose").execute("SELECT 1"))
    out["scroll"] = outcome(lambda: conn.cursor(name="s", scrollable=True, withhold=True).execute("SELECT 1"))

    def backward():
        with conn.transaction():
            with conn.cursor(name="back") as cur:
                cur.execute(by_period, (0,))
                cur.fetchone()
                out["backward"] = outcome(lambda: cur.scroll(-1))
    backward()
    # pg_catalog.pg_cursors lists the connection's cursors; psycopg reads it to close a named cursor it did not
    # execute (the `with` block below fails if it cannot).
    with conn.transaction():
        with conn.cursor(name="never_run"):
            pass
        conn.execute("DECLARE listed BINARY CURSOR FOR SELECT 1 AS one")
        out["pg_cursors"] = [list(r) for r in conn.execute(
            "SELECT name, statement, is_holdable, is_binary, is_scrollable, creation_time <= now() "
            "FROM pg_catalog.pg_cursors").fetchall()]
        conn.cursor(name="listed").close()
        out["pg_cursors_closed"] = conn.execute("SELECT count(*) FROM pg_catalog.pg_cursors").fetchone()[0]
    with conn.transaction():
        conn.cursor(name="gone").execute(by_period, (0,))
    out["after_commit"] = outcome(lambda: conn.execute('FETCH 1 FROM "gone"'))
    # A cancel request stops a running statement.
    threading.Timer(1.0, conn.cancel).start()
    started = time.monotonic()
    try:
        conn.execute("SELECT count(*) FROM generate_series(1, 1000000000000) t(x) WHERE x % 7 = 3")
        out["cancel"] = "finished"
    except psycopg.Error as e:
        out["cancel"] = e.sqlstate
    out["cancel_seconds"] = time.monotonic() - started
    out["after_cancel"] = conn.execute("SELECT 1 AS one").fetchone()[0]
print(json.dumps(out))
"#;

fn python() -> String {
    std::env::var("LAKEHOUSE_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

#[test]
fn psycopg_prepares_binds_streams_cursors_and_cancels_under_the_role() {
    let p = example();
    let s = Served::start(&p);
    let mut client = Command::new(python());
    client.args(["-c", PSYCOPG, &s.conninfo("town", "disable"), PASSWORD]);
    let before = s.peak_rss_mib();
    let got = s.client_json(client, "psycopg (ci/clients.sh installs it; LAKEHOUSE_TEST_PYTHON names its Python)");
    // The million rows were streamed, not gathered before the first was sent (as pgwire does for an Execute
    // without a row limit: 148 MiB more in a debug build, 53 without).
    let grown = s.peak_rss_mib() - before;
    eprintln!("server peak memory grew by {grown} MiB");
    assert!(grown < 100, "the server's peak memory grew by {grown} MiB during the client's statements");
    let expected = as_role(
        &p,
        "mairie_secteur_1",
        "SELECT arrondissement, sum(incidents) AS n FROM gold.incidents_by_arrondissement_period \
         WHERE arrondissement >= 1 GROUP BY 1 ORDER BY 1",
    );
    let expected: Vec<serde_json::Value> = expected
        .lines()
        .skip(1)
        .map(|l| {
            let (a, n) = l.split_once(',').unwrap();
            serde_json::json!([a.parse::<i64>().unwrap(), n.parse::<i64>().unwrap()])
        })
        .collect();
    assert_eq!(expected.len(), 2, "the town hall reads arrondissements 1 and 7: {expected:?}");
    assert_eq!(got["text"], serde_json::Value::Array(expected.clone()));
    assert_eq!(got["binary"], got["text"]);
    assert_eq!(got["prepared"], serde_json::json!([expected[1]]));
    assert_eq!(got["prepared_again"], serde_json::Value::Array(expected[1..].to_vec()));
    assert_eq!(got["delete"], "25006");
    assert_eq!(got["not_granted"], "42P01");
    assert_eq!(got["stream"], serde_json::json!([1, 7]));
    // Named cursors: the same rows as one statement, in parts; a MOVE skips one.
    let rows = got["by_period"].as_array().unwrap().clone();
    assert!(rows.len() > 3, "{rows:?}");
    let skipped: Vec<_> = rows[..2].iter().chain(&rows[3..]).cloned().collect();
    assert_eq!(got["named"], serde_json::Value::Array(skipped), "{got}");
    assert_eq!(got["named_after_end"], serde_json::Value::Null);
    assert_eq!(got["named_binary"], got["by_period"]);
    assert_eq!(got["held_million"], 1_000_000);
    let refused = |key: &str, code: &str, words: &str| {
        assert_eq!(got[key][0], code, "{key}: {got}");
        assert!(got[key][1].as_str().unwrap().contains(words), "{key}: {got}");
    };
    refused("over_limit", "54000", "more than 1000000 rows (serve.max_rows)");
    refused("without_block", "25P01", "can only be used in transaction blocks");
    refused("scroll", "0A000", "move forward only");
    refused("backward", "55000", "cursor can only scan forward");
    refused("after_commit", "34000", "closed at the end of the transaction");
    assert_eq!(
        got["pg_cursors"],
        serde_json::json!([["listed", "DECLARE listed BINARY CURSOR FOR SELECT 1 AS one", false, true, false, true]])
    );
    assert_eq!(got["pg_cursors_closed"], 0);
    assert_eq!(got["cancel"], "57014", "{got}");
    assert!(got["cancel_seconds"].as_f64().unwrap() < 30.0, "{got}");
    assert_eq!(got["after_cancel"], 1);
    assert_eq!(got["million"], 1_000_000);

    // The query log holds each statement, literals redacted, with the tables and versions read.
    let _ = s.psql("police", PASSWORD, "SELECT count(*) FROM gold.accident_hotspots WHERE cell = 'secret-cell-value'");
    // SIGTERM writes the rows still waiting.
    let mut s = s;
    s.signal("TERM");
    assert!(s.child.wait().unwrap().success(), "{}", s.log());
    let all = run_ok(&p, &["queries", "--limit", "1000", "--format", "json"]);
    assert!(!all.contains("secret-cell-value"), "{all}");
    assert!(all.contains("cell = ?"), "{all}");
    let log: Vec<serde_json::Value> = serde_json::from_str(&all).unwrap();
    let of = |outcome: &str| log.iter().filter(|r| r["outcome"] == outcome).collect::<Vec<_>>();
    let refused: Vec<serde_json::Value> =
        serde_json::from_str(&run_ok(&p, &["queries", "--user", "town", "--refused", "--format", "json"])).unwrap();
    assert!(
        refused.iter().any(|r| r["statement"]
            == "DELETE FROM gold.incidents_by_arrondissement_period WHERE arrondissement = $1"
            && r["roles"] == "mairie_secteur_1"
            && r["application"] == "e2e-psycopg"
            && r["client"] == "127.0.0.1"),
        "{refused:?}"
    );
    assert!(refused.iter().all(|r| r["user"] == "town" && r["outcome"] == "refused"), "{refused:?}");
    assert_eq!(of("canceled").len(), 1, "{log:?}");
    let million = log.iter().find(|r| r["rows"] == 1_000_000).expect("the streamed million");
    assert_eq!(million["outcome"], "ok");
    // A cursor's FETCHes are logged with the rows they sent and the tables its query reads.
    let fetched: Vec<_> = log
        .iter()
        .filter(|r| r["statement"].as_str().unwrap().starts_with("FETCH FORWARD") && r["user"] == "town")
        .collect();
    assert!(
        fetched
            .iter()
            .any(|r| r["tables"].as_str().unwrap().starts_with("gold.incidents_by_arrondissement_period@")
                && r["rows"] == 2),
        "{fetched:?}"
    );
    assert_eq!(fetched.iter().filter(|r| r["rows"] == 50_000).count(), 20, "{fetched:?}");
    let read = of("ok").into_iter().find(|r| r["statement"].as_str().unwrap().contains("sum(incidents)")).unwrap();
    let tables = read["tables"].as_str().unwrap();
    assert!(tables.starts_with("gold.incidents_by_arrondissement_period@"), "{read}");
}

/// Node's `pg` (a pure JavaScript client: its own SCRAM, extended protocol for every parameterized query).
const NODE_PG: &str = r#"
const { Client } = require("pg");
(async () => {
  const [port, password] = process.argv.slice(1);
  const client = new Client({ host: "127.0.0.1", port: Number(port), user: "police", database: "lake", password,
                              application_name: "e2e-node" });
  await client.connect();
  const out = {};
  const r = await client.query(
    "SELECT count(*)::bigint AS n, count(from_fire_brigade)::bigint AS fire FROM gold.accident_hotspots WHERE accidents >= $1",
    [0]);
  out.rows = r.rows;
  try { await client.query("UPDATE gold.accident_hotspots SET accidents = $1", [0]); out.update = "served"; }
  catch (e) { out.update = e.code; }
  const bad = new Client({ host: "127.0.0.1", port: Number(port), user: "police", database: "lake", password: "nope" });
  try { await bad.connect(); out.bad = "logged in"; } catch (e) { out.bad = e.code; }
  await client.end();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
"#;

/// The PostgreSQL JDBC driver, what JVM BI tools (DBeaver, Metabase…) connect with: its startup, its metadata
/// queries (`getTables`, `getColumns`, `getSchemas`, run against `pg_catalog`), a prepared statement, a result read
/// with a fetch size (an `Execute` with a row limit, then more), a write refused and a wrong password.
const JDBC: &str = r#"
import java.sql.*;
import java.util.*;

public class Jdbc {
    static String q(String s) { return s == null ? "null" : "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\""; }
    static String list(List<String> v) { StringJoiner j = new StringJoiner(",", "[", "]"); for (String s : v) j.add(q(s)); return j.toString(); }

    public static void main(String[] a) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + a[0] + "/lake?ApplicationName=e2e-jdbc";
        StringJoiner out = new StringJoiner(",", "{", "}");
        try (Connection c = DriverManager.getConnection(url, "police", a[1])) {
            DatabaseMetaData md = c.getMetaData();
            List<String> tables = new ArrayList<>();
            try (ResultSet r = md.getTables(null, "gold", "%", new String[] {"TABLE"})) {
                while (r.next()) tables.add(r.getString("TABLE_NAME"));
            }
            Collections.sort(tables);
            out.add("\"tables\":" + list(tables));
            List<String> columns = new ArrayList<>();
            try (ResultSet r = md.getColumns(null, "gold", "accident_hotspots", "%")) {
                while (r.next()) columns.add(r.getString("COLUMN_NAME"));
            }
            out.add("\"columns\":" + list(columns));
            List<String> schemas = new ArrayList<>();
            try (ResultSet r = md.getSchemas()) { while (r.next()) schemas.add(r.getString("TABLE_SCHEM")); }
            out.add("\"schemas\":" + list(schemas));
            try (PreparedStatement ps = c.prepareStatement(
                    "SELECT count(*) AS n, count(from_fire_brigade) AS fire FROM gold.accident_hotspots WHERE accidents >= ?")) {
                ps.setInt(1, 0);
                try (ResultSet r = ps.executeQuery()) { r.next(); out.add("\"n\":" + r.getLong(1)); out.add("\"fire\":" + r.getLong(2)); }
            }
            c.setAutoCommit(false);
            try (Statement st = c.createStatement()) {
                st.setFetchSize(1000);
                long n = 0;
                try (ResultSet r = st.executeQuery("SELECT x FROM generate_series(1, 100000) t(x)")) { while (r.next()) n++; }
                out.add("\"fetched\":" + n);
            }
            c.commit();
            c.setAutoCommit(true);
            try (Statement st = c.createStatement()) {
                st.executeUpdate("DELETE FROM gold.accident_hotspots");
                out.add("\"delete\":\"served\"");
            } catch (SQLException e) { out.add("\"delete\":" + q(e.getSQLState())); }
        }
        try (Connection c = DriverManager.getConnection(url, "police", "wrong " + a[1])) {
            out.add("\"bad\":\"logged in\"");
        } catch (SQLException e) { out.add("\"bad\":" + q(e.getSQLState())); }
        System.out.println(out);
    }
}
"#;

#[test]
fn jdbc_reads_metadata_and_rows_under_the_role() {
    let p = example();
    let s = Served::start(&p);
    let jar = std::env::var("LAKEHOUSE_TEST_JDBC").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    let source = p.path().join("Jdbc.java");
    std::fs::write(&source, JDBC).unwrap();
    let mut client = Command::new("java");
    client.arg("-cp").arg(&jar).arg(&source).args([&s.port.to_string(), PASSWORD]);
    let got = s.client_json(client, "java with the JDBC driver (ci/clients.sh installs them; LAKEHOUSE_TEST_JDBC)");
    // Exactly the gold tables the police's role is granted, with the columns `sql --as` shows.
    assert_eq!(
        got["tables"],
        serde_json::json!(["accident_hotspots", "incidents_by_arrondissement_period", "incidents_weather_daily"])
    );
    let header = as_role(&p, "ddsp", "SELECT * FROM gold.accident_hotspots LIMIT 1");
    let columns: Vec<&str> = header.lines().next().unwrap().split(',').collect();
    assert_eq!(got["columns"], serde_json::json!(columns));
    assert!(got["schemas"].as_array().unwrap().contains(&serde_json::json!("gold")), "{got}");
    for layer in ["bronze", "silver", "system", "catalog"] {
        assert!(!got["schemas"].as_array().unwrap().contains(&serde_json::json!(layer)), "{layer}: {got}");
    }
    let expected = as_role(&p, "ddsp", "SELECT count(*) AS n FROM gold.accident_hotspots WHERE accidents >= 0");
    let n: i64 = expected.lines().nth(1).unwrap().parse().unwrap();
    assert!(n > 0);
    assert_eq!(got["n"], n);
    assert_eq!(got["fire"], 0, "the masked column reads as null");
    assert_eq!(got["fetched"], 100_000);
    assert_eq!(got["delete"], "25006");
    assert_eq!(got["bad"], "28P01");
}

#[test]
fn node_pg_logs_in_with_scram_and_reads_under_the_role() {
    let p = example();
    let s = Served::start(&p);
    let node_path = std::env::var("LAKEHOUSE_TEST_NODE_PATH").unwrap_or_default();
    let mut client = Command::new("node");
    client.args(["-e", NODE_PG, &s.port.to_string(), PASSWORD]).env("NODE_PATH", &node_path);
    let got =
        s.client_json(client, "node pg (ci/clients.sh installs it; LAKEHOUSE_TEST_NODE_PATH names its node_modules)");
    let expected = as_role(&p, "ddsp", "SELECT count(*) AS n FROM gold.accident_hotspots WHERE accidents >= 0");
    let n: i64 = expected.lines().nth(1).unwrap().parse().unwrap();
    assert!(n > 0);
    // bigint comes back as a string in node-postgres; the masked column counts no value.
    assert_eq!(got["rows"], serde_json::json!([{ "n": n.to_string(), "fire": "0" }]));
    assert_eq!(got["update"], "25006");
    assert_eq!(got["bad"], "28P01");
}
