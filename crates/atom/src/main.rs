//! The `atom` command line: parse, set up logging, call into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use atom::config::Config;
use atom::error::ErrorChain;
use atom::storage::{Db, MigrationState};
use atom::{Application, StartError, shutdown, telemetry};
use clap::{Parser, Subcommand};

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => return fail(&StartError::Config(e)),
    };
    if let Command::Config { action: ConfigAction::Check } = cli.command {
        println!("{}", config.to_redacted_json());
        eprintln!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    telemetry::init_logging(&config.log.filter, config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve => Application::build(config).await?.run_until(shutdown::signal()).await,
            Command::Migrate { action } => migrate(config, action).await,
            Command::Config { .. } => Ok(()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

async fn migrate(config: Config, action: Option<MigrateAction>) -> Result<(), StartError> {
    let db = Db::connect(&config.database_target()?, &config.database).await?;
    if action.is_none() {
        db.migrate().await?;
    }
    let status = db.migration_status().await?;
    for m in &status {
        let state = match &m.state {
            MigrationState::Applied { installed_on } => format!("applied {installed_on}"),
            MigrationState::Pending => "pending".to_owned(),
            MigrationState::Unknown => "applied, unknown to this binary (newer schema)".to_owned(),
        };
        println!("{:>6}  {:<32}  {state}", m.version, m.description);
    }
    let pending = status.iter().filter(|m| m.state == MigrationState::Pending).count();
    eprintln!("{} migration(s), {pending} pending, on {}", status.len(), db.kind());
    db.close().await;
    Ok(())
}

fn fail(err: &StartError) -> ExitCode {
    eprintln!("error: {}", ErrorChain(err));
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(1))
}
