//! The access policy (`access/*.yaml`) enforced in the plan: each example role sees exactly its tables, rows
//! and masks through `lakehouse sql --as ROLE`, no statement reads around it, and `validate` locates every
//! problem of a policy file.

use lakehouse_tests::*;

fn as_role(p: &TestProject, role: &str, query: &str) -> std::process::Output {
    p.run(&["sql", "--as", role, "--format", "csv", query])
}

fn csv_as(p: &TestProject, role: &str, query: &str) -> String {
    let out = as_role(p, role, query);
    assert!(out.status.success(), "--as {role}: {query}\n{}", stderr(&out));
    stdout(&out)
}

fn refused(p: &TestProject, role: &str, query: &str) -> String {
    let out = as_role(p, role, query);
    assert!(!out.status.success(), "--as {role} was served: {query}\n{}", stdout(&out));
    stderr(&out)
}

/// The example after one run, with its policy.
fn example() -> TestProject {
    let p = TestProject::example(None);
    run_ok(&p, &["run"]);
    p
}

const SECTOR_1: &str = "arrondissement IN (1, 7)";

#[test]
fn each_role_sees_its_tables_rows_and_masks() {
    let p = example();
    let listed = |role| {
        csv_as(
            &p,
            role,
            "SELECT table_schema || '.' || table_name AS t FROM information_schema.tables \
             WHERE table_schema <> 'information_schema' ORDER BY 1",
        )
    };
    assert_eq!(
        listed("ddsp"),
        "t\ngold.accident_hotspots\ngold.incidents_by_arrondissement_period\ngold.incidents_weather_daily\n"
    );
    assert_eq!(
        listed("auditor"),
        "t\ncatalog.attempts\ncatalog.column_lineage\ncatalog.columns\ncatalog.lineage\ncatalog.runs\n\
         catalog.tables\ngold.accident_hotspots\ngold.fire_response_times\ngold.incidents_by_arrondissement_period\n\
         gold.incidents_weather_daily\ngold.night_noise_near_events\nsystem.runs\n"
    );

    // Masks: the masked column is NULL on every row, the others as they are.
    let all = sql_csv(&p, "SELECT cell, accidents, from_police FROM gold.accident_hotspots ORDER BY cell");
    let police = csv_as(&p, "ddsp", "SELECT cell, accidents, from_police FROM gold.accident_hotspots ORDER BY cell");
    assert_eq!(police, all);
    assert!(all.lines().count() > 2, "{all}");
    let fire =
        csv_as(&p, "ddsp", "SELECT count(*) AS n, count(from_fire_brigade) AS clear FROM gold.accident_hotspots");
    assert_eq!(fire, format!("n,clear\n{},0\n", all.lines().count() - 1));

    // Row filters: the sector's town hall reads its two arrondissements, every column in clear.
    let query = "SELECT * FROM gold.incidents_by_arrondissement_period ORDER BY arrondissement, period_of_day";
    let expected = sql_csv(
        &p,
        &format!(
            "SELECT * FROM gold.incidents_by_arrondissement_period WHERE {SECTOR_1} ORDER BY arrondissement, period_of_day"
        ),
    );
    assert!(expected.lines().count() > 1, "the example has incidents in the 1st or 7th: {expected}");
    assert_eq!(csv_as(&p, "mairie_secteur_1", query), expected);
    assert_ne!(csv_as(&p, "ddsp", query), expected, "the police read every arrondissement");

    // Silver under a DPO approval, tokens masked; the catalog filtered to what the role reads.
    let reports = csv_as(
        &p,
        "city_analyst",
        "SELECT count(*) AS n, count(reporter_token) AS tokens, count(cell_1km) AS cells, count(topic) AS topics \
         FROM silver.ville_signalements",
    );
    let n = sql_csv(&p, "SELECT count(*) AS n FROM silver.ville_signalements");
    let n = n.lines().nth(1).unwrap();
    assert_eq!(reports, format!("n,tokens,cells,topics\n{n},0,0,{n}\n"));
    let catalog = csv_as(&p, "city_analyst", "SELECT DISTINCT layer FROM catalog.tables ORDER BY 1");
    assert_eq!(catalog, "layer\ngold\nsilver\n");

    // Not granted: not there at all.
    for (role, table) in [
        ("ddsp", "gold.fire_response_times"),
        ("ddsp", "bronze.ddsp_incidents"),
        ("ddsp", "bronze.ddsp_incidents__quarantine"),
        ("dpo", "bronze.ddsp_incidents"),
        ("city_analyst", "silver.ddsp_incidents"),
        ("meteo", "system.runs"),
        ("bmpm", "catalog.runs"),
    ] {
        let e = refused(&p, role, &format!("SELECT * FROM {table}"));
        assert!(e.contains("not found"), "{role} {table}: {e}");
    }
}

