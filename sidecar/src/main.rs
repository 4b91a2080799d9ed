use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "pgpilot",
    version,
    about = "High-availability and backup companion for PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar for one member.
    Run {
        /// The member's TOML configuration file.
        #[arg(short, long, env = "PGPILOT_CONFIG")]
        config: PathBuf,
    },
    /// Operator commands (patronictl's counterpart).
    Ctl(pgpilot::ctl::CtlArgs),
    /// A local demo cluster on loopback.
    Demo(pgpilot::demo::DemoArgs),
    /// Store a WAL file in the backup repository (PostgreSQL's archive_command).
    ArchivePush(pgpilot::archive::push::PushArgs),
    /// Fetch a WAL file from the backup repository (PostgreSQL's restore_command).
    /// Exits 1 when the file is not there.
    ArchiveGet(pgpilot::archive::get::GetArgs),
    /// Take a base backup (full or incremental); `backup list` lists them.
    Backup(pgpilot::backup::command::take::BackupArgs),
    /// Restore a backup into a data directory, with point-in-time recovery.
    Restore(pgpilot::backup::command::restore::RestoreArgs),
    /// Show the backups and the WAL archive (`--output json`: pgBackRest's shape).
    Info(pgpilot::backup::command::info::InfoArgs),
    /// Remove backups and WAL the retention policy no longer keeps.
    Expire(pgpilot::backup::command::expire::ExpireArgs),
    /// Check every stored object's checksum and the WAL's continuity.
    Verify(pgpilot::backup::command::verify::VerifyArgs),
    /// Check that WAL archiving works end to end (exit 82 on time-out).
    Check(pgpilot::backup::command::check::CheckArgs),
    /// Store stdin in the repository as `<stanza>/log/NAME` (a backup's or a restore's log).
    PutLog(pgpilot::backup::command::chores::PutLogArgs),
    /// Empty the data directory (refused while pgpilot or PostgreSQL runs on it).
    WipeDataDir(pgpilot::backup::command::chores::WipeArgs),
    /// Check a member file as `pgpilot run` would, without starting anything.
    CheckConfig {
        /// The member's TOML configuration file.
        #[arg(short, long, env = "PGPILOT_CONFIG")]
        config: PathBuf,
    },
    /// The charmed-postgresql snap's hooks (install-hook, configure-hook).
    Snap(pgpilot::snap::SnapArgs),
    /// Print the version.
    Version,
    /// Internal: the push-ahead worker of async archiving alone, in the
    /// foreground (`pgpilot run` runs it itself).
    #[command(hide = true)]
    ArchiveAhead(pgpilot::archive::ahead::AheadArgs),
    /// Internal: the prefetcher archive-get starts in async mode.
    #[command(hide = true)]
    ArchiveGetPrefetch(pgpilot::archive::prefetch::PrefetchArgs),
    /// Internal: the fence guard process the sidecar starts for itself.
    #[command(hide = true)]
    FenceGuard {
        #[arg(long)]
        data_dir: PathBuf,
    },
}

/// The process's logging: to stderr and, when given, also to `file`
/// (`log.file`); installed as [`pgpilot::logging`]'s hook, called by the
/// commands once they have read the member file.
fn init_tracing(settings: pgpilot::logging::Settings<'_>) {
    use std::sync::Arc;
    use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt};
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(settings.level).unwrap_or_else(|_| EnvFilter::new("info"));
    let to_file = settings.file.is_some();
    let writer = match settings.file {
        Some(file) => BoxMakeWriter::new(std::io::stderr.and(Arc::new(file))),
        None => BoxMakeWriter::new(std::io::stderr),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(writer);
    if settings.json {
        let _ = builder.json().with_ansi(false).try_init();
    } else {
        use std::io::IsTerminal;
        // Colours only for a person at a terminal; log files stay plain.
        let _ = builder
            .with_ansi(!to_file && std::io::stderr().is_terminal())
            .try_init();
    }
}

/// The async runtime a command runs on, made here with the rest of the
/// process's set-up: `workers` threads, or the calling thread alone when 0.
/// A command that cannot have one exits with `failure`. Whatever is still
/// running when the command returns gets half a second to finish.
fn with_runtime(
    command: &str,
    workers: usize,
    failure: i32,
    entry: impl FnOnce(&tokio::runtime::Runtime) -> i32,
) -> i32 {
    let built = if workers == 0 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .enable_all()
            .build()
    };
    match built {
        Ok(runtime) => {
            let code = entry(&runtime);
            runtime.shutdown_timeout(std::time::Duration::from_millis(500));
            code
        }
        Err(e) => {
            eprintln!("pgpilot {command}: cannot start the async runtime: {e}");
            failure
        }
    }
}

fn main() {
    use pgpilot::backup::code::LOCAL;
    use pgpilot::backup::command as backup;
    use pgpilot::exit::FAILURE;
    pgpilot::logging::install(init_tracing);
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Run { config } => {
            with_runtime("run", 2, FAILURE, |rt| pgpilot::daemon::main(&config, rt))
        }
        Command::Ctl(args) => with_runtime("ctl", 0, FAILURE, |rt| pgpilot::ctl::main(args, rt)),
        Command::Demo(args) => with_runtime("demo", 0, FAILURE, |rt| pgpilot::demo::main(args, rt)),
        // Each call runs on a thread of its own with its own runtime, which
        // is abandoned when archive_timeout passes (archive::run).
        Command::ArchivePush(args) => pgpilot::archive::push::main(args),
        Command::ArchiveGet(args) => pgpilot::archive::get::main(args),
        Command::ArchiveAhead(args) => with_runtime("archive-ahead", 2, LOCAL, |rt| {
            pgpilot::archive::ahead::main(args, rt)
        }),
        Command::ArchiveGetPrefetch(args) => with_runtime("archive-get-prefetch", 0, LOCAL, |rt| {
            pgpilot::archive::prefetch::main(args, rt)
        }),
        Command::Backup(args) => {
            with_runtime("backup", 2, LOCAL, |rt| backup::take::main(args, rt))
        }
        Command::Restore(args) => {
            with_runtime("restore", 2, LOCAL, |rt| backup::restore::main(args, rt))
        }
        Command::Info(args) => with_runtime("info", 2, LOCAL, |rt| backup::info::main(args, rt)),
        Command::Expire(args) => {
            with_runtime("expire", 2, LOCAL, |rt| backup::expire::main(args, rt))
        }
        Command::Verify(args) => {
            with_runtime("verify", 2, LOCAL, |rt| backup::verify::main(args, rt))
        }
        Command::Check(args) => with_runtime("check", 2, LOCAL, |rt| backup::check::main(args, rt)),
        Command::PutLog(args) => with_runtime("put-log", 2, LOCAL, |rt| {
            backup::chores::put_log_main(args, rt)
        }),
        Command::WipeDataDir(args) => backup::chores::wipe_main(args),
        Command::FenceGuard { data_dir } => pgpilot::ha::guard::run(data_dir),
        Command::CheckConfig { config } => match pgpilot::config::Config::load(&config) {
            Ok(_) => {
                println!("{}: valid", config.display());
                pgpilot::exit::OK
            }
            Err(e) => {
                eprintln!("pgpilot: {e}");
                pgpilot::exit::USAGE
            }
        },
        Command::Snap(args) => pgpilot::snap::main(args),
        Command::Version => {
            println!("pgpilot {}", pgpilot::VERSION);
            pgpilot::exit::OK
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
