//! `cmld`: the cml daemon. Parses arguments, sets up logging, runs [`cml::daemon::run`].

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory, Parser, ValueEnum};
use cml::daemon::{self, NetBase, Options};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The cml container management daemon.
#[derive(Debug, Parser)]
#[command(name = "cmld", version, about)]
struct Args {
    /// Data directory: configs, GuestOSes, tokens, keys, images.
    #[arg(long, default_value = "/var/lib/cml")]
    data_dir: PathBuf,
    /// Control socket path.
    #[arg(long, default_value = "/run/socket/cml-control")]
    socket: PathBuf,
    /// Runtime directory: per-container runtime state.
    #[arg(long, default_value = "/run/cml")]
    run_dir: PathBuf,
    /// cgroup directory name used under each controller.
    #[arg(long, default_value = "cml", value_parser = daemon::parse_cgroup_parent)]
    cgroup_parent: String,
    /// IPv4 network from which each container gets a /24.
    #[arg(long, default_value = "172.23.0.0/16")]
    net_base: NetBase,
    /// Prefix of host-side interface names.
    #[arg(long, default_value = "cml", value_parser = daemon::parse_ifname_prefix)]
    ifname_prefix: String,
    /// Log line format (to stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

fn main() -> ExitCode {
    // At most two malloc arenas: glibc gives each thread that allocates its own (up to 8 per
    // CPU), and every arena keeps its touched pages — a burst of concurrent starts (blocking-pool
    // threads) left cmld ~150 KiB more resident per thread for good. cmld's threads allocate
    // little and rarely at once.
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
    // SAFETY: still the only thread; this takes systemd's variables out of the environment
    // before cmld starts any thread or process.
    let service_manager = unsafe { cml::sys::systemd::Manager::from_env() };
    if let Some(status) = cml::cli_assets::generate_if_asked(Args::command, "cmld", "8") {
        return status;
    }
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    let opts = Options {
        data_dir: args.data_dir,
        socket: args.socket,
        run_dir: args.run_dir,
        cgroup_parent: args.cgroup_parent,
        net_base: args.net_base,
        ifname_prefix: args.ifname_prefix,
    };
    match daemon::run(opts, service_manager) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("cmld: {e}");
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