/// Every way of naming a governed table goes through the same rewrite: the rows returned to the sector's town
/// hall are always those of its arrondissements, the masked column is never in clear.
#[test]
fn statements_cannot_read_around_the_policy() {
    let p = example();
    let table = "gold.incidents_by_arrondissement_period";
    let total = |q: &str| sql_csv(&p, q);
    let sector = total(&format!("SELECT count(*) AS n, sum(incidents) AS s FROM {table} WHERE {SECTOR_1}"));
    for q in [
        format!("SELECT count(*) AS n, sum(incidents) AS s FROM {table}"),
        format!("SELECT count(*) AS n, sum(incidents) AS s FROM (SELECT * FROM {table}) t"),
        format!("WITH x AS (SELECT * FROM {table}) SELECT count(*) AS n, sum(incidents) AS s FROM x"),
        "SELECT count(*) AS n, sum(incidents) AS s FROM \"gold\".\"incidents_by_arrondissement_period\" AS \"T\""
            .to_string(),
        format!("SELECT count(*) AS n, sum(incidents) AS s FROM datafusion.{table}"),
        format!(
            "SELECT count(*) AS n, sum(incidents) AS s FROM (SELECT * FROM {table} WHERE arrondissement IN (1, 7) \
             UNION ALL SELECT * FROM {table} WHERE arrondissement NOT IN (1, 7)) u"
        ),
        format!(
            "SELECT count(*) AS n, sum(a.incidents) AS s FROM {table} a JOIN {table} b \
             ON a.arrondissement = b.arrondissement AND a.period_of_day = b.period_of_day"
        ),
        format!(
            "SELECT count(*) AS n, sum(incidents) AS s FROM (SELECT incidents, \
             row_number() OVER (PARTITION BY arrondissement ORDER BY incidents) AS r FROM {table}) w"
        ),
        format!(
            "SELECT count(*) AS n, sum(incidents) AS s FROM {table} \
             WHERE arrondissement IN (SELECT arrondissement FROM {table} WHERE arrondissement NOT IN (1, 7)) \
             OR arrondissement IN (1, 7)"
        ),
    ] {
        assert_eq!(csv_as(&p, "mairie_secteur_1", &q), sector, "{q}");
    }
    // A scalar subquery reads the filtered table too.
    let q = format!("SELECT (SELECT count(DISTINCT arrondissement) FROM {table}) AS n");
    assert!(matches!(csv_as(&p, "mairie_secteur_1", &q).as_str(), "n\n1\n" | "n\n2\n"));

    // A masked column stays masked through aggregates, filters, unions and expressions.
    for q in [
        "SELECT count(from_fire_brigade) AS v FROM gold.accident_hotspots",
        "SELECT count(*) AS v FROM gold.accident_hotspots WHERE from_fire_brigade IS NOT NULL",
        "SELECT count(v) AS v FROM (SELECT from_fire_brigade AS v FROM gold.accident_hotspots \
         UNION ALL SELECT from_fire_brigade FROM gold.accident_hotspots)",
        "SELECT count(*) AS v FROM gold.accident_hotspots WHERE accidents - from_police = from_fire_brigade",
        "SELECT count(*) AS v FROM gold.accident_hotspots a JOIN gold.accident_hotspots b \
         ON a.cell = b.cell AND a.from_fire_brigade = b.from_fire_brigade",
    ] {
        assert_eq!(csv_as(&p, "ddsp", q), "v\n0\n", "{q}");
    }

    // EXPLAIN plans the rewritten statement (the role's arrondissements are in its filter); EXPLAIN ANALYZE
    // runs it.
    let explained = csv_as(&p, "mairie_secteur_1", &format!("EXPLAIN SELECT * FROM {table}"));
    assert!(explained.contains("Filter: ") && explained.contains("Int64(7)"), "{explained}");
    let analyzed = csv_as(&p, "mairie_secteur_1", &format!("EXPLAIN ANALYZE SELECT * FROM {table}"));
    let rows = sector.lines().nth(1).and_then(|l| l.split(',').next()).unwrap();
    assert!(analyzed.contains(&format!("output_rows={rows},")), "{rows} rows: {analyzed}");

    // No time travel, no writes, no files under a role.
    let e = stderr(&p.run(&["sql", "--as", "dpo", "--at", &format!("{table}=0"), "SELECT 1"]));
    assert!(e.contains("--at cannot be used with --as"), "{e}");
    let e = refused(&p, "dpo", &format!("INSERT INTO {table} SELECT * FROM {table}"));
    assert!(e.contains("read-only"), "{e}");
    let e = refused(&p, "dpo", "SELECT * FROM '/etc/passwd'");
    assert!(e.contains("not found") || e.contains("denied"), "{e}");
    // The identity functions are the session's (`current_user` without parentheses, as in PostgreSQL).
    assert_eq!(
        csv_as(&p, "mairie_secteur_1", "SELECT current_user AS u, current_role() AS r, current_partner() AS p"),
        "u,r,p\nmairie_secteur_1,mairie_secteur_1,ville\n"
    );
    let e = refused(&p, "mairie_secteur_1", "SELECT current_attribute('arrondissements') AS a");
    assert!(e.contains("access policy"), "{e}");
}

