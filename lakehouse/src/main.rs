//! The `lakehouse` binary: parse arguments, run the command, map errors to exit codes
//! (0 success, 1 user error, 2 internal error).

mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc: Arrow builders and Parquet buffers allocate and free large blocks all the time; it made ingestion
/// measurably faster than glibc's allocator (see README, Benchmarks).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`lakehouse tables | head`) is not an error.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        // object_store's `BufWriter::abort` panics by design after a failed upload completion, and delta-rs
        // catches that panic (a store that went away mid-upload): it is not a crash, do not print it as one.
        if message == "Already shut down" && info.location().is_some_and(|l| l.file().contains("object_store")) {
            tracing::debug!("an upload could not be aborted after the store failed (caught)");
            return;
        }
        default_hook(info);
    }));
    let cli = cli::Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(commands::run(cli));
    // Work abandoned at shutdown may leave blocking parser threads behind: do not wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    commands::report_usage();
    match result {
        Ok(code) => code,
        Err(commands::CliError::User(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(commands::USER_ERROR)
        }
        Err(commands::CliError::Reported) => ExitCode::from(commands::USER_ERROR),
        Err(commands::CliError::Internal(e)) => {
            // A store that cannot be reached is not an internal error: say so, and what to check.
            if let Some(reason) = e.chain().find_map(lakehouse::storage::unreachable) {
                eprintln!("error: storage: {reason}. {}", lakehouse::storage::UNREACHABLE_HINT);
                return ExitCode::from(commands::USER_ERROR);
            }
            eprintln!("error: {e:#}");
            ExitCode::from(commands::INTERNAL_ERROR)
        }
    }
}

fn init_logging(cli: &cli::Cli) {
    use tracing_subscriber::EnvFilter;
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn,deltalake_core=off,buoyant_kernel=off",
        // delta-rs logs expected conditions (a table not created yet, missing optional metrics) as errors and
        // warnings; our own errors carry its messages, so it is quiet unless -v is given.
        (false, 0) => "lakehouse=info,warn,deltalake_core=off,buoyant_kernel=off",
        (false, 1) => "lakehouse=debug,info",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("LAKEHOUSE_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}
