//! The `twinkv` binary: parse flags, call the library, turn the result into an exit code.

use std::io::{self, IsTerminal};
use std::process::ExitCode;

use clap::Parser;
use twinkv::cli::{Cli, Command};
use twinkv::inspect::{self, Mode};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TWINKV_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => {
            let config = match twinkv::Config::from_args(&args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("twinkv: error: {e:#}");
                    return ExitCode::from(2);
                }
            };
            match twinkv::server::serve(&config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("twinkv: error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Inspect(args) => {
            let mode = if args.json {
                Mode::Json
            } else if args.dump {
                Mode::Dump
            } else {
                Mode::Human
            };
            match inspect::inspect(
                &args.path,
                mode,
                &mut io::stdout().lock(),
                &mut io::stderr(),
            ) {
                Ok(code) => ExitCode::from(code),
                Err(e) => {
                    eprintln!("twinkv inspect: error: {e:#}");
                    ExitCode::from(inspect::EXIT_NO_VALID)
                }
            }
        }
    }
}
