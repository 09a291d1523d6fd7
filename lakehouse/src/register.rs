//! The register of processing activities (GDPR art. 30), generated from the deployment's own declarations:
//! `lakehouse.yaml` (controller, partners, keys), each source manifest (purpose, legal basis, data subjects,
//! privacy classes, agreement, retention), the models (what each source's data becomes) and the access policy
//! (who receives it). `lakehouse register` prints it as Markdown, HTML or CSV.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::manifest::{KeySource, LoadedSource, Pii, Project};
use crate::privacy::{KeyRing, QUARANTINE_DOMAIN};
use crate::transform::Plan;

/// What the register says of one processing: a source and the tables its data reaches.
#[derive(Debug, Clone, Serialize)]
pub struct Processing {
    pub source: String,
    pub description: String,
    pub purpose: Option<String>,
    pub legal_basis: Option<String>,
    pub data_subjects: Vec<String>,
    /// `direct` identifiers, pseudonymized at landing (`reporter_name (domain police, casefold)`).
    pub pseudonymized: Vec<String>,
    /// `direct` identifiers kept in clear, with the approval reference.
    pub kept_clear: Vec<String>,
    pub quasi: Vec<String>,
    pub sensitive: Vec<String>,
    /// `partner name (kind)`.
    pub provider: String,
    pub agreement: Option<String>,
    /// The bronze tables, then the models reading them, directly or not.
    pub tables: Vec<String>,
    /// `role (partner p): table, table`.
    pub recipients: Vec<String>,
    pub retention: String,
    pub security: Vec<String>,
    pub transfers: String,
    /// What the manifest should declare and does not.
    pub missing: Vec<String>,
}

/// The whole register.
#[derive(Debug, Clone, Serialize)]
pub struct Register {
    pub controller: String,
    pub description: Option<String>,
    pub processings: Vec<Processing>,
    /// Sources with no personal data (listed for completeness).
    pub without_personal_data: Vec<String>,
}

/// Builds the register of `project`.
pub fn build(project: &Project) -> Register {
    let mut diags = crate::manifest::Diagnostics::default();
    let plan = Plan::build(project, &Default::default(), &mut diags);
    let keys = key_ids(project);
    let mut processings = Vec::new();
    let mut without = Vec::new();
    for src in &project.sources {
        match processing(project, &plan, keys.as_ref(), src) {
            Some(p) => processings.push(p),
            None => without.push(src.manifest.name.to_string()),
        }
    }
    Register {
        controller: project.file.name.clone(),
        description: project.file.description.clone(),
        processings,
        without_personal_data: without,
    }
}

/// The key ids of the deployment, when its key source can be read without creating anything.
fn key_ids(project: &Project) -> Option<KeyRing> {
    let source = match &project.file.privacy.keys {
        KeySource::File { path, .. } => KeySource::File { path: path.clone(), create_if_missing: false },
        other => other.clone(),
    };
    KeyRing::load(&source, &[]).ok()
}

