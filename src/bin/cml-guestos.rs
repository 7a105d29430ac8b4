//! `cml-guestos`: makes GuestOS images, signs files and creates a development PKI. Parses the
//! command line and calls `cml::guestos_build` and `cml::crypto`; errors are printed with their
//! cause chain and exit with status 1 (usage errors: 2, from clap).

use std::{
    error::Error,
    fs,
    path::{Path, PathBuf},
    process::ExitCode,
};

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use cml::{
    crypto,
    guestos_build::{self, BuildOptions, DataFs, RootFs, RootType, RootfsSource},
    store,
};

/// GuestOS image builder and signing tool for cml.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Writes a development PKI: root-ca.cert/.key and signing.cert/.key (EC P-256).
    DevPki {
        /// Directory to write to (created if missing).
        dir: PathBuf,
    },
    /// Builds a GuestOS from a root file system directory or tar archive, laid out as an update
    /// store.
    Build(BuildArgs),
    /// Signs FILE with KEY, writing FILE.sig (the format cmld verifies).
    Sign {
        /// The file to sign.
        file: PathBuf,
        /// Private key (PEM).
        #[arg(long)]
        key: PathBuf,
        /// Certificate of the key (PEM; leaf first, then intermediates).
        #[arg(long)]
        cert: PathBuf,
        /// Where to write the signature (default FILE.sig).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, clap::Args)]
struct BuildArgs {
    /// Root file system directory (not modified; every file root-owned in a squashfs image).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "rootfs_tar",
        conflicts_with = "rootfs_tar"
    )]
    rootfs: Option<PathBuf>,
    /// Root file system as a tar archive, plain, gzip or zstd (as written by mmdebstrap, docker
    /// export, podman export): numeric owners, modes, extended attributes, hard links, symlinks,
    /// device nodes, fifos and times are kept. Entries that would reach outside the root are
    /// refused. Needs root.
    #[arg(long, value_name = "FILE")]
    rootfs_tar: Option<PathBuf>,
    /// GuestOS name.
    #[arg(long)]
    name: String,
    /// GuestOS version (> 0).
    #[arg(long)]
    version: u64,
    /// Output directory (store root).
    #[arg(long)]
    out: PathBuf,
    /// Hardware name.
    #[arg(long, default_value = "x86")]
    hardware: String,
    /// The container's init program.
    #[arg(long, default_value = "/sbin/init")]
    init: String,
    /// An argument of init (repeatable).
    #[arg(long = "init-param", allow_hyphen_values = true)]
    init_params: Vec<String>,
    /// How containers mount the root image.
    #[arg(long, value_enum, default_value_t = RootTypeArg::Shared)]
    root_type: RootTypeArg,
    /// File system of the root image.
    #[arg(long, value_enum, default_value_t = RootFsArg::Squashfs)]
    root_fs: RootFsArg,
    /// File system of the per-container /data mount.
    #[arg(long, value_enum, default_value_t = DataFsArg::Tmpfs)]
    data_fs: DataFsArg,
    /// Size of /data in MiB.
    #[arg(long, default_value_t = 16)]
    data_size: u32,
    /// The guest reports readiness with READY=1 (BOOTING → RUNNING waits for it).
    #[arg(long)]
    notify: bool,
    /// The signal `control stop` sends the guest's init (default SIGTERM; systemd: SIGRTMIN+3).
    #[arg(long)]
    stop_signal: Option<String>,
    /// Where cmld fetches the images from (file://, http://, https://).
    #[arg(long)]
    update_base_url: Option<String>,
    /// English description (default "<name> <version>").
    #[arg(long)]
    description: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RootTypeArg {
    Shared,
    #[value(name = "shared_rw", alias = "shared-rw")]
    SharedRw,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RootFsArg {
    Squashfs,
    Ext4,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DataFsArg {
    Tmpfs,
    Ext4,
}

impl From<BuildArgs> for BuildOptions {
    fn from(a: BuildArgs) -> Self {
        BuildOptions {
            // clap requires exactly one of the two.
            rootfs: match (a.rootfs, a.rootfs_tar) {
                (_, Some(tar)) => RootfsSource::Tar(tar),
                (Some(dir), None) => RootfsSource::Dir(dir),
                (None, None) => RootfsSource::Dir(PathBuf::new()),
            },
            name: a.name,
            version: a.version,
            out: a.out,
            hardware: a.hardware,
            init: a.init,
            init_params: a.init_params,
            root_type: match a.root_type {
                RootTypeArg::Shared => RootType::Shared,
                RootTypeArg::SharedRw => RootType::SharedRw,
            },
            root_fs: match a.root_fs {
                RootFsArg::Squashfs => RootFs::Squashfs,
                RootFsArg::Ext4 => RootFs::Ext4,
            },
            data_fs: match a.data_fs {
                DataFsArg::Tmpfs => DataFs::Tmpfs,
                DataFsArg::Ext4 => DataFs::Ext4,
            },
            data_size: a.data_size,
            notify: a.notify,
            stop_signal: a.stop_signal,
            update_base_url: a.update_base_url,
            description: a.description,
        }
    }
}

/// An error of this tool: a message plus the library error it wraps.
type ToolResult = Result<(), Box<dyn Error>>;

fn read(path: &Path) -> Result<Vec<u8>, Box<dyn Error>> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()).into())
}

fn run(cli: Cli) -> ToolResult {
    match cli.command {
        Cmd::DevPki { dir } => {
            crypto::dev_pki(&dir)?;
            println!("{}", dir.display());
        }
        Cmd::Build(args) => {
            let out = guestos_build::build(&args.into())?;
            println!("{}", out.conf.display());
            println!("{}", out.image.display());
        }
        Cmd::Sign { file, key, cert, out } => {
            let key = read(&key)?;
            crypto::check_key_matches_cert(&key, &read(&cert)?)?;
            let sig = crypto::sign(&read(&file)?, &key)?;
            let out = out.unwrap_or_else(|| {
                let mut name = file.clone().into_os_string();
                name.push(".sig");
                PathBuf::from(name)
            });
            store::atomic_write(&out, &sig, 0o644)?;
            println!("{}", out.display());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    if let Some(status) = cml::cli_assets::generate_if_asked(Cli::command, "cml-guestos", "1") {
        return status;
    }
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = format!("cml-guestos: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}
