//! `lakehouse plan`: what a change set changes compared with a git ref, privacy-relevant changes marked and hashed,
//! exit 3 until a DPO approval in approvals.yaml names the change set; `ci/pr-check.sh` around it.

use std::process::Command;

use lakehouse_tests::*;

/// The example deployment in a git repository of its own, committed.
fn committed_example() -> TestProject {
    let p = TestProject::example(None);
    let git = |args: &[&str]| {
        let out = Command::new("git")
            .arg("-C")
            .arg(p.path())
            .args(["-c", "user.email=ci@example.org", "-c", "user.name=ci"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
    };
    git(&["init", "-q", "."]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "base"]);
    p
}

fn edit(p: &TestProject, rel: &str, from: &str, to: &str) {
    let path = p.path().join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(from), "{rel} has no `{from}`");
    std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
}

const NOTES: &str = "  notes:          { type: string, pii: sensitive, from: observations }\n";

/// A change set of the test: its name and how it edits the project.
type ChangeSet = (&'static str, fn(&TestProject));

/// The change sets of the test.
fn change_sets() -> Vec<ChangeSet> {
    vec![
        ("new_quasi_column", |p| {
            let column = "  victim_age:     { type: int, range: [0, 120], pii: quasi, from: age_victime }\n";
            edit(p, "sources/ddsp_incidents.yaml", NOTES, &format!("{NOTES}{column}"));
        }),
        ("keep_clear_added", |p| {
            edit(
                p,
                "sources/ddsp_incidents.yaml",
                "normalize: digits, from: tel_declarant",
                "normalize: digits, keep_clear: DPO-2026-099, from: tel_declarant",
            );
        }),
        ("gold_without_small_cells", |p| {
            edit(
                p,
                "transforms/gold/accident_hotspots.yaml",
                "small_cells: { count: accidents, measures: [from_police, from_fire_brigade] }",
                "small_cells: { exempt: \"counts of accidents, not of people\" }",
            );
        }),
        ("new_partner", |p| {
            edit(
                p,
                "lakehouse.yaml",
                "  - { id: ville,",
                "  - { id: sncf, name: SNCF Voyageurs, kind: external }\n  - { id: ville,",
            );
        }),
    ]
}

#[test]
fn plan_shows_each_change_set_and_needs_an_approval() {
    for (name, apply) in change_sets() {
        let p = committed_example();
        let unchanged = p.run(&["plan"]);
        assert_eq!(unchanged.status.code(), Some(0), "{}", stderr(&unchanged));
        assert!(stdout(&unchanged).contains("No change"), "{}", stdout(&unchanged));
        apply(&p);
        let text = p.run(&["plan"]);
        assert_eq!(text.status.code(), Some(3), "{name}: {}{}", stdout(&text), stderr(&text));
        insta::assert_snapshot!(format!("plan_{name}"), stdout(&text));
        let md = p.run(&["plan", "--format", "md"]);
        assert_eq!(md.status.code(), Some(3));
        insta::assert_snapshot!(format!("plan_{name}_md"), stdout(&md));
        // The DPO's approval names the change set: exit 0, and the plan says who approved.
        let json: serde_json::Value = serde_json::from_slice(&p.run(&["plan", "--format", "json"]).stdout).unwrap();
        let hash = json["change_set"].as_str().unwrap();
        p.write(
            "approvals.yaml",
            format!("version: 1\napprovals:\n  - {{ change_set: {hash}, approver: J. Martin (DPO), reference: DPO-2026-120 }}\n"),
        );
        let approved = p.run(&["plan"]);
        assert_eq!(approved.status.code(), Some(0), "{name}: {}", stdout(&approved));
        assert!(stdout(&approved).contains("approved by J. Martin (DPO) (DPO-2026-120)"), "{}", stdout(&approved));
        // A further privacy change is another change set: the approval no longer covers it.
        edit(&p, "sources/ddsp_incidents.yaml", "retention: 3 years", "retention: 10 years");
        assert_eq!(p.run(&["plan"]).status.code(), Some(3), "{name}");
    }
}

/// A change that touches no personal data needs no approval; the models it changes are listed for a full rebuild,
/// with the models reading them.
#[test]
fn changes_without_personal_data_need_no_approval() {
    let p = committed_example();
    edit(
        &p,
        "transforms/silver/meteo_observations.sql",
        "    humidity_pct\n",
        "    humidity_pct,\n    wind_kmh * 0.54 AS wind_knots\n",
    );
    let out = p.run(&["plan"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("silver.meteo_observations: SQL changed"), "{text}");
    assert!(
        text.contains("Full rebuilds on the next run\n  silver.meteo_observations, gold.incidents_weather_daily"),
        "{text}"
    );
    assert!(text.contains("No privacy-relevant change"), "{text}");
}

#[test]
fn plan_errors_are_clear() {
    let p = committed_example();
    let out = p.run(&["plan", "--base", "no-such-branch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("`no-such-branch` is not a commit of this repository"), "{}", stderr(&out));
    p.write("approvals.yaml", "version: 1\napprovals:\n  - { change_set: abc, approver: \"\", reference: R }\n");
    let out = p.run(&["plan"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("approvals.yaml:3:") && stderr(&out).contains("`approver` is empty"),
        "{}",
        stderr(&out)
    );
}

/// `ci/pr-check.sh`: validate, then plan as Markdown; fails (3) on an unapproved privacy change.
#[test]
fn pr_check_script_fails_on_unapproved_privacy_changes() {
    let p = committed_example();
    let run = |p: &TestProject| {
        Command::new("bash")
            .arg(repo().join("ci/pr-check.sh"))
            .arg("HEAD")
            .env("LAKEHOUSE_BIN", lakehouse_bin())
            .env("LAKEHOUSE_PROJECT", p.path())
            .output()
            .unwrap()
    };
    let ok = run(&p);
    assert_eq!(ok.status.code(), Some(0), "{}{}", stdout(&ok), stderr(&ok));
    (change_sets()[0].1)(&p);
    let out = run(&p);
    assert_eq!(out.status.code(), Some(3), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("## lakehouse plan (against `HEAD`)"), "{}", stdout(&out));
    assert!(stderr(&out).contains("without a DPO approval"), "{}", stderr(&out));
    let written = std::fs::read_to_string(p.path().join(".lakehouse/plan.md")).unwrap();
    assert_eq!(written, stdout(&out));
}

/// `--preview`: each model that rebuilds, its rows now and with the change set, on the current lake.
#[test]
fn preview_counts_the_rows_now_and_after_the_change() {
    let p = committed_example();
    run_ok(&p, &["run"]);
    let count = |sql: &str| sql_csv(&p, sql).lines().nth(1).unwrap().to_string();
    let now = count("SELECT count(*) AS n FROM silver.meteo_observations");
    let kept = count("SELECT count(*) AS n FROM bronze.meteo_observations WHERE station = '13055001'");
    assert_ne!(now, kept, "the example has two stations");
    edit(
        &p,
        "transforms/silver/meteo_observations.sql",
        "FROM {{ source('meteo_observations') }}",
        "FROM {{ source('meteo_observations') }} WHERE station = '13055001'",
    );
    let out = p.run(&["plan", "--preview"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("  silver.meteo_observations: {now} → {kept}\n")), "{text}");
    let gold = count("SELECT count(*) AS n FROM gold.incidents_weather_daily");
    assert!(text.contains(&format!("  gold.incidents_weather_daily: {gold} → ")), "{text}");
}

/// `--against-lake`: the declarations against the tables as they are.
#[test]
fn against_lake_compares_the_declarations_with_the_tables() {
    let p = TestProject::example(None);
    let out = p.run(&["plan", "--against-lake"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("  ddsp_incidents: bronze.ddsp_incidents is not ingested yet  [privacy]"),
        "{}",
        stdout(&out)
    );
    run_ok(&p, &["run"]);
    let built = run_ok(&p, &["plan", "--against-lake"]);
    assert!(built.contains("No change to sources, models"), "{built}");
    (change_sets()[0].1)(&p);
    edit(
        &p,
        "transforms/silver/meteo_observations.sql",
        "    humidity_pct\n",
        "    humidity_pct,\n    wind_kmh * 0.54 AS wind_knots\n",
    );
    let out = p.run(&["plan", "--against-lake", "--format", "md"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let md = stdout(&out);
    assert!(md.contains("## lakehouse plan (against `the lake`)"), "{md}");
    assert!(
        md.contains("- `ddsp_incidents`: column `victim_age` declared, not in bronze.ddsp_incidents yet (int, pii: quasi) **[privacy]**"),
        "{md}"
    );
    assert!(
        md.contains("- `silver.meteo_observations`: its definition differs from the one its table was built from"),
        "{md}"
    );
    assert!(md.contains("silver.meteo_observations, gold.incidents_weather_daily"), "{md}");
}
