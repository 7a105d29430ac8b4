//! `cml-web`: the JSON HTTP API of cml, a client of cmld's control socket (see `cml::web`).
//! Parses the command line, sets up logging, runs the library and maps its error to an exit
//! status (1 for any failure, 2 for a bad command line).

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, Subcommand};
use cml::client::{DEFAULT_SOCKET, PinSource as _, StdinPin};
use cml::web::{self, Listen, WebError};

/// Serve cml's JSON HTTP API (a client of cmld's control socket)
#[derive(Debug, Parser)]
#[command(name = "cml-web", version, max_term_width = 100)]
struct Args {
    /// cmld's control socket
    #[arg(short = 's', long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Listen address: IP:PORT or unix:/path
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8086")]
    listen: String,
    /// The password file (an argon2id hash written by `cml-web passwd`); required to serve
    #[arg(long, value_name = "PATH")]
    password_file: Option<PathBuf>,
    /// A file holding a token that may scrape /metrics as `Authorization: Bearer TOKEN` (without
    /// it, only a logged-in session may)
    #[arg(long, value_name = "PATH")]
    metrics_token_file: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Sub>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Read a password (from stdin) and write its argon2id hash to FILE (mode 0600)
    Passwd {
        /// The password file to write
        #[arg(long, value_name = "PATH")]
        file: PathBuf,
    },
}

fn main() -> ExitCode {
    if let Some(status) = cml::cli_assets::generate_if_asked(Args::command, "cml-web", "1") {
        return status;
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut text = format!("cml-web: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{text}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), WebError> {
    match args.command {
        Some(Sub::Passwd { file }) => {
            let password = if std::io::stdin().is_terminal() {
                let first = StdinPin
                    .read_pin("New password: ")
                    .map_err(WebError::ReadPassword)?;
                let second = StdinPin.read_pin("Again: ").map_err(WebError::ReadPassword)?;
                if first != second {
                    return Err(WebError::PasswordMismatch);
                }
                first
            } else {
                StdinPin.read_pin("").map_err(WebError::ReadPassword)?
            };
            web::auth::write_password_file(&file, &password)
        }
        None => {
            let Some(password_file) = args.password_file else {
                clap::Error::raw(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--password-file PATH is required to serve (create it with `cml-web passwd --file PATH`)\n",
                )
                .exit()
            };
            web::serve(&web::Config {
                socket: args.socket,
                listen: Listen::parse(&args.listen)?,
                password_file,
                metrics_token_file: args.metrics_token_file,
            })
        }
    }
}
