//! `tollgate`: parse the command line, start logging, run the command, and
//! turn any failure into one line on stderr and a non-zero exit.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use mimalloc::MiMalloc;
use tollgate::cli::{Cli, Command};

// Every proxied request allocates a little; mimalloc does it faster and keeps
// the resident set small under load.
#[global_allocator]
static ALLOCATOR: MiMalloc = MiMalloc;

fn main() -> ExitCode {
    let cli = match Cli::try_parse().and_then(rotate_key_stands_alone) {
        Ok(cli) => cli,
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            // clap's first line names the flag and the problem; the rest is usage.
            let rendered = error.render().to_string();
            eprintln!(
                "{}",
                rendered
                    .lines()
                    .next()
                    .unwrap_or("error: invalid arguments")
            );
            return ExitCode::from(2);
        }
    };
    let Cli {
        config: args,
        rotate_key,
        command,
    } = cli;
    let serving = matches!(command, None | Some(Command::Serve)) && !rotate_key;
    let config = match args.into_config(&|name| std::env::var(name).ok()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Only `serve` answers requests, so only it has spans to export.
    let otlp_endpoint = config.otlp_endpoint.as_ref().filter(|_| serving);
    let level = if serving { "info" } else { "warn" };
    let logging =
        match tollgate::logging::init(config.log_format, level, otlp_endpoint, runtime.handle()) {
            Ok(logging) => logging,
            Err(error) => {
                eprintln!("error: {error:#}");
                return ExitCode::FAILURE;
            }
        };
    let outcome = runtime.block_on(tollgate::commands::run(command, rotate_key, config));
    // The last spans go out on the runtime, which still runs here.
    logging.shutdown();
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--rotate-key` is a command in flag form. clap can only forbid every flag
/// before a subcommand, which would also forbid `tollgate --keys-dir K keys
/// list`, so this one conflict is checked here.
fn rotate_key_stands_alone(cli: Cli) -> Result<Cli, clap::Error> {
    if cli.rotate_key && cli.command.is_some() {
        return Err(Cli::command().error(
            ErrorKind::ArgumentConflict,
            "--rotate-key is a command of its own: use it without a subcommand, \
             or run `tollgate keys rotate`",
        ));
    }
    Ok(cli)
}
