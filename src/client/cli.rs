//! Command-line definitions of `control` (clap derive), shared by the binary, the shell completion
//! generator and the man page generator.
//!
//! Upstream's quirks we keep: the command word is case-insensitive ([`normalize_args`] lowercases it
//! before clap sees it), `-s` means `--socket` only BEFORE the command word (after `list` it means
//! `--system`), `--key` must be written `--key=PIN`. `--json` and `--proto` are global and may appear
//! before or after the command word. `assign_iface` / `unassign_iface` accept both documented orders
//! (`--iface NAME <c>` and `<c> --iface=NAME`) because the container is a plain positional argument.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// Default control socket path (upstream's, so both clients and daemons interoperate).
pub const DEFAULT_SOCKET: &str = "/run/socket/cml-control";

/// `control [-s|--socket PATH] COMMAND ARGS…`: the client of the cml daemon.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "control",
    version,
    about = "Control the cml container manager",
    max_term_width = 100
)]
pub struct Cli {
    /// Path of the daemon's control socket (only before the command word)
    #[arg(short = 's', long = "socket", value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Print exactly one JSON document on stdout instead of text
    #[arg(long, global = true, conflicts_with = "proto")]
    pub json: bool,
    /// Print every reply of the daemon as protobuf text (like upstream's client)
    #[arg(long, global = true)]
    pub proto: bool,
    /// What to do
    #[command(subcommand)]
    pub command: Command,
}

/// The arguments that name a container and an interface (`assign_iface`, `unassign_iface`).
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct IfaceArgs {
    /// Container UUID or name
    pub container: String,
    /// Network interface name (`--iface NAME`, `--iface=NAME` or `-i NAME`)
    #[arg(short = 'i', long = "iface", value_name = "NAME")]
    pub iface: String,
    /// Keep the assignment in the container's config
    #[arg(short = 'p', long)]
    pub persistent: bool,
}

