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

/// mimalloc keeps freed pages for a second before giving them back (its purge delay), so a run
/// whose stages each build and drop large structures stays at the sum of their peaks. It reads
/// its options once, before `main`, and the only safe way to set one is the environment: the
/// process starts itself again, the same arguments and id, with `MIMALLOC_PURGE_DELAY=0`. An
/// operator's own setting is kept. Measured with `bench engagement` (release, 2026-12-07): peak
/// RSS of the first, no-change and 1%-changed runs 311 / 408 / 474 → 240 / 290 / 423 MiB at
/// 100,000 accounts and 129 / 139 / 144 → 105 / 93 / 100 at 10,000, in the same times.
fn purge_freed_memory_at_once() {
    const OPTION: &str = "MIMALLOC_PURGE_DELAY";
    if cfg!(feature = "system-allocator") || std::env::var_os(OPTION).is_some() {
        return;
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let mut again = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            again.arg0(arg0);
        }
        // `exec` returns only when it failed (a binary replaced on disk, say): the run goes on
        // with mimalloc's default.
        let _failed = again.args(args).env(OPTION, "0").exec();
    }
}

fn main() -> std::process::ExitCode {
    purge_freed_memory_at_once();
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
