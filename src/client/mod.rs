//! The `control` client: a synchronous (std `UnixStream`) client of the daemon's control socket.
//!
//! One connection per invocation; requests and replies strictly alternate, except in `run` and
//! `console`, where the daemon streams output while a background thread forwards stdin (see
//! [`exec`], [`console`]), and in `logs` and `events`, where it streams output. Container
//! arguments are names or UUIDs, resolved with `GET_CONTAINER_STATUS` first
//! ([`format::resolve_container`]).
//!
//! Output contract: stdout carries only the result (a table, a state name, a config as protobuf
//! text; with `--json` exactly one JSON document; with `--proto` the replies to the command as
//! protobuf text — internal lookups such as name resolution are not echoed, as upstream's client
//! does not); messages for humans go to stderr. Exit statuses come from [`ClientError::exit_code`].

pub mod cli;
pub mod commands;
pub mod console;
pub mod exec;
pub mod format;
pub mod progress;
pub mod session;
pub mod term;

use std::io::{self, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

pub use cli::{Cli, Command, DEFAULT_SOCKET, cli_command, normalize_args, parse_args};
pub use session::Session;
pub use term::{PinSource, StdinPin};

use crate::protocol::codec::FrameError;

/// Exit status: success.
pub const EXIT_OK: u8 = 0;
/// Exit status: the daemon reported a failure, or the request was refused on its merits.
pub const EXIT_FAILURE: u8 = 1;
/// Exit status: bad command line (clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: cannot connect, or the connection was lost mid-exchange.
pub const EXIT_CONNECTION: u8 = 3;
/// Exit status of `run` when `run` itself failed (the command did not run to its end).
pub const EXIT_RUN_FAILED: u8 = 125;

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputMode {
    /// Text for humans and scripts (tables, names, protobuf text configs).
    Human,
    /// Exactly one JSON document.
    Json,
    /// Every reply to the command as protobuf text.
    Proto,
}

/// Why a `control` command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The control socket cannot be reached.
    #[error("cannot connect to {}", path.display())]
    Connect {
        /// The socket path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A request could not be sent.
    #[error("connection to the daemon lost while sending")]
    Send(#[source] io::Error),
    /// A reply could not be read.
    #[error("connection to the daemon lost while receiving")]
    Receive(#[source] FrameError),
    /// The daemon closed the connection where a reply was due.
    #[error("the daemon closed the connection")]
    Closed,
    /// A reply is not a valid `DaemonToController`.
    #[error("malformed reply from the daemon")]
    Decode(#[source] prost::DecodeError),
    /// The daemon reported a failure (its `error_message`, or the reply's name).
    #[error("{}", message.as_deref().map_or_else(|| format!("the daemon answered {reply}"), str::to_owned))]
    Daemon {
        /// The reply's response or code name (`CMD_FAILED`, `CONTAINER_START_PASSWD_WRONG`…).
        reply: String,
        /// The daemon's `error_message`.
        message: Option<String>,
    },
    /// The daemon sent a reply of the wrong kind.
    #[error("unexpected reply {got} from the daemon (expected {expected})")]
    UnexpectedReply {
        /// What was expected.
        expected: &'static str,
        /// What came.
        got: String,
    },
    /// No container has that name or UUID.
    #[error("no container named or with UUID {0}")]
    NoSuchContainer(String),
    /// An input file cannot be read.
    #[error("cannot read {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An output file cannot be written.
    #[error("cannot write {}", path.display())]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The two entries of the new PIN differ.
    #[error("new PINs do not match")]
    PinMismatch,
    /// No PIN could be read.
    #[error("cannot read the PIN")]
    ReadPin(#[source] io::Error),
    /// The terminal settings cannot be changed.
    #[error("cannot change the terminal settings")]
    Terminal(#[source] nix::Error),
    /// stdout cannot be written.
    #[error("cannot write the output")]
    Output(#[source] io::Error),
    /// `run` failed before the command ended (exit status 125).
    #[error("run failed")]
    Run(#[source] Box<ClientError>),
    /// A bug in the client.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl ClientError {
    /// The process exit status for this error (see the module documentation and SPEC §6).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Connect { .. } | Self::Send(_) | Self::Receive(_) | Self::Closed => EXIT_CONNECTION,
            Self::Run(_) => EXIT_RUN_FAILED,
            Self::Decode(_)
            | Self::Daemon { .. }
            | Self::UnexpectedReply { .. }
            | Self::NoSuchContainer(_)
            | Self::ReadFile { .. }
            | Self::WriteFile { .. }
            | Self::PinMismatch
            | Self::ReadPin(_)
            | Self::Terminal(_)
            | Self::Output(_)
            | Self::Internal(_) => EXIT_FAILURE,
        }
    }

    /// Whether stdout was closed by the reader (`control list | head`): exit without a message.
    pub fn is_broken_pipe(&self) -> bool {
        match self {
            Self::Output(e) => e.kind() == io::ErrorKind::BrokenPipe,
            Self::Run(inner) => inner.is_broken_pipe(),
            _ => false,
        }
    }

    /// The message with its causes, `: `-separated (the binary prints it once, after `control: `).
    /// A `run` failure shows its cause directly.
    pub fn report(&self) -> String {
        let top: &dyn std::error::Error = match self {
            Self::Run(inner) => inner.as_ref(),
            other => other,
        };
        let mut text = top.to_string();
        let mut source = top.source();
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        text
    }
}

impl Cli {
    /// The output mode the flags ask for.
    pub fn mode(&self) -> OutputMode {
        if self.proto {
            OutputMode::Proto
        } else if self.json {
            OutputMode::Json
        } else {
            OutputMode::Human
        }
    }
}

/// Runs a parsed command line: writes the result to stdout and returns the exit status.
pub fn execute(cli: &Cli) -> Result<u8, ClientError> {
    let stdout = io::stdout();
    let mut out = stdout.lock();
    match &cli.command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cli_command(), "control", &mut out);
            out.flush().map_err(ClientError::Output)?;
            Ok(EXIT_OK)
        }
        Command::Man => {
            clap_mangen::Man::new(cli_command())
                .render(&mut out)
                .map_err(ClientError::Output)?;
            Ok(EXIT_OK)
        }
        Command::Run { container, command } => {
            run_command(cli, container, command, &mut out).map_err(|e| ClientError::Run(Box::new(e)))
        }
        Command::Console { container } => {
            let stream = connect(&cli.socket)?;
            let mut session = Session::new(stream, cli.mode(), &mut out);
            console::attach(&mut session, container)
        }
        other => {
            let (result, json_written) = command(cli, other, &mut out);
            if let Err(e) = &result
                && cli.mode() == OutputMode::Json
                && !json_written
            {
                // Keep the promise of one JSON document even when no reply carried the failure.
                let doc = serde_json::json!({ "error": e.report() });
                let _ = writeln!(out, "{doc}");
            }
            result
        }
    }
}

/// Runs a command other than `run`; also says whether a JSON document was written.
fn command(cli: &Cli, cmd: &Command, out: &mut dyn Write) -> (Result<u8, ClientError>, bool) {
    let stream = match connect(&cli.socket) {
        Ok(stream) => stream,
        Err(e) => return (Err(e), false),
    };
    let mut session = Session::new(stream, cli.mode(), out);
    let result = commands::dispatch(&mut session, cmd, &mut StdinPin);
    (result, session.json_written())
}

fn run_command(
    cli: &Cli,
    container: &str,
    command: &[String],
    out: &mut dyn Write,
) -> Result<u8, ClientError> {
    let stream = connect(&cli.socket)?;
    let mut session = Session::new(stream, cli.mode(), out);
    let (pty, argv) = cli::split_nopty(command);
    exec::run(&mut session, container, pty, argv)
}

/// Connects to the control socket.
pub fn connect(path: &std::path::Path) -> Result<UnixStream, ClientError> {
    UnixStream::connect(path).map_err(|source| ClientError::Connect {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests;