/// One `control` command; the words are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
#[command(rename_all = "snake_case")]
pub enum Command {
    /// Start a container (asks for the token PIN if the container is encrypted with a softtoken)
    Start {
        /// Container UUID or name
        container: String,
        /// Token PIN (must be written --key=PIN); otherwise asked for when needed
        #[arg(long, require_equals = true, value_name = "PIN")]
        key: Option<String>,
        /// Start in setup mode
        #[arg(long)]
        setup: bool,
    },
    /// Stop a container
    Stop {
        /// Container UUID or name
        container: String,
        /// Token PIN (must be written --key=PIN); otherwise asked for when needed
        #[arg(long, require_equals = true, value_name = "PIN")]
        key: Option<String>,
    },
    /// Create a container from a config file (optionally signed)
    Create {
        /// Container config (protobuf text)
        file: PathBuf,
        /// Signature of the config
        signature: Option<PathBuf>,
        /// Certificate of the signer (only used with a signature)
        certificate: Option<PathBuf>,
    },
    /// Remove a container and all its data
    Remove {
        /// Container UUID or name
        container: String,
    },
    /// Delete a container's data and key (config, name and UUID stay)
    Wipe {
        /// Container UUID or name
        container: String,
    },
    /// Wipe and remove every container
    WipeDevice,
    /// Print a container's state
    State {
        /// Container UUID or name
        container: String,
    },
    /// List containers: NAME UUID STATE GUESTOS UPTIME
    List {
        /// Include system services
        #[arg(short = 's', long)]
        system: bool,
        /// Ignored (upstream accepts extra words)
        #[arg(hide = true)]
        ignored: Vec<String>,
    },
    /// Print a container's config as protobuf text
    Config {
        /// Container UUID or name
        container: String,
    },
    /// Replace a container's config (applied at its next start)
    UpdateConfig {
        /// Container UUID or name
        container: String,
        /// New container config (protobuf text)
        file: PathBuf,
        /// Signature of the config
        signature: Option<PathBuf>,
        /// Certificate of the signer (only used with a signature)
        certificate: Option<PathBuf>,
    },
    /// Re-read the config files of stopped containers
    Reload,
    /// Run a command in a container: run <c> [nopty] CMD ARGS…
    Run {
        /// Container UUID or name
        container: String,
        /// `[nopty] CMD ARGS…`, passed verbatim (arguments may start with '-')
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "CMD"
        )]
        command: Vec<String>,
    },
    /// Attach to a container's console (its init's terminal, /dev/console); detach with Ctrl-]
    Console {
        /// Container UUID or name
        container: String,
    },
    /// Print what a container's console printed (its last run's when stopped)
    Logs {
        /// Container UUID or name
        container: String,
        /// Keep printing new output until the container stops
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines
        #[arg(short = 'n', long, value_name = "N")]
        tail: Option<u32>,
    },
    /// Move a host network interface into a container
    AssignIface(IfaceArgs),
    /// Give a container's network interface back to the host
    UnassignIface(IfaceArgs),
    /// List a container's network interfaces
    Ifaces {
        /// Container UUID or name
        container: String,
    },
    /// Freeze a container
    Freeze {
        /// Container UUID or name
        container: String,
    },
    /// Thaw a frozen container
    Unfreeze {
        /// Container UUID or name
        container: String,
    },
    /// Give a container access to the sound devices
    AllowAudio {
        /// Container UUID or name
        container: String,
    },
    /// Revoke a container's access to the sound devices
    DenyAudio {
        /// Container UUID or name
        container: String,
    },
    /// List installed GuestOS versions: NAME VERSION HARDWARE DESCRIPTION
    ListGuestos,
    /// Register a CA certificate for GuestOS signatures
    CaRegister {
        /// CA certificate (PEM)
        cert: PathBuf,
    },
    /// Install a GuestOS from its signed config
    PushGuestosConfig {
        /// GuestOS config (protobuf text)
        config: PathBuf,
        /// Signature of the config
        signature: PathBuf,
        /// Certificate of the signer
        certificate: PathBuf,
    },
    /// Remove a GuestOS (all its versions)
    RemoveGuestos {
        /// GuestOS name
        name: String,
    },
    /// Write the device's certificate signing request to FILE
    PullCsr {
        /// Output file
        file: PathBuf,
    },
    /// Install the device certificate
    PushCert {
        /// Device certificate (PEM)
        file: PathBuf,
    },
    /// Change the token PIN (asks for the current and the new PIN)
    ChangePin {
        /// Container UUID or name
        container: String,
    },
    /// Reboot the device
    Reboot,
    /// Put the device into provisioned mode
    SetProvisioned,
    /// Print whether the device is provisioned (true/false)
    GetProvisioned,
    /// Print disk and memory statistics
    DeviceStats,
    /// Allow or deny a device to a container: "[deny ]c|b MAJ|*:MIN|* ACCESS"
    DevAccess {
        /// Container UUID or name
        container: String,
        /// Device rule, one argument (quote it)
        rule: String,
    },
    /// Print every state change of every container as it happens, until interrupted (one line
    /// each: TIME NAME UUID STATE; with --json one JSON object per line)
    Events,
    /// Print a shell completion script
    Completions {
        /// Shell to generate for
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff)
    Man,
}

/// The clap command of `control`, for completion and man page generators and tests.
pub fn cli_command() -> clap::Command {
    Cli::command()
}

/// Lowercases the command word of `args` (the first word that is neither a global option nor the
/// value of `-s`/`--socket`), so command words are case-insensitive as upstream's.
pub fn normalize_args<I, T>(args: I) -> Vec<OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let mut out: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let mut i = 1;
    while i < out.len() {
        let Some(word) = out[i].to_str() else { return out };
        match word {
            "-s" | "--socket" => i += 2,
            "--" => {
                i += 1;
                break;
            }
            w if w.starts_with('-') => i += 1,
            _ => break,
        }
    }
    if let Some(word) = out.get_mut(i)
        && let Some(s) = word.to_str()
    {
        *word = s.to_lowercase().into();
    }
    out
}

/// Parses `args` (program name first) like the binary does, without exiting on errors.
pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    Cli::try_parse_from(normalize_args(args))
}

/// Splits a `run` command line into (`use a pty`, argv): a leading `nopty` word followed by a
/// command turns the PTY off.
pub fn split_nopty(command: &[String]) -> (bool, &[String]) {
    match command {
        [first, rest @ ..] if first == "nopty" && !rest.is_empty() => (false, rest),
        all => (true, all),
    }
}
