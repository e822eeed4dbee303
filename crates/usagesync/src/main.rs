//! `usagesync`: the command-line entry point. It parses arguments, sets up logging and hands off
//! to one module per command; the work itself lives in the library crates.

mod cli;
mod commands;
mod console;

use clap::Parser;

// The emulators and the engine allocate many small JSON values; mimalloc roughly halves the
// time the system allocator spends on them (measured with `usagesync bench emulator`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // sqlx warns about any statement over a second; loading a big scope's fingerprints takes
    // that long by design, so only its errors are shown.
    let filter = tracing_subscriber::EnvFilter::try_from_env("USAGESYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    // One JSON object per line for log shippers; readable lines otherwise.
    if std::env::var("USAGESYNC_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        logs.json().init();
    } else {
        logs.init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: could not start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) if e.is::<commands::ConfigInvalid>() => {
            eprintln!("{e}");
            std::process::ExitCode::from(commands::EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
