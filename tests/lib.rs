//! Helpers for the end-to-end tests: projects in temporary directories, test keys, reading Delta tables back,
//! running the real `lakehouse` binary, and the S3 server started by `ci/start-s3.sh`.

// The tests read tables back with DataFusion directly, independently of the engine's sandboxed sessions.
#![allow(clippy::disallowed_methods)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::record_batch::RecordBatch;
use arrow::util::pretty::pretty_format_batches;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

pub fn fixtures() -> PathBuf {
    repo().join("tests/fixtures")
}

/// Test keys: fixed, recognisable 32-byte keys. The police key is the canary the leak tests look for.
pub const POLICE_KEY_HEX: &str = "c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a7c4a70001";
pub const FIRE_KEY_HEX: &str = "f12ef12ef12ef12ef12ef12ef12ef12ef12ef12ef12ef12ef12ef12ef12e0002";
pub const CITIZENS_KEY_HEX: &str = "c171c171c171c171c171c171c171c171c171c171c171c171c171c171c1710003";
pub const QUARANTINE_KEY_HEX: &str = "9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a9a0004";

pub fn all_key_hex() -> [&'static str; 4] {
    [POLICE_KEY_HEX, FIRE_KEY_HEX, CITIZENS_KEY_HEX, QUARANTINE_KEY_HEX]
}

/// A project in a temporary directory, with its key file in another one (keys never live in the project).
pub struct TestProject {
    pub dir: tempfile::TempDir,
    pub keys_dir: tempfile::TempDir,
}

impl TestProject {
    /// A copy of the repository's example deployment, with test keys and the given warehouse URL.
    pub fn example(warehouse: Option<&str>) -> Self {
        let p = Self::empty();
        copy_dir(&repo().join("sources"), &p.path().join("sources"));
        copy_dir(&repo().join("transforms"), &p.path().join("transforms"));
        copy_dir(&repo().join("access"), &p.path().join("access"));
        let mut yaml = std::fs::read_to_string(repo().join("lakehouse.yaml")).expect("lakehouse.yaml");
        let keys_line = yaml.lines().find(|l| l.trim_start().starts_with("keys:")).expect("keys line").to_string();
        yaml = yaml.replace(&keys_line, &format!("  keys: {{ from: file, path: {} }}", p.key_file().display()));
        if let Some(w) = warehouse {
            yaml = yaml.replace("warehouse: file://./warehouse", &format!("warehouse: {w}"));
        }
        std::fs::write(p.path().join("lakehouse.yaml"), yaml).expect("write lakehouse.yaml");
        p
    }

    /// An empty project directory with the test key file written.
    pub fn empty() -> Self {
        let p = Self { dir: tempfile::tempdir().expect("tempdir"), keys_dir: tempfile::tempdir().expect("tempdir") };
        let keys = format!(
            "# test keys\npolice t1 {POLICE_KEY_HEX}\nfire t1 {FIRE_KEY_HEX}\ncitizens t1 {CITIZENS_KEY_HEX}\nquarantine t1 {QUARANTINE_KEY_HEX}\n"
        );
        std::fs::write(p.key_file(), keys).expect("write keys");
        p
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn key_file(&self) -> PathBuf {
        self.keys_dir.path().join("test.keys")
    }

    /// Writes `lakehouse.yaml` for a custom project (`KEYFILE` is replaced by the test key file path).
    pub fn write_project(&self, yaml: &str) {
        let yaml = yaml.replace("KEYFILE", &self.key_file().display().to_string());
        std::fs::write(self.path().join("lakehouse.yaml"), yaml).expect("write lakehouse.yaml");
    }

    /// Writes a file, dated an hour ago (see [`settled`]); [`Self::write_fresh`] keeps the current time.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        self.write_fresh(rel, content);
        settled(&self.path().join(rel));
    }

    /// Writes a file as a partner uploading it now would.
    pub fn write_fresh(&self, rel: &str, content: impl AsRef<[u8]>) {
        let path = self.path().join(rel);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
    }

    pub fn load(&self) -> lakehouse::Lakehouse {
        let project = lakehouse::manifest::Project::load(self.path()).unwrap_or_else(|e| panic!("{e}"));
        lakehouse::Lakehouse::open(project, lakehouse::KeyUse::Write).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs the `lakehouse` binary in this project.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run lakehouse")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(lakehouse_bin());
        cmd.arg("--project").arg(self.path()).args(args).env_remove("LAKEHOUSE_LOG");
        cmd
    }

    pub fn warehouse_url(&self, layer: &str, table: &str) -> String {
        let lh = self.load();
        lh.warehouse.table_url(layer, table).to_string()
    }
}

/// Header of the example police export (`sources/data/ddsp/`).
pub const POLICE_HEADER: &str = "numero_intervention;date_heure;nature;latitude;longitude;arrondissement;nom_declarant;tel_declarant;observations\n";

/// The `lakehouse` binary built by the same `cargo test` run.
pub fn lakehouse_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/e2e-<hash> → target/<profile>/lakehouse
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("lakehouse");
    assert!(bin.exists(), "{} not built: run `cargo build --bins` first (ci/test.sh does)", bin.display());
    // `cargo test` does not rebuild the binary: refuse to test a stale one.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).expect("binary mtime");
    let newest_source = files_under(&repo().join("lakehouse/src"))
        .iter()
        .chain(files_under(&repo().join("catalog/src")).iter())
        .filter_map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .max()
        .expect("sources");
    assert!(
        built >= newest_source,
        "{} is older than the sources: run `cargo build --bins` first (ci/test.sh does)",
        bin.display()
    );
    bin
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
            settled(&target);
        }
    }
}

