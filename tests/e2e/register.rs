//! `lakehouse register`: the register of processing activities (GDPR art. 30) of the example deployment, from its
//! manifests, models and access policy.

use lakehouse_tests::*;

#[test]
fn register_of_the_example_deployment() {
    let p = TestProject::example(None);
    insta::assert_snapshot!("register_md", run_ok(&p, &["register"]));

    let html = run_ok(&p, &["register", "--format", "html"]);
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"), "{html}");
    assert!(html.contains("<h2 id=\"ddsp_incidents\">ddsp_incidents</h2>"), "{html}");
    // Text is escaped: the partner's apostrophe-free names and the `&`-free fields pass, markup does not.
    assert!(!html.contains("<script"), "{html}");

    let csv = run_ok(&p, &["register", "--format", "csv"]);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("\"Processing\",\"Purpose\",\"Legal basis\",\"Data subjects\","), "{csv}");
    let sources: Vec<&str> = lines[1..].iter().map(|l| l.trim_start_matches('"').split(' ').next().unwrap()).collect();
    assert_eq!(sources, ["bmpm_interventions", "ddsp_incidents", "ville_signalements"]);
    // Every line has the header's number of fields (all quoted, none holding a line break).
    let fields = |l: &str| l.split("\",\"").count();
    assert!(lines.iter().all(|l| fields(l) == fields(lines[0]) && l.starts_with('"') && l.ends_with('"')), "{csv}");
}

/// A source with personal data and no purpose, legal basis or data subjects is shown as such, with what to add.
#[test]
fn undeclared_register_fields_are_pointed_out() {
    let p = TestProject::example(None);
    let path = p.path().join("sources/ddsp_incidents.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let stripped: String = text
        .lines()
        .filter(|l| !["purpose:", "legal_basis:", "data_subjects:"].iter().any(|f| l.starts_with(f)))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&path, stripped).unwrap();
    let md = run_ok(&p, &["register"]);
    assert!(md.contains("**To declare in sources/ddsp_incidents.yaml:** purpose, legal_basis, data_subjects"), "{md}");
    assert!(md.contains("| Legal basis | NOT DECLARED |"), "{md}");
    let html = run_ok(&p, &["register", "--format", "html"]);
    assert!(html.contains("<td class=\"missing\">NOT DECLARED</td>"), "{html}");
}
