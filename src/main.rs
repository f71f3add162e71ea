//! The `vestibule` binary: parse the command line, load the configuration, run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vestibule::app::Application;
use vestibule::config::Settings;
use vestibule::logging;
use vestibule::operator::{self, SessionsCommand};

/// An OAuth2 / OpenID Connect backend-for-frontend.
#[derive(Parser)]
#[command(name = "vestibule", version, about)]
struct Cli {
    /// Configuration file (TOML), before or after a command. `VESTIBULE_*` environment
    /// variables override it.
    #[arg(long, env = "VESTIBULE_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Validate the configuration and exit (0 if valid, 2 if not).
    #[arg(long)]
    check_config: bool,
    /// Without a command, Vestibule serves.
    #[command(subcommand)]
    command: Option<Command>,
}

/// The operator's commands (they run beside the deployment, with its configuration).
#[derive(Subcommand)]
enum Command {
    /// Count or end sessions in the deployment's Redis.
    #[command(subcommand)]
    Sessions(SessionsAction),
    /// Check the configuration against the real provider and Redis, from here: one line per
    /// check (ok, warn, fail, skip) with a remedy per problem. Exit 0: all ok; 1: a check
    /// failed; 2: the configuration cannot be read; 3: warnings only.
    Doctor {
        /// Print one JSON document instead of lines.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// Print the number of live sessions (and, with --sub, of that subject) as JSON.
    Count {
        /// Also count this subject's sessions.
        #[arg(long)]
        sub: Option<String>,
        /// The provider whose subject --sub names (its id; default: the first provider).
        #[arg(long)]
        provider: Option<String>,
    },
    /// End every session of a subject and revoke their refresh tokens; prints a JSON report.
    Revoke {
        /// The subject (the ID token's `sub`) whose sessions end.
        #[arg(long)]
        sub: String,
        /// The provider whose subject --sub names (its id; default: the first provider).
        #[arg(long)]
        provider: Option<String>,
    },
}

/// mimalloc: fewer cycles per request than glibc malloc on the proxy's small, short-lived
/// allocations (measured with bench/run).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code for configuration errors.
const CONFIG_ERROR: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Doctor { json }) = cli.command {
        return doctor(cli.config.as_deref(), json);
    }
    let loaded = match Settings::load(cli.config.as_deref()) {
        Ok(loaded) => loaded,
        Err(error) => {
            // Without a file, only the environment configures: say so, as a command run beside
            // a deployment (`kubectl exec … vestibule sessions …`) lands here when the file is
            // named only in the server's arguments.
            let hint = if cli.config.is_none() {
                " (no configuration file given: --config FILE or VESTIBULE_CONFIG=FILE)"
            } else {
                ""
            };
            eprintln!("vestibule: {error}{hint}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    // Spans are exported by a serving instance only (not by --check-config or a command).
    let serving = !cli.check_config && cli.command.is_none();
    let traces = if serving {
        vestibule::traces::start(&loaded.settings.traces)
    } else {
        Ok(None)
    };
    let (trace_layer, _trace_export) = match traces {
        Ok(Some(started)) => (vec![started.layer], Some(started.export)),
        Ok(None) => (Vec::new(), None),
        Err(error) => {
            eprintln!("vestibule: cannot start the trace exporter: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(loaded.settings.log_format, trace_layer);
    logging::report_ignored_environment(&loaded.ignored_environment);
    let settings = loaded.settings;
    if cli.check_config {
        println!("configuration is valid");
        print!("{}", settings.summary());
        return ExitCode::SUCCESS;
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    if let Some(Command::Sessions(action)) = cli.command {
        let command = match action {
            SessionsAction::Count { sub, provider } => SessionsCommand::Count { sub, provider },
            SessionsAction::Revoke { sub, provider } => SessionsCommand::Revoke { sub, provider },
        };
        return match runtime.block_on(operator::run(settings, command)) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("vestibule: {error:#}");
                ExitCode::FAILURE
            }
        };
    }
    runtime.block_on(async {
        let app = match Application::build(settings).await {
            Ok(app) => app,
            Err(error) => {
                eprintln!("vestibule: {error:#}");
                return ExitCode::FAILURE;
            }
        };
        match app.run_until_stopped().await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("vestibule: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The async runtime, or the exit code after saying why there is none.
fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Runtime::new().map_err(|error| {
        eprintln!("vestibule: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

/// `vestibule doctor`: a configuration that cannot be read is a failed check (exit 2), not a
/// crash; otherwise every check runs and the report decides the exit code.
fn doctor(config: Option<&std::path::Path>, json: bool) -> ExitCode {
    let report = match Settings::load(config) {
        Err(error) => vestibule::doctor::Report::unreadable_config(format!("{error}")),
        Ok(loaded) => {
            let runtime = match runtime() {
                Ok(runtime) => runtime,
                Err(code) => return code,
            };
            runtime.block_on(vestibule::doctor::examine(&loaded.settings))
        }
    };
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    ExitCode::from(report.exit_code())
}
