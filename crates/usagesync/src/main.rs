//! `usagesync`: the command-line entry point. It parses arguments, sets up logging and hands off
//! to one module per command; the work itself lives in the library crates.

/// `println!` for command output, except that a closed stdout (`usagesync failures | head -1`)
/// ends the output quietly instead of panicking as `println!` does; the command still finishes
/// and exits with its own code.
macro_rules! outln {
    () => { $crate::out::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::out::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// [`outln!`] for prose: wrapped at spaces to the output's width (`COLUMNS`, the terminal's, or 80).
macro_rules! say {
    ($($arg:tt)*) => { $crate::commands::say(&format!($($arg)*)) };
}

/// `print!` with the same rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*)) };
}

mod cli;
mod commands;
mod console;
mod out;

use clap::Parser;

// The emulators and the engine allocate many small JSON values; mimalloc roughly halves the
// time the system allocator spends on them (measured with `usagesync bench emulator`).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // sqlx warns about any statement over a second; loading a big scope's fingerprints takes
    // that long by design, so only its errors are shown.
    let filter = tracing_subscriber::EnvFilter::try_from_env("USAGESYNC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,sqlx=error"));
    // Colours only for a person at a terminal: a log file or a pipe gets plain text, and so
    // does anyone who sets NO_COLOR (https://no-color.org).
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(colour);
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
