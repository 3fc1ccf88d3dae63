//! The `atom` command line: parse, set up logging, call into the library.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use atom::commands::{self, CommandError};
use atom::config::Config;
use atom::error::ErrorChain;
use atom::{Application, StartError, shutdown, telemetry};
use clap::{Parser, Subcommand};
use secrecy::SecretString;

/// mimalloc: every request allocates a few small blocks (futures, headers, extensions), which
/// its thread-local free lists serve faster than glibc's allocator (`bench/http.sh`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "atom", version, about = "Atom Core: the backend of the Atom conversational agent")]
struct Cli {
    /// Configuration file (TOML), read after the compiled-in defaults.
    #[arg(long, global = true, env = "ATOM_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server until SIGTERM or SIGINT.
    Serve,
    /// Apply pending database migrations, or list them with `status`.
    Migrate {
        #[command(subcommand)]
        action: Option<MigrateAction>,
    },
    /// Configuration tools.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Account administration.
    Admin {
        #[command(subcommand)]
        action: AdminAction,
    },
    /// Key management: master keys (secrets at rest) and JWT signing keys.
    Keys {
        #[command(subcommand)]
        action: KeysAction,
    },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        action: AuditAction,
    },
    /// Backups: consistent snapshots, their verification, restores.
    Backup {
        #[command(subcommand)]
        action: BackupAction,
    },
    /// The provider catalog (connector templates).
    Providers {
        #[command(subcommand)]
        action: ProvidersAction,
    },
}

#[derive(Debug, Subcommand)]
enum ProvidersAction {
    /// List the providers: id, name, auth mode, whether this instance's app is configured;
    /// and the callback URL to register at each.
    List,
    /// Validate every template (the built-in ones and an override directory): exit 1 naming
    /// each file and field at fault.
    Check {
        /// The override directory to check (default: connectors.providers_dir).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum MigrateAction {
    /// List applied and pending migrations.
    Status,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate the configuration and print it, secrets redacted.
    Check,
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Create an admin account. The password comes from ATOM_ADMIN_PASSWORD or, if unset,
    /// the first line of standard input; there is no default.
    Create {
        #[arg(long)]
        email: String,
        #[arg(long, env = "ATOM_ADMIN_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysAction {
    /// Add a master key, make it primary and re-wrap every stored data key under it.
    Rotate {
        /// Finish an interrupted rotation without adding another key.
        #[arg(long)]
        resume: bool,
        /// Stop after re-wrapping this many values (to spread the work; resume later).
        #[arg(long)]
        max_values: Option<u64>,
    },
    /// Add a JWT signing key and make it current.
    RotateSigning,
}

#[derive(Debug, Subcommand)]
enum AuditAction {
    /// Walk the hash chain and report the first tampered row.
    Verify,
}

#[derive(Debug, Subcommand)]
enum BackupAction {
    /// Take a consistent snapshot of the database, also while the server runs. The master
    /// key is never included: keep it apart.
    Create {
        /// Directory to write the archive into (default: backup.dir, ATOM_BACKUP_DIR).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Check an archive (files, counts, content hashes, decryption) without restoring it.
    Verify { dir: PathBuf },
    /// Restore an archive into the configured database. Stop `atom serve` first.
    Restore {
        dir: PathBuf,
        /// Replace the contents of a database that is not empty.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&CommandError::Start(StartError::Config(e))),
    };
    if let Command::Config { action: ConfigAction::Check } = cli.command {
        println!("{}", config.to_redacted_json());
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    if let Command::Providers { action } = cli.command {
        let result = match action {
            ProvidersAction::List => commands::providers_list(&config),
            ProvidersAction::Check { dir } => commands::providers_check(&config, dir.as_deref()),
        };
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        };
    }
    // Held to the end of `main`, after the runtime is gone: its drop writes out the last lines.
    let _log = telemetry::init_logging(&config.log.filter, config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => Ok(Application::build(config).await?.run_until(shutdown::signal()).await?),
            Command::Migrate { action } => commands::migrate(&config, action.is_none()).await,
            Command::Config { .. } | Command::Providers { .. } => Ok(()),
            Command::Admin { action: AdminAction::Create { email, password } } => {
                let password = match password {
                    Some(p) => p,
                    None => read_password_line()?,
                };
                commands::admin_create(&config, &email, SecretString::from(password)).await
            }
            Command::Keys { action: KeysAction::Rotate { resume, max_values } } => {
                commands::rotate_master(&config, resume, max_values).await
            }
            Command::Keys { action: KeysAction::RotateSigning } => commands::rotate_signing(&config).await,
            Command::Audit { action: AuditAction::Verify } => commands::audit_verify(&config).await,
            Command::Backup { action: BackupAction::Create { out } } => commands::backup_create(&config, out).await,
            Command::Backup { action: BackupAction::Verify { dir } } => commands::backup_verify(&config, &dir).await,
            Command::Backup { action: BackupAction::Restore { dir, force } } => {
                commands::backup_restore(&config, &dir, force).await
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn read_password_line() -> Result<String, CommandError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CommandError::Failed(format!("cannot read the password from standard input: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(CommandError::Failed("no password: set ATOM_ADMIN_PASSWORD or pipe it on standard input".into()));
    }
    Ok(password)
}

fn fail(err: &CommandError) -> ExitCode {
    eprintln!("error: {}", ErrorChain(err));
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
}
