//! Every invalid manifest and project file in `tests/fixtures/*/invalid/` snapshots its diagnostics.

use lakehouse::manifest::{LoadError, Project};
use lakehouse_tests::{TestProject, fixtures};

fn diagnostics(p: &TestProject) -> String {
    match Project::load(p.path()) {
        Ok(_) => panic!("expected problems"),
        Err(LoadError::Invalid(d)) => d.to_string(),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn invalid_source_manifests() {
    insta::glob!("../fixtures/manifests/invalid", "*.yaml", |path| {
        let p = TestProject::empty();
        std::fs::copy(fixtures().join("project/lakehouse.yaml"), p.path().join("lakehouse.yaml")).unwrap();
        let name = path.file_name().unwrap();
        p.write(&format!("sources/{}", name.to_string_lossy()), std::fs::read(path).unwrap());
        insta::assert_snapshot!(diagnostics(&p));
    });
}

#[test]
fn invalid_project_files() {
    insta::glob!("../fixtures/projects/invalid", "*.yaml", |path| {
        let p = TestProject::empty();
        let text = std::fs::read_to_string(path).unwrap().replace("PROJECT_DIR", &p.path().display().to_string());
        p.write("lakehouse.yaml", text);
        insta::assert_snapshot!(diagnostics(&p));
    });
}

/// Problems in several files are all reported, sorted by file and line.
#[test]
fn all_files_are_checked_at_once() {
    let p = TestProject::empty();
    std::fs::copy(fixtures().join("project/lakehouse.yaml"), p.path().join("lakehouse.yaml")).unwrap();
    for name in ["unknown_partner", "bad_cron", "several_problems"] {
        let text = std::fs::read(fixtures().join(format!("manifests/invalid/{name}.yaml"))).unwrap();
        p.write(&format!("sources/{name}.yaml"), text);
    }
    let out = diagnostics(&p);
    let files: Vec<&str> =
        out.lines().filter(|l| l.starts_with("sources/")).map(|l| l.split(':').next().unwrap()).collect();
    let mut sorted = files.clone();
    sorted.sort();
    assert_eq!(files, sorted, "{out}");
    for name in ["unknown_partner", "bad_cron", "several_problems"] {
        assert!(out.contains(&format!("sources/{name}.yaml:")), "{name} missing in\n{out}");
    }
    assert!(out.matches("sources/several_problems.yaml:").count() == 7, "{out}");
}

/// The example deployment is valid.
#[test]
fn example_deployment_is_valid() {
    let p = TestProject::example(None);
    let project = Project::load(p.path()).unwrap_or_else(|e| panic!("{e}"));
    assert!(project.sources.len() >= 5);
}

/// The JSON Schema accepts the structure of the example manifests (spot checks of its content).
#[test]
fn json_schema_describes_manifests() {
    let schema = lakehouse::manifest::source_json_schema();
    let props = &schema["properties"];
    for field in ["version", "name", "owner", "schedule", "connector", "format", "columns", "load", "retention"] {
        assert!(props.get(field).is_some(), "schema lacks {field}");
    }
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let text = schema.to_string();
    for kind in ["\"files\"", "\"csv\"", "\"ndjson\"", "\"parquet\"", "\"windows-1252\"", "\"direct\""] {
        assert!(text.contains(kind), "schema lacks {kind}");
    }
}

/// The committed schema that editors use is the one `lakehouse schema` prints.
#[test]
fn committed_json_schema_is_up_to_date() {
    let out = TestProject::empty().run(&["schema"]);
    assert!(out.status.success());
    let committed = std::fs::read_to_string(lakehouse_tests::repo().join("sources/manifest.schema.json")).unwrap();
    assert_eq!(
        committed.trim_end(),
        String::from_utf8(out.stdout).unwrap().trim_end(),
        "sources/manifest.schema.json is stale: run `lakehouse schema > sources/manifest.schema.json`"
    );
}