fn processing(project: &Project, plan: &Plan, keys: Option<&KeyRing>, src: &LoadedSource) -> Option<Processing> {
    let m = &src.manifest;
    let (mut pseudonymized, mut kept_clear, mut quasi, mut sensitive) = (vec![], vec![], vec![], vec![]);
    let mut domains = BTreeSet::new();
    for t in m.tables() {
        let prefix = if t.name == m.name.as_str() { String::new() } else { format!("{}.", t.name) };
        for (name, c) in &t.columns {
            let shown = format!("{prefix}{name}");
            match c.pii {
                Pii::None => {}
                Pii::Direct => match (&c.keep_clear, &c.domain) {
                    (Some(approval), _) => kept_clear.push(format!("{shown} (approval {approval})")),
                    (None, Some(d)) => {
                        domains.insert(d.to_string());
                        pseudonymized
                            .push(format!("{shown} (domain {d}, {})", format!("{:?}", c.normalize).to_lowercase()));
                    }
                    (None, None) => pseudonymized.push(shown),
                },
                Pii::Quasi => quasi.push(shown),
                Pii::Sensitive => sensitive.push(shown),
            }
        }
    }
    if pseudonymized.is_empty() && kept_clear.is_empty() && quasi.is_empty() && sensitive.is_empty() {
        return None;
    }
    // The tables the data reaches: bronze, then every model reading one of them, directly or not.
    let bronze: BTreeSet<String> = m.tables().iter().map(|t| format!("bronze.{}", t.name)).collect();
    let mut tables: Vec<String> = bronze.iter().cloned().collect();
    tables.push(format!("bronze.{}__quarantine (records refused, encrypted)", m.name));
    tables.extend(plan.with_downstream(&bronze));
    let mut recipients = Vec::new();
    for (name, role) in &project.policy.roles {
        let granted: Vec<&str> = tables
            .iter()
            .filter(|t| role.spec.grants.iter().any(|g| crate::manifest::policy::glob(&g.table, t)))
            .map(String::as_str)
            .collect();
        if granted.is_empty() {
            continue;
        }
        let partner = role.spec.partner.as_deref().map(|p| format!(" (partner {p})")).unwrap_or_default();
        recipients.push(format!("role {name}{partner}: {}", granted.join(", ")));
    }
    let partner = project.file.partners.iter().find(|p| p.id == m.owner);
    let provider = match partner {
        Some(p) => format!("{} — {} ({})", p.id, p.name, format!("{:?}", p.kind).to_lowercase()),
        None => m.owner.to_string(),
    };
    let ids = |domain: &str| {
        keys.and_then(|k| k.all(domain).ok())
            .map(|ks| ks.iter().map(|k| k.id.clone()).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "key ids not readable here".into())
    };
    let mut security = Vec::new();
    for d in &domains {
        security.push(format!("pseudonymization at landing, HMAC-SHA-256, domain {d} (keys {})", ids(d)));
    }
    security.push(format!(
        "quarantined records encrypted, AES-256-GCM (keys {}); archived units likewise",
        ids(QUARANTINE_DOMAIN)
    ));
    if tables.iter().any(|t| t.starts_with("gold.")) {
        security
            .push(format!("gold aggregates: cells under {} people suppressed", project.file.privacy.min_group_size));
    }
    security.push("access: default deny, roles with row filters and column masks, every query logged (system.queries); bronze is never served".into());
    let mut missing = Vec::new();
    if m.purpose.is_none() {
        missing.push("purpose".to_string());
    }
    if m.legal_basis.is_none() {
        missing.push("legal_basis".to_string());
    }
    if m.data_subjects.is_empty() {
        missing.push("data_subjects".to_string());
    }
    Some(Processing {
        source: m.name.to_string(),
        description: m.description.clone(),
        purpose: m.purpose.clone(),
        legal_basis: m.legal_basis.map(|b| b.describe().to_string()),
        data_subjects: m.data_subjects.clone(),
        pseudonymized,
        kept_clear,
        quasi,
        sensitive,
        provider,
        agreement: m.agreement.clone(),
        tables,
        recipients,
        retention: format!(
            "{} in bronze and the quarantine (`lakehouse retention`, daily under the scheduler); silver and gold \
             follow on their next run",
            m.retention
        ),
        security,
        transfers: "none (the warehouse and the catalog are where lakehouse.yaml puts them)".into(),
        missing,
    })
}

const NOT_DECLARED: &str = "NOT DECLARED";

