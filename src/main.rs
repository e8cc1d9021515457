//! The `twinkv` binary: parse flags, call the library, turn the result into an exit code.

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

use clap::Parser;
use twinkv::cli::{Cli, Command};
use twinkv::inspect::{self, Mode};
use twinkv::Chain;

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit status for flags that parse but cannot be used (clap's own usage errors exit 2 too).
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(|| Quiet(io::stderr()))
        .with_ansi(io::stderr().is_terminal())
        // When a line cannot be written, the subscriber would say so with `eprintln!`, which
        // panics on a dead stderr: a log that cannot be written is dropped instead.
        .log_internal_errors(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TWINKV_LOG")
                // openraft reports every election and replication retry at `info`.
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .init();
    match run(cli) {
        Ok(code) => code,
        Err((code, e)) => {
            let mut err = Quiet(io::stderr());
            let _ = writeln!(err, "twinkv: error: {}", Chain(&*e));
            code
        }
    }
}

/// Dispatches the subcommand; an error comes back with the exit code it means.
fn run(cli: Cli) -> Result<ExitCode, (ExitCode, Box<dyn std::error::Error>)> {
    match cli.command.unwrap_or(Command::Serve(cli.serve)) {
        Command::Serve(args) => {
            let config = twinkv::Config::from_args(&args)
                .map_err(|e| (ExitCode::from(EXIT_USAGE), e.into()))?;
            twinkv::server::run(&config).map_err(|e| (ExitCode::FAILURE, e.into()))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Inspect(args) => {
            let mode = if args.json {
                Mode::Json
            } else if args.dump {
                Mode::Dump
            } else {
                Mode::Human
            };
            let code = inspect::inspect(
                &args.path,
                mode,
                &mut io::stdout().lock(),
                &mut Quiet(io::stderr()),
            );
            Ok(ExitCode::from(code))
        }
    }
}

/// A sink whose write errors are swallowed: nothing outside the data dir (a full or closed
/// stderr) may stop or panic the server.
struct Quiet<W>(W);

impl<W: Write> Write for Quiet<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}
