//! Command-line arguments.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "usagesync", version, about = "Pendo and Salesforce, in sync.")]
pub struct Cli {
    /// The config file.
    #[arg(long, short, global = true, env = "USAGESYNC_CONFIG", default_value = "usagesync.yaml")]
    pub config: PathBuf,
    /// Machine-readable output (JSON on stdout) where a command has a result to report.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the local Salesforce and Pendo emulators until SIGINT or SIGTERM.
    Emulate(EmulateArgs),
    /// Run the demo end to end against embedded emulators (no network beyond 127.0.0.1).
    Demo(DemoArgs),
    /// Write an annotated starter config.
    Init {
        /// Where to write it (default: the --config path).
        path: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check the config and report every error at once (file, line, key).
    Validate {
        /// Also check that every referenced secret (env var or file) can be read.
        #[arg(long)]
        secrets: bool,
        /// Also connect to Salesforce and check every enabled workflow's objects and fields
        /// against the org's describe (one call per object; nothing is written). Implies --secrets.
        #[arg(long)]
        remote: bool,
    },
    /// Prepare the other side for the config: `setup pendo` lists the Pendo metadata fields the
    /// enabled workflows write that Pendo lacks, and creates them with `--apply`; `setup
    /// salesforce` writes a metadata package of the custom fields the workflows write or key on.
    Setup {
        #[command(subcommand)]
        target: SetupTarget,
    },
    /// The daemon: run every enabled workflow on its schedule and serve /healthz, /metrics, the
    /// Pendo webhook receiver and the console until SIGTERM.
    Run {
        /// Address for everything the daemon serves (/healthz, /metrics, POST /webhooks/pendo and
        /// the console unless `console.listen` gives it its own); port 0 picks a free port.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// On SIGTERM, how long runs in flight may take to finish before they are abandoned.
        #[arg(long, default_value_t = 60)]
        grace_seconds: u64,
    },
    /// Run one workflow now.
    Sync {
        /// The workflow's name in the config.
        workflow: String,
        /// Plan only: print what would be written and what it would cost; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List recent runs, or show one.
    Runs {
        /// Show this run (its id, or a unique prefix of it) with the records it touched.
        id: Option<String>,
        /// Only this workflow's runs.
        #[arg(long)]
        workflow: Option<String>,
        /// How many runs (or records of a run) to list.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only records whose Pendo key or Salesforce Id contains this text (with an id).
        #[arg(long)]
        search: Option<String>,
    },
    /// List records Salesforce or Pendo refused, grouped by error code; or dismiss some.
    Failures {
        #[command(subcommand)]
        action: Option<FailuresAction>,
        /// Only this workflow's failures.
        #[arg(long)]
        workflow: Option<String>,
        /// Only this Salesforce or Pendo error code.
        #[arg(long)]
        code: Option<String>,
        /// Which failures to list: open (the default), replaying, resolved, dismissed or abandoned.
        #[arg(long, default_value = "open", value_parser = failure_status)]
        status: engine::store::FailureStatus,
        /// At most this many failures listed (the groups above them count every one).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Settle a match by hand: this Pendo account is this Salesforce Account (wins over every
    /// rule, used from the next run on), or with --unpin, back to the rules.
    Pin {
        /// The workflow whose matches this settles (its name in the config).
        workflow: String,
        /// The Pendo account id, as Pendo shows it (checked with Pendo before pinning).
        pendo_account: String,
        /// The Account's Id (15 or 18 characters).
        salesforce_id: Option<String>,
        /// Back to the match rules for this Pendo account.
        #[arg(long, conflicts_with = "salesforce_id")]
        unpin: bool,
        /// Pin even though the Account is already matched to another Pendo account.
        #[arg(long)]
        force: bool,
    },
    /// Try kept failures again: runs their workflows now, so what is sent is derived from the
    /// current config and data; resolves the failures whose records that run wrote.
    Replay {
        /// Every open failure (of --workflow, if given).
        #[arg(long, conflicts_with_all = ["code", "ids"])]
        all: bool,
        /// Every open failure with this error code.
        #[arg(long)]
        code: Option<String>,
        /// These failures (ids as `usagesync failures` lists them).
        #[arg(conflicts_with = "code")]
        ids: Vec<i64>,
        /// Only this workflow's failures (with --all).
        #[arg(long, requires = "all")]
        workflow: Option<String>,
        /// At most this many failures replayed.
        #[arg(long, default_value_t = 10_000)]
        limit: u32,
    },
    /// Delete history older than `retention.history_days` (the daemon does this every hour):
    /// finished runs with their outcomes, closed failures, processed webhook events and past
    /// budget days. State later runs decide with is never deleted.
    Prune {
        /// Count what would be deleted; delete nothing.
        #[arg(long)]
        dry_run: bool,
        /// SQLite: afterwards rewrite the whole file (VACUUM), which shrinks a store created
        /// before incremental vacuuming and switches it on; holds the write lock meanwhile.
        #[arg(long, conflicts_with = "dry_run")]
        vacuum: bool,
    },
    /// Print an Argon2 hash of a password read from stdin, for a `console.users` entry's
    /// `password_hash` (keep it in the file or variable that entry names).
    ConsolePassword,
    /// Measure throughput and print a table.
    Bench {
        #[command(subcommand)]
        target: BenchTarget,
    },
}

#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// Address for the Salesforce emulator; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub salesforce_addr: SocketAddr,
    /// Serve https with a freshly generated self-signed certificate.
    #[arg(long)]
    pub tls: bool,
    /// Write the self-signed certificate's PEM here (to trust it in clients).
    #[arg(long, requires = "tls")]
    pub cert_out: Option<std::path::PathBuf>,
    /// The org's daily API allocation (`DailyApiRequests`).
    #[arg(long, default_value_t = 100_000)]
    pub daily_api_requests: u64,
    /// Address for the Pendo emulator; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub pendo_addr: SocketAddr,
    /// Pendo accounts to generate (1 to 1,000,000).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub accounts: u64,
    /// Seed of the generated Pendo data (same seed, same world).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Days of generated Pendo event history.
    #[arg(long, default_value_t = 60)]
    pub days: u32,
    /// Also load the matching Salesforce records (Users, Accounts, Contacts, trial
    /// Opportunities) generated from the same seed into the Salesforce emulator.
    #[arg(long)]
    pub seed_salesforce: bool,
    /// Make the regional subsidiaries that share their predecessor's e-mail domain its children
    /// (`ParentId` in Salesforce, `custom.parentaccountid` in Pendo).
    #[arg(long)]
    pub hierarchies: bool,
    /// Exit as soon as stdin reaches its end. A benchmark starting the emulators holds the other
    /// end of a pipe, so they go down with it however it ends, killed by a signal included.
    #[arg(long)]
    pub exit_with_stdin: bool,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Number of Pendo accounts in the generated world.
    #[arg(long, default_value_t = 2_000)]
    pub accounts: usize,
}

#[derive(Debug, Subcommand)]
pub enum BenchTarget {
    /// The Pendo emulator's data generator and aggregation engine over a 30-day window.
    Pendo {
        /// Accounts to generate.
        #[arg(long, default_value_t = 11_200)]
        accounts: usize,
        /// Days of event history.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Runs per query (best and median are reported).
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// Seed of the generated world.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Requests/s for single upserts and records/s for Collections against the emulator.
    Emulator {
        /// Single upserts to send.
        #[arg(long, default_value_t = 20_000)]
        upserts: usize,
        /// Records to send through 200-record Collections upserts.
        #[arg(long, default_value_t = 200_000)]
        collection_records: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// The engagement workflow end to end: first, no-change and 1%-change runs, against the
    /// emulators in a child process, with the one-call-per-account script for comparison.
    Engagement {
        /// Account counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
        accounts: Vec<usize>,
        /// Days of generated history.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Only these workflows (engagement, people, hourly, family), comma-separated; all by
        /// default. `family` runs on a world of its own whose subsidiaries are their parents'
        /// children.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// nps-realtime latency and throughput: NPS webhooks at a steady rate, round-robin into
    /// one or more daemons, p50/p95/p99 from the webhook to the Contact updated in the
    /// Salesforce emulator, per worker count and rate, and each worker count's saturation point.
    Nps {
        /// Webhooks per second, comma-separated for a sweep.
        #[arg(long, value_delimiter = ',', default_values_t = [100u32])]
        rate: Vec<u32>,
        /// Daemons sharing the load, comma-separated (e.g. 1,2,3); more than one needs --postgres.
        #[arg(long, value_delimiter = ',', default_values_t = [1usize])]
        workers: Vec<usize>,
        /// The PostgreSQL server the workers share (a schema of its own per measurement,
        /// dropped after), e.g. postgres://postgres@127.0.0.1:5432/test.
        #[arg(long)]
        postgres: Option<String>,
        /// Seconds to keep posting.
        #[arg(long, default_value_t = 30)]
        seconds: u32,
        /// The workflow's batching window.
        #[arg(long, default_value_t = 250)]
        window_ms: u64,
    },
    /// The chaos harness: each template killed at every pipeline point under 10% faults, its
    /// store lost after a person's edit, its allocation spent mid-run, and compared record by
    /// record with a clean reference run on the same world. Exits 1 if any guarantee broke.
    Chaos {
        /// Pendo accounts in each generated world.
        #[arg(long, default_value_t = 10_000)]
        accounts: usize,
        /// Kills per template, at its points in turn.
        #[arg(long, default_value_t = 30)]
        kills: usize,
        /// Only these workflows of the harness (engagement, new-users, trials, chaos-alerts,
        /// chaos-expansion), comma-separated; all by default.
        #[arg(long, value_delimiter = ',')]
        workflows: Vec<String>,
        /// Also run several workers at once on one PostgreSQL store (a schema of its own,
        /// dropped after), e.g. postgres://postgres@127.0.0.1:5432/test.
        #[arg(long)]
        postgres: Option<String>,
        /// Workers started together in each round of the PostgreSQL phase.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(2..=8))]
        workers: u64,
    },
    /// The record-creating workflows (drop alerts, expansion, trials): a first run and a re-run
    /// of each against the emulators in a child process.
    Creates {
        /// Account counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
        accounts: Vec<usize>,
        /// Days of generated history.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Only these workflows (churn-alerts, expansion, trials, renewal-risk, people-quiet,
        /// usage-collapse), comma-separated.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// Records/s, API calls and the client's peak memory for an upsert through Bulk API 2.0.
    Bulk {
        /// Records to upsert.
        #[arg(long, default_value_t = 100_000)]
        records: u64,
        /// Use an emulator already running at this base URL (e.g. from `usagesync emulate`)
        /// instead of one in this process, so the peak RSS is the client's alone.
        #[arg(long)]
        salesforce_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum FailuresAction {
    /// Close failures without replaying them, keeping the reason: they no longer count as open
    /// (metrics, console, exit hints), and the same refusal of the record recurring stays closed.
    Dismiss {
        /// These failures (ids as `usagesync failures` lists them).
        #[arg(required_unless_present = "code", conflicts_with = "code")]
        ids: Vec<i64>,
        /// Every open failure with this error code.
        #[arg(long)]
        code: Option<String>,
        /// Why, kept with each failure (`failures --status dismissed` shows it).
        #[arg(long)]
        reason: String,
    },
}

fn failure_status(text: &str) -> Result<engine::store::FailureStatus, String> {
    engine::store::FailureStatus::parse(text).map_err(|e| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum SetupTarget {
    /// The Pendo metadata fields the enabled workflows write: those missing are shown, and
    /// created only with --apply (then read back); a field of another type is reported, never changed.
    Pendo {
        #[arg(long)]
        apply: bool,
    },
    /// The Salesforce custom fields every workflow of the config (enabled or not) writes or keys
    /// on, as a Metadata API package (package.xml and objects/*.object) for
    /// `sf project deploy start --metadata-dir DIR`: shown, and written only with --out.
    Salesforce {
        /// The folder to write the package into (made if missing).
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
        /// Overwrite a package already in the folder.
        #[arg(long)]
        force: bool,
        /// Describe the org's objects and leave out the fields it already has (one call per object).
        #[arg(long)]
        remote: bool,
    },
}