impl Processing {
    /// The register's fields, in order: (label, value).
    pub fn fields(&self) -> Vec<(&'static str, String)> {
        let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join("; ") };
        vec![
            ("Processing", format!("{} — {}", self.source, self.description)),
            ("Purpose", self.purpose.clone().unwrap_or_else(|| NOT_DECLARED.into())),
            ("Legal basis", self.legal_basis.clone().unwrap_or_else(|| NOT_DECLARED.into())),
            (
                "Data subjects",
                if self.data_subjects.is_empty() { NOT_DECLARED.into() } else { self.data_subjects.join(", ") },
            ),
            ("Direct identifiers, pseudonymized", list(&self.pseudonymized)),
            ("Direct identifiers kept in clear", list(&self.kept_clear)),
            ("Quasi-identifiers", list(&self.quasi)),
            ("Sensitive data", list(&self.sensitive)),
            ("Provided by", self.provider.clone()),
            ("Agreement", self.agreement.clone().unwrap_or_else(|| "none".into())),
            ("Tables", self.tables.join(", ")),
            ("Recipients", list(&self.recipients)),
            ("Retention", self.retention.clone()),
            ("Security measures", self.security.join("; ")),
            ("Transfers outside the EU", self.transfers.clone()),
        ]
    }
}

impl Register {
    pub fn markdown(&self) -> String {
        let mut out = format!("# Register of processing activities — {}\n\n", self.controller);
        if let Some(d) = &self.description {
            out.push_str(&format!("{d}\n\n"));
        }
        out.push_str(
            "Generated by `lakehouse register` from lakehouse.yaml, the source manifests, the models and the access \
             policy (GDPR art. 30).\n",
        );
        for p in &self.processings {
            out.push_str(&format!("\n## {}\n\n| | |\n|---|---|\n", p.source));
            for (label, value) in p.fields().into_iter().skip(1) {
                out.push_str(&format!("| {label} | {} |\n", value.replace('|', "\\|")));
            }
            if !p.missing.is_empty() {
                out.push_str(&format!("\n**To declare in sources/{}.yaml:** {}\n", p.source, p.missing.join(", ")));
            }
        }
        if !self.without_personal_data.is_empty() {
            out.push_str(&format!("\n## Sources without personal data\n\n{}\n", self.without_personal_data.join(", ")));
        }
        out
    }

    pub fn html(&self) -> String {
        let e = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;");
        let mut out = format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Register of processing activities — \
             {c}</title>\n<style>body{{font-family:sans-serif;max-width:70em;margin:auto}}th{{text-align:left;\
             vertical-align:top;width:16em}}td,th{{border-bottom:1px solid #ccc;padding:.3em}}table{{border-collapse:\
             collapse;width:100%}}.missing{{color:#b00;font-weight:bold}}</style></head><body>\n<h1>Register of \
             processing activities — {c}</h1>\n",
            c = e(&self.controller)
        );
        if let Some(d) = &self.description {
            out.push_str(&format!("<p>{}</p>\n", e(d)));
        }
        for p in &self.processings {
            out.push_str(&format!("<h2 id=\"{0}\">{0}</h2>\n<table>\n", e(&p.source)));
            for (label, value) in p.fields().into_iter().skip(1) {
                let class = if value == NOT_DECLARED { " class=\"missing\"" } else { "" };
                out.push_str(&format!("<tr><th>{}</th><td{class}>{}</td></tr>\n", e(label), e(&value)));
            }
            out.push_str("</table>\n");
        }
        if !self.without_personal_data.is_empty() {
            out.push_str(&format!(
                "<h2>Sources without personal data</h2>\n<p>{}</p>\n",
                e(&self.without_personal_data.join(", "))
            ));
        }
        out.push_str("</body></html>\n");
        out
    }

    /// One line per processing, the fields as columns (RFC 4180 quoting).
    pub fn csv(&self) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut out = String::new();
        let Some(first) = self.processings.first() else { return out };
        out.push_str(&first.fields().iter().map(|(l, _)| q(l)).collect::<Vec<_>>().join(","));
        out.push('\n');
        for p in &self.processings {
            out.push_str(&p.fields().iter().map(|(_, v)| q(v)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }
}