/// Gives a file a modification time an hour ago: a drop that finished long before the run (files modified within
/// a source's settle time wait for a later run).
pub fn settled(path: &Path) {
    let an_hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options().write(true).open(path).and_then(|f| f.set_modified(an_hour_ago)).expect("set mtime");
}

/// Opens a Delta table by URL (with the `AWS_*` variables for `s3://`).
pub async fn open_table(url: &str) -> DeltaTable {
    let url = url::Url::parse(url).expect("url");
    let options = lakehouse::storage::storage_options(&url, &Default::default());
    deltalake::open_table_with_storage_options(url.clone(), options).await.unwrap_or_else(|e| panic!("open {url}: {e}"))
}

/// Runs SQL over tables registered by name (`bronze.x`, `silver.y`, `gold.z`) with the project's functions.
pub async fn query_lake(lh: &lakehouse::Lakehouse, sql: &str) -> Vec<Vec<String>> {
    let ctx = lakehouse::session::new_session(lakehouse::session::Functions::Keyed(lh.keys.clone()), &lh.project.file);
    for layer in ["bronze", "silver", "gold", "system"] {
        let names = lh.warehouse.list_tables(layer).await.expect("list tables");
        for name in names {
            let url = lh.warehouse.table_url(layer, &name);
            if let Ok(Some(t)) = lh.warehouse.open(&url).await {
                t.update_datafusion_session(&ctx.state()).expect("object store");
                ctx.register_table(format!("{layer}.{name}").as_str(), t.table_provider().await.expect("provider"))
                    .expect("register");
            }
        }
    }
    let batches =
        ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.unwrap_or_else(|e| panic!("{e}"));
    to_rows(&batches)
}

/// Runs SQL over one Delta table registered as `t`.
pub async fn query(url: &str, sql: &str) -> Vec<RecordBatch> {
    let table = open_table(url).await;
    let ctx = SessionContext::new();
    ctx.register_table("t", table.table_provider().await.expect("provider")).expect("register");
    ctx.sql(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}")).collect().await.expect("collect")
}

pub async fn query_pretty(url: &str, sql: &str) -> String {
    pretty_format_batches(&query(url, sql).await).expect("format").to_string()
}

/// A single integer from a `SELECT count(*) …`-like query.
pub async fn query_i64(url: &str, sql: &str) -> i64 {
    let batches = query(url, sql).await;
    let col = batches[0].column(0);
    let casted = arrow::compute::cast(col, &arrow::datatypes::DataType::Int64).expect("cast");
    casted.as_any().downcast_ref::<arrow::array::Int64Array>().expect("i64").value(0)
}

/// The S3 bucket of `ci/start-s3.sh`; the tests that use S3 fail with a clear message without it.
pub fn s3_bucket() -> String {
    std::env::var("LAKEHOUSE_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!("S3 tests need the server of ci/start-s3.sh: run ci/test.sh, or eval \"$(ci/start-s3.sh)\" first")
    })
}

/// A fresh prefix in the test bucket.
pub fn s3_prefix(name: &str) -> String {
    format!("s3://{}/{name}-{}", s3_bucket(), uuid_like())
}

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).expect("time").as_nanos();
    format!("{:x}{:x}", nanos, std::process::id())
}

/// Every file under a directory, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() { out.extend(files_under(&p)) } else { out.push(p) }
        }
    }
    out
}

/// Runs `lakehouse ARGS` in the project and returns its standard output; fails the test, with both outputs, when
/// it does not succeed.
pub fn run_ok(p: &TestProject, args: &[&str]) -> String {
    let out = p.run(args);
    assert!(out.status.success(), "lakehouse {args:?} failed:\n{}\n{}", stdout(&out), stderr(&out));
    stdout(&out)
}

/// The CSV output of `lakehouse sql QUERY` in the project (header line first).
pub fn sql_csv(p: &TestProject, query: &str) -> String {
    run_ok(p, &["sql", "--format", "csv", query])
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Query results as rows of display strings (nulls as empty strings), for exact comparisons.
pub async fn query_rows(url: &str, sql: &str) -> Vec<Vec<String>> {
    to_rows(&query(url, sql).await)
}

/// Batches as rows of display strings (nulls as empty strings).
pub fn to_rows(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    let mut rows = Vec::new();
    for b in batches {
        let opts = FormatOptions::default();
        let fmts: Vec<_> =
            b.columns().iter().map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).expect("format")).collect();
        for r in 0..b.num_rows() {
            rows.push(fmts.iter().map(|f| f.value(r).to_string()).collect());
        }
    }
    rows
}

/// Expected rows written as string slices.
pub fn rows(expected: &[&[&str]]) -> Vec<Vec<String>> {
    expected.iter().map(|r| r.iter().map(|s| s.to_string()).collect()).collect()
}

/// Starts `n` runs of the binary at once and waits for all of them.
pub fn run_concurrently(p: &TestProject, n: usize, args: &[&str]) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            p.command(args)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn lakehouse")
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().expect("wait")).collect()
}
