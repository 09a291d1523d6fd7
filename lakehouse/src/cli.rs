//! Command-line interface: one enum of verbs, one file per verb in `commands/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lakehouse",
    version,
    about = "Declarative ingestion into bronze, silver and gold Delta tables, privacy by design"
)]
pub struct Cli {
    /// Project directory (where lakehouse.yaml lives).
    #[arg(long, global = true, default_value = ".", env = "LAKEHOUSE_PROJECT")]
    pub project: PathBuf,
    /// More log output (-v debug, -vv trace). Logs go to stderr; `LAKEHOUSE_LOG` takes a full filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check lakehouse.yaml, every source manifest and every transform model (templates, DAG, SQL, sidecars);
    /// print all problems at once.
    Validate {
        /// Template variable NAME=VALUE (overrides `vars:` in lakehouse.yaml); repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
    },
    /// Run the named sources once (all when none is named) into their bronze tables.
    Ingest {
        /// Source names (the `name` of manifests in sources/).
        sources: Vec<String>,
    },
    /// Publish generated messages to a stream source's broker (`mqtt`, `nats`), where its connector reads them:
    /// values of each declared column's type (in its `values` and `range`), unique identifiers (`message_id`,
    /// `unique` columns, `id` and `…_id`); for
    /// demonstrations, tests and benchmarks. Each message is stored by the broker before the next window is sent.
    Feed {
        /// A stream source's name.
        source: String,
        /// Messages to publish.
        #[arg(long, default_value_t = 100)]
        count: u64,
        /// Messages per second (0: as fast as the broker takes them).
        #[arg(long, default_value_t = 10.0)]
        rate: f64,
        /// Every K-th message is not JSON (it is quarantined): shows the quarantine at work. 0: none.
        #[arg(long, default_value_t = 0)]
        bad_every: u64,
    },
    /// Print the rendered SQL of models, in DAG order.
    Compile {
        /// Models to print: `name`, `name+` (and what reads it), `+name` (and what it reads); repeatable.
        #[arg(long, short)]
        select: Vec<String>,
        /// Template variable NAME=VALUE; repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Render with `is_incremental()` true (what an incremental run executes).
        #[arg(long)]
        incremental: bool,
    },
    /// Build silver and gold tables: run the selected models (all when none) in DAG order.
    Transform {
        /// Models to run: `name`, `name+` (and what reads it), `+name` (and what it reads); repeatable.
        #[arg(long, short)]
        select: Vec<String>,
        /// Template variable NAME=VALUE; repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Rebuild in full, also incremental and up-to-date models.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Ingest every source once, then run every transform in DAG order; print a summary.
    Run {
        /// Template variable NAME=VALUE; repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Rebuild every model in full.
        #[arg(long)]
        full_refresh: bool,
    },
    /// Run the project continuously: each source on its cron, each model when its inputs change (or on its
    /// sidecar's cron). Stops on SIGTERM / Ctrl-C, letting running work finish within the grace period.
    Schedule {
        /// Template variable NAME=VALUE; repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        /// Seconds running work may take to finish after a stop signal; then it is abandoned (nothing partial
        /// is committed).
        #[arg(long, default_value_t = 30)]
        grace: u64,
        /// Sources run at the same time at most.
        #[arg(long, default_value_t = 2)]
        parallel: usize,
    },
    /// Per table: last successful run, freshness against its schedule, last error, next planned run.
    Status {
        /// Template variable NAME=VALUE; repeatable.
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Where a table version, or one of its columns, comes from: input tables at their exact Delta versions,
    /// runs, source manifests, partners and files (from the lake's commit metadata and file ledgers).
    Lineage {
        /// `layer.name` or `layer.name.column`.
        target: String,
        /// The table version (default: the latest).
        #[arg(long)]
        version: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: LineageFormat,
        /// The models that read the table, directly or not, instead of where it comes from.
        #[arg(long)]
        downstream: bool,
    },
    /// The catalog database (SQLite or PostgreSQL, `catalog:` in lakehouse.yaml).
    Catalog {
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Users of the query server: roles of the access policy and a SCRAM-SHA-256 verifier each (in the
    /// catalog database; never a password).
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// List the tables: Delta version, owner, description.
    Tables {
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// List run attempts (from `system.runs`), newest first.
    Runs {
        /// Only the runs of this table (`bronze.x`, `silver.y`, …).
        #[arg(long)]
        target: Option<String>,
        /// Only failed and abandoned runs.
        #[arg(long)]
        failed: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// List the statements the query server received (from `system.queries`), newest first.
    Queries {
        /// Only this user's.
        #[arg(long)]
        user: Option<String>,
        /// Only refused statements (not allowed by the server or the policy).
        #[arg(long)]
        refused: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// One table: description, owner, location, version, last run, and each column's type, privacy class and
    /// documentation (for models: where it comes from).
    Describe {
        /// `layer.name`.
        table: String,
        /// `json`: the whole description; `csv`: its columns.
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Re-run a model on the input versions a table version was built from (time travel) and say whether the
    /// result is identical to that version.
    Reproduce {
        /// `silver.x` or `gold.y`.
        table: String,
        /// The table version to reproduce.
        #[arg(long)]
        version: u64,
    },
    /// Run SQL over the warehouse: `bronze.*`, `silver.*`, `gold.*` and `system.runs`, with the privacy
    /// functions; output as a table, CSV or JSON.
    Sql {
        /// The query (or use -f).
        query: Option<String>,
        /// Read the query from a file.
        #[arg(short, long)]
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
        /// Time travel: read TABLE at VERSION (`--at gold.fire_response_times=3`); repeatable.
        #[arg(long, value_name = "TABLE=VERSION")]
        at: Vec<String>,
        /// See exactly what ROLE of the access policy (`access/*.yaml`) sees: only the tables it is granted,
        /// its row filters and masks applied in the plan.
        #[arg(long = "as", value_name = "ROLE")]
        as_role: Option<String>,
    },
    /// Serve the lake over the PostgreSQL wire protocol (psql, Python, BI tools): SCRAM-SHA-256 logins of the
    /// users of `lakehouse user`, each under its roles of the access policy; read only. `serve:` in
    /// lakehouse.yaml sets TLS and limits. SIGHUP reloads the project and policy; SIGTERM stops.
    Serve {
        /// Address and port (default: `serve.listen`, else 127.0.0.1:5433).
        #[arg(long, value_name = "HOST:PORT")]
        listen: Option<String>,
    },
    /// Delete the bronze and quarantine rows ingested longer ago than each manifest's `retention`, then VACUUM
    /// (GDPR storage limitation).
    Retention {
        /// Source names (all when none is named).
        sources: Vec<String>,
        /// Only count the rows that would be deleted.
        #[arg(long)]
        dry_run: bool,
        /// Evaluate retention as of this time (RFC 3339) instead of now.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
    },
    /// Erase a data subject everywhere (GDPR art. 17): bronze, quarantine, silver (through column lineage), gold
    /// rebuilt, old files and log entries removed; evidence kept in `system.erasures` (no identifier).
    Erase {
        /// The pseudonymization domain of the identifier (`privacy.domains`).
        #[arg(long)]
        domain: String,
        /// The DPO's reference of the request: the evidence is kept under it; rerun the same request to resume.
        #[arg(long, value_name = "ID")]
        request: String,
        /// A clear value of one of the domain's identifiers (it lands in shell history: prefer --value-stdin).
        #[arg(long, value_name = "VALUE", conflicts_with_all = ["value_stdin", "token"])]
        value: Option<String>,
        /// Read the clear value from standard input (its first line).
        #[arg(long, conflicts_with = "token")]
        value_stdin: bool,
        /// A known pseudonym of the person (64 hex digits, as in a bronze or silver column).
        #[arg(long, value_name = "PSEUDONYM")]
        token: Option<String>,
        /// Count what would be erased; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// `text` (default) or `json`.
        #[arg(long, value_enum, default_value = "text")]
        format: ReportFormat,
    },
    /// What a change set changes compared with a git ref, for reviewers and the DPO: sources, columns, privacy
    /// classes, retention, partners, models, DAG, access policy; exit 3 when privacy-relevant changes have no DPO
    /// approval in approvals.yaml.
    Plan {
        /// The git ref to compare with (the target branch of a pull request: `origin/main`).
        #[arg(long, default_value = "HEAD", value_name = "GIT-REF", conflicts_with = "against_lake")]
        base: String,
        /// Compare the declarations with the lake as it is instead: bronze columns, key ids, the definitions the
        /// models' tables were built from.
        #[arg(long)]
        against_lake: bool,
        #[arg(long, value_enum, default_value = "text")]
        format: PlanFormat,
        /// Also count the rows of each model that rebuilds, now and with the change set, on the current lake
        /// (needs the warehouse and the keys).
        #[arg(long)]
        preview: bool,
    },
    /// The register of processing activities (GDPR art. 30), from the manifests, models and access policy.
    Register {
        #[arg(long, value_enum, default_value = "md")]
        format: RegisterFormat,
    },
    /// Pseudonymization and encryption keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// List a source's quarantined records: file, line, column and reason.
    Quarantine {
        source: String,
        /// Also decrypt and print each original record (needs the `quarantine` key; may show personal data).
        #[arg(long)]
        raw: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Print the JSON Schema of source manifests (for editors and CI).
    Schema,
    /// Benchmarks on generated data.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum CatalogCommand {
    /// Rebuild the catalog from the lake alone (Delta commit metadata, file ledgers, the models' lineage).
    Rebuild,
}

#[derive(Debug, clap::Subcommand)]
pub enum UserCommand {
    /// Add a user with roles of the access policy. The password is generated and printed once, or read from
    /// standard input with `--password-stdin`.
    Add {
        name: String,
        /// A role of `access/*.yaml`; repeatable.
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
        /// Read the password from standard input (its first line) instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// List the users and their roles (never a verifier).
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormat,
    },
    /// Set a user's password: generated and printed once, or read from standard input with `--password-stdin`.
    Passwd {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Replace a user's roles.
    Roles {
        name: String,
        #[arg(long = "role", value_name = "ROLE", required = true)]
        roles: Vec<String>,
    },
    /// Remove a user.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Give a domain a new key for new data. The old key stays in the key file, listed before the new one: the
    /// pseudonyms made with it stay valid under its key id and `lakehouse erase` still finds them.
    Rotate { domain: String },
}

/// How `lakehouse plan` prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum PlanFormat {
    #[default]
    Text,
    /// Markdown, for a pull-request comment.
    Md,
    Json,
}

/// How the register of processing is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum RegisterFormat {
    /// Markdown, a table per processing.
    #[default]
    Md,
    /// A standalone HTML page.
    Html,
    /// One line per processing.
    Csv,
}

/// How a report is printed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    #[default]
    Text,
    Json,
}

/// How a listing is printed (`--format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Aligned columns under a header line; an empty value is `-`.
    #[default]
    Table,
    /// CSV with a header line.
    Csv,
    /// A JSON array of objects (null for an empty value).
    Json,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LineageFormat {
    Text,
    Json,
    Mermaid,
    Dot,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Generate N rows of police-incident CSV (`;`, Windows-1252, French dates, two direct identifiers) and
    /// ingest them into a fresh bronze table; print rows/s and peak memory.
    Ingest(BenchData),
    /// Land N generated rows in bronze with two identifiers in clear (not timed), then time the silver model
    /// that pseudonymizes them; print rows/s and the transform's peak memory.
    Transform(BenchData),
    /// The whole job as a user runs it, each step its own `lakehouse` process: N rows of incident-report CSV
    /// (UTF-8, 13 columns, an ~80-character quoted description) → `ingest` → `transform` of a silver model that
    /// pseudonymizes two identifiers → `transform` of a gold aggregate → `sql` top-10 query; prints wall time,
    /// rows/s, CPU and peak RSS per step, then the figures as one JSON line.
    Job {
        #[command(flatten)]
        data: BenchData,
        /// Pseudonymize the two identifiers at landing (in `ingest`) rather than in the silver model.
        #[arg(long)]
        pseudonymize_at_landing: bool,
    },
    /// The pull connectors, each read by a `lakehouse ingest` process: N generated records from a paginated JSON
    /// API served by this process, and from a PostgreSQL table (in the server `--pg-url-env` names, schema
    /// `lakehouse_bench`; skipped when unset); rows/s, CPU and peak RSS, then one JSON line.
    Pull {
        /// Records to generate.
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// Records per page of the API.
        #[arg(long, default_value_t = 1000)]
        page_size: u64,
        /// The environment variable holding the PostgreSQL connection string.
        #[arg(long, default_value = "LAKEHOUSE_BENCH_PG_URL")]
        pg_url_env: String,
        /// Work directory (default: a temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// A NATS JetStream source under `lakehouse schedule` (`schedule: continuous`, batches closed after 1 s), fed
    /// by this process: publish → visible latency p50/p99 at each `--rates` (held `--seconds`), the rate a
    /// backlog of `--backlog` messages is drained at (the most it sustains), the scheduler's memory; one JSON line.
    /// Needs a NATS server with JetStream (`ci/brokers.sh` starts one); the bench's stream is deleted at the end.
    Stream {
        #[arg(long, default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Messages per second, each held `--seconds`.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
        rates: Vec<u64>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Messages published while the scheduler is stopped, then drained.
        #[arg(long, default_value_t = 500_000)]
        backlog: u64,
        /// Work directory (default: a temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// The query server through PostgreSQL clients: `bench job`'s gold table served by `lakehouse serve` (its
    /// own process); p50/p99 latency of a small prepared gold query, throughput with many clients, a long
    /// result streamed, and the server's CPU time and peak memory; then one JSON line.
    Serve {
        /// Rows of the job that builds the gold table.
        #[arg(long, default_value_t = 100_000)]
        rows: u64,
        /// Clients at once for the throughput figure.
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Rows of the streamed result.
        #[arg(long, default_value_t = 10_000_000)]
        stream_rows: u64,
        /// Work directory (default: a temporary directory, removed afterwards).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

/// The generated data of a benchmark.
#[derive(Debug, clap::Args)]
pub struct BenchData {
    /// Rows to generate.
    #[arg(long, default_value_t = 1_000_000)]
    pub rows: u64,
    /// Number of files the rows are split into.
    #[arg(long, default_value_t = 8)]
    pub files: u32,
    /// Work directory (default: a temporary directory, removed afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
}
