//! `control`: the command-line client of cmld. Parses the command line, runs the library client
//! and maps its error to the exit status (see `cml::client`).

use std::process::ExitCode;

use clap::Parser as _;
use cml::client::{self, Cli};

fn main() -> ExitCode {
    if let Some(status) = cml::cli_assets::generate_if_asked(client::cli_command, "control", "1") {
        return status;
    }
    // Command words are case-insensitive (upstream compares them with strcasecmp). Usage errors
    // exit with clap's status 2.
    let cli = Cli::parse_from(client::normalize_args(std::env::args_os()));
    match client::execute(&cli) {
        Ok(status) => ExitCode::from(status),
        Err(e) => {
            if !e.is_broken_pipe() {
                eprintln!("control: {}", e.report());
            }
            ExitCode::from(e.exit_code())
        }
    }
}
