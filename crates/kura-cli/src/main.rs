//! `kura`: the one binary. `kura serve` runs everything; the other
//! subcommands administer an installation (configuration, keys).
//!
//! This crate is only the command-line definition and glue: it parses
//! arguments, layers configuration, sets up logging and calls into
//! `kura-server` and `kura-store`. It holds no business rules.

// The command line's job is to print to the terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod app;
mod cli;
mod commands;
mod logging;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
