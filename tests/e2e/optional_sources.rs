//! The example deployment's optional pull sources (`sources/optional/`), enabled as the README says: the two APIs
//! against their stand-in (`stand_in_apis.py`), the transit table in the tests' PostgreSQL (its sample SQL).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use lakehouse_tests::*;

const TOKEN: &str = "example-token-canary";

/// The stand-in APIs' process, stopped when dropped (a failed assertion included).
struct StandIn(std::process::Child);

impl Drop for StandIn {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_optional_pull_sources_run_against_their_stand_ins() {
    let p = TestProject::example(None);
    let optional = repo().join("sources/optional");
    let mut api = StandIn(
        Command::new("python3")
            .arg(optional.join("stand_in_apis.py"))
            .args(["--port", "0"])
            .env("METEO_API_TOKEN", TOKEN)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the stand-in APIs"),
    );
    let mut line = String::new();
    BufReader::new(api.0.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().strip_prefix("PORT ").expect("the stand-in's port").to_string();
    for name in ["meteo_api_observations", "ville_events_api", "rtm_vehicle_positions"] {
        let text = std::fs::read_to_string(optional.join(format!("{name}.yaml"))).unwrap();
        p.write(&format!("sources/{name}.yaml"), text.replace("127.0.0.1:8089", &format!("127.0.0.1:{port}")));
    }
    let pg =
        std::env::var("LAKEHOUSE_TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let sql = Command::new("psql")
        .args([pg.as_str(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(optional.join("rtm_vehicle_positions.sql"))
        .output()
        .expect("psql");
    assert!(sql.status.success(), "{}", String::from_utf8_lossy(&sql.stderr));
    let ingest = |p: &TestProject| {
        p.command(&["ingest", "meteo_api_observations", "ville_events_api", "rtm_vehicle_positions"])
            .env("METEO_API_TOKEN", TOKEN)
            .env("RTM_PG_URL", &pg)
            .output()
            .unwrap()
    };
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    // 10 days of hourly observations at two stations; five events in three pages; 120 vehicles.
    let count = |table: &str| {
        let url = p.warehouse_url("bronze", table);
        async move { query_i64(&url, "SELECT count(*) FROM t").await }
    };
    assert_eq!(count("meteo_api_observations").await, 480);
    assert_eq!(count("ville_events_api").await, 5);
    assert_eq!(count("rtm_vehicle_positions").await, 120);
    // Run again: the cursors ask from their marks; nothing is landed twice.
    let out = ingest(&p);
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert_eq!(count("meteo_api_observations").await, 480);
    assert_eq!(count("ville_events_api").await, 5);
    assert_eq!(count("rtm_vehicle_positions").await, 120);
    assert!(!stdout(&out).contains(TOKEN) && !stderr(&out).contains(TOKEN));
    drop(api);
    let _ = Command::new("psql")
        .args([pg.as_str(), "-X", "-q", "-c", "DROP SCHEMA lakehouse_example_rtm CASCADE"])
        .output();
}
