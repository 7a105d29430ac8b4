//! Man pages and shell completions made from the binaries' own clap definitions, for the Debian
//! package: `scripts/package.sh` runs each binary with `CML_GENERATE_ASSETS=DIR`, which writes
//! `DIR/man/NAME.SECTION`, `DIR/completions/bash/NAME`, `DIR/completions/zsh/_NAME` and
//! `DIR/completions/fish/NAME.fish` and exits instead of running.

use std::{fs, io, path::Path, process::ExitCode};

/// The variable naming the directory to write into.
pub const ENV: &str = "CML_GENERATE_ASSETS";

/// With `CML_GENERATE_ASSETS` set: writes the man page (in `section`) and the bash, zsh and fish
/// completions of `cmd` for the binary `name` and returns the exit status to end with; else `None`.
pub fn generate_if_asked(
    cmd: impl FnOnce() -> clap::Command,
    name: &'static str,
    section: &str,
) -> Option<ExitCode> {
    let dir = std::env::var_os(ENV)?;
    match write_all(Path::new(&dir), cmd().name(name).bin_name(name), section) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("{ENV}={}: {e}", Path::new(&dir).display());
            Some(ExitCode::FAILURE)
        }
    }
}

fn write_all(dir: &Path, mut cmd: clap::Command, section: &str) -> io::Result<()> {
    let name = cmd.get_name().to_owned();
    cmd.build();
    let man = dir.join("man");
    fs::create_dir_all(&man)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .render(&mut page)?;
    fs::write(man.join(format!("{name}.{section}")), page)?;
    for (shell, sub, file) in [
        (clap_complete::Shell::Bash, "bash", name.clone()),
        (clap_complete::Shell::Zsh, "zsh", format!("_{name}")),
        (clap_complete::Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let out = dir.join("completions").join(sub);
        fs::create_dir_all(&out)?;
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd, name.clone(), &mut text);
        fs::write(out.join(file), text)?;
    }
    Ok(())
}
