//! The `sealpost` command: parses arguments, sets up logging, and maps failures to exit codes.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

use sealpost::cli::{self, Cli};

fn main() -> ExitCode {
    // clap exits with 2 on a usage error and 0 for --help/--version, as the CLI promises.
    let cli = Cli::parse();
    cli::init_tracing(cli.verbose, cli.log_format);
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if cli::should_print(&err) {
                eprintln!("sealpost: error: {}", cli::describe(&err));
            }
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