#[test]
fn an_unknown_role_is_named_with_the_close_one() {
    let p = TestProject::example(None);
    let e = stderr(&p.run(&["sql", "--as", "audtor", "SELECT 1"]));
    assert!(e.contains("unknown role `audtor`: did you mean `auditor`?"), "{e}");
}

#[test]
fn validate_locates_every_problem_of_a_policy() {
    let p = TestProject::example(None);
    p.write(
        "access/zones.yaml",
        "version: 1
roles:
  ville_nord:
    partner: vile
    attributes: { sector: 8 }
    grants:
      - table: gold.incidents_by_arrondisement_period
      - table: bronze.ddsp_incidents
      - table: silver.ddsp_incidents
        masks: { reporter_token: null }
      - table: gold.fire_response_times
        rows: arrondissement IN (15, 16) AND district = 'nord'
      - table: gold.accident_hotspots
        masks: { victims: null }
      - table: gold.night_noise_near_events
        rows: reports > current_attribute('threshold')
",
    );
    let out = p.run(&["validate"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    let f = "access/zones.yaml";
    for expected in [
        format!("{f}:4:5: roles.ville_nord.partner: unknown partner `vile`\n  hint: did you mean `ville`?"),
        format!(
            "{f}:7:9: roles.ville_nord.grants.0.table: `gold.incidents_by_arrondisement_period` names no table \
             of this deployment\n  hint: did you mean `gold.incidents_by_arrondissement_period`?"
        ),
        format!("{f}:8:9: roles.ville_nord.grants.1.table: `bronze.ddsp_incidents`: the bronze layer is never served"),
        format!("{f}:9:9: roles.ville_nord.grants.2: `silver.ddsp_incidents` serves silver tables without an approval"),
        format!("{f}:12:9: roles.ville_nord.grants.3.rows: gold.fire_response_times: "),
        format!("{f}:14:18: roles.ville_nord.grants.4.masks.victims: gold.accident_hotspots has no column `victims`"),
        format!("{f}:16:9: roles.ville_nord.grants.5.rows: gold.night_noise_near_events: "),
    ] {
        assert!(e.contains(&expected), "missing:\n{expected}\nin:\n{e}");
    }
    assert!(e.contains("district"), "{e}");
    assert!(e.contains("role ville_nord has no attribute 'threshold' (its attributes: sector)"), "{e}");
    // A role defined in two files.
    p.write("access/zones.yaml", "version: 1\nroles:\n  dpo:\n    grants: []\n");
    let e = stderr(&p.run(&["validate"]));
    assert!(
        e.contains(&format!(
            "{f}:3:3: roles.dpo: role `dpo` is defined twice\n  hint: it is first defined in access/roles.yaml"
        )),
        "{e}"
    );
    // The example's own policy validates, and the count of roles is shown.
    std::fs::remove_file(p.path().join(f)).unwrap();
    let out = run_ok(&p, &["validate"]);
    assert!(out.contains("access: 7 roles"), "{out}");
}

fn add_with_stdin(p: &TestProject, args: &[&str], password: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child =
        p.command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// Users hold roles of the policy and a SCRAM-SHA-256 verifier of their password; no password is stored or
/// printed except a generated one, once.
#[tokio::test]
async fn users_hold_roles_and_verifiers_never_passwords() {
    use lakehouse::access::scram::Verifier;
    let p = TestProject::example(None);
    let out = run_ok(&p, &["user", "add", "alice", "--role", "city_analyst", "--role", "auditor,city_analyst"]);
    let generated = out
        .lines()
        .find_map(|l| l.split_once("password of alice (shown once, store it now): "))
        .map(|(_, pw)| pw.to_string())
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(generated.len(), 24, "{out}");
    let secret = "a long enough secret for bob";
    let out = add_with_stdin(&p, &["user", "add", "bob", "--role", "ddsp", "--password-stdin"], secret);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(secret) && !stdout(&out).contains("shown once"), "{}", stdout(&out));

    let list = run_ok(&p, &["user", "list", "--format", "csv"]);
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines[0], "name,roles,created_at,updated_at");
    assert!(lines[1].starts_with("alice,\"city_analyst, auditor\","), "{list}");
    assert!(lines[2].starts_with("bob,ddsp,"), "{list}");

    let db_url = format!("sqlite://{}", p.path().join(".lakehouse/catalog.db").display());
    let verifier_of = |users: &[catalog::UserRow], name: &str| {
        Verifier::parse(&users.iter().find(|u| u.name == name).unwrap().verifier).unwrap()
    };
    let users = catalog::Catalog::open(&db_url).await.unwrap().users().await.unwrap();
    for (name, password) in [("alice", generated.as_str()), ("bob", secret)] {
        let v = verifier_of(&users, name);
        assert_eq!(v, Verifier::with_salt(password, &v.salt, v.iterations), "{name}'s verifier is of its password");
    }
    let stored = std::fs::read(p.path().join(".lakehouse/catalog.db")).unwrap();
    for password in [generated.as_str(), secret] {
        assert!(!stored.windows(password.len()).any(|w| w == password.as_bytes()), "a password is stored");
    }

    // Refusals: a taken name, an unknown role, a short password, a name that is not one.
    let e = stderr(&p.run(&["user", "add", "alice", "--role", "dpo"]));
    assert!(e.contains("user `alice` exists"), "{e}");
    let e = stderr(&p.run(&["user", "add", "carol", "--role", "audtor"]));
    assert!(e.contains("unknown role `audtor`: did you mean `auditor`?"), "{e}");
    let out = add_with_stdin(&p, &["user", "add", "carol", "--role", "dpo", "--password-stdin"], "short");
    assert!(!out.status.success() && stderr(&out).contains("fewer than 12 characters"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("short\n"));
    let e = stderr(&p.run(&["user", "add", "Carol Smith", "--role", "dpo"]));
    assert!(e.contains("invalid user name `Carol Smith`"), "{e}");

    // A new password, new roles, a removal; a catalog rebuild keeps the users.
    let out = add_with_stdin(&p, &["user", "passwd", "bob", "--password-stdin"], "another long secret");
    assert!(out.status.success(), "{}", stderr(&out));
    run_ok(&p, &["user", "roles", "bob", "--role", "bmpm"]);
    run_ok(&p, &["user", "remove", "alice"]);
    let e = stderr(&p.run(&["user", "remove", "alice"]));
    assert!(e.contains("no user `alice`"), "{e}");
    run_ok(&p, &["catalog", "rebuild"]);
    let users = catalog::Catalog::open(&db_url).await.unwrap().users().await.unwrap();
    assert_eq!(users.iter().map(|u| (u.name.as_str(), u.roles.as_str())).collect::<Vec<_>>(), [("bob", "bmpm")]);
    let v = verifier_of(&users, "bob");
    assert_eq!(v, Verifier::with_salt("another long secret", &v.salt, v.iterations));
}
