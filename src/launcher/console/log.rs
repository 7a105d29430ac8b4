//! The bounded console log file and reading it back (see the parent module).

#[allow(clippy::wildcard_imports)]
use super::*;

/// The bounded log file (see the module documentation).
#[derive(Debug)]
pub struct LogRing {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    bound: u64,
}

impl LogRing {
    /// Starts an empty log at `path` bounded to `bound` bytes (0: the file stays empty).
    pub fn create(path: PathBuf, bound: u64) -> io::Result<LogRing> {
        let file = open_log(&path, true)?;
        Ok(LogRing {
            path,
            file: (bound > 0).then_some(file),
            size: 0,
            bound,
        })
    }

    /// A log that keeps nothing (its file could not be made).
    pub(super) fn none(path: PathBuf) -> LogRing {
        LogRing {
            path,
            file: None,
            size: 0,
            bound: 0,
        }
    }

    /// Appends `data`; past the bound, keeps the newest half. Errors (a full file system) lose
    /// output, never block the guest.
    pub fn write(&mut self, data: &[u8]) {
        let Some(file) = self.file.as_mut() else { return };
        if file.write_all(data).is_err() {
            return;
        }
        self.size += data.len() as u64;
        if self.size > self.bound {
            let _ = self.trim();
        }
    }

    fn trim(&mut self) -> io::Result<()> {
        let Some(file) = self.file.as_ref() else {
            return Ok(());
        };
        let keep = (self.bound / 2).min(self.size);
        let mut buf = vec![0u8; keep as usize];
        file.read_exact_at(&mut buf, self.size - keep)?;
        // Start at a line if one starts in the first half of what is kept.
        if let Some(i) = buf[..buf.len() / 2].iter().position(|b| *b == b'\n') {
            buf.drain(..=i);
        }
        let tmp = self.path.with_extension("log.tmp");
        {
            let mut t = open_log(&tmp, true)?;
            t.write_all(&buf)?;
        }
        std::fs::rename(&tmp, &self.path)?;
        self.file = Some(open_log(&self.path, false)?);
        self.size = buf.len() as u64;
        Ok(())
    }

    /// Everything in the log now.
    pub fn snapshot(&self) -> Vec<u8> {
        let Some(file) = self.file.as_ref() else {
            return Vec::new();
        };
        let mut buf = vec![0u8; self.size as usize];
        match file.read_exact_at(&mut buf, 0) {
            Ok(()) => buf,
            Err(_) => Vec::new(),
        }
    }
}

fn open_log(path: &Path, truncate: bool) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut o = std::fs::OpenOptions::new();
    o.read(true).append(true).create(true).mode(0o600);
    if truncate {
        // append + truncate is refused by std: truncate first.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)?;
        drop(f);
    }
    o.open(path)
}

/// The log of a container's console as it is now (its last run's, when it is stopped); empty
/// when there is none.
pub fn read_log(run_dir: &Path) -> io::Result<Vec<u8>> {
    match std::fs::read(run_dir.join(LOG_FILE)) {
        Ok(b) => Ok(b),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The last `n` lines of `log` (a last line without a newline counts).
pub fn tail_lines(log: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &log[log.len()..];
    }
    let body = log.strip_suffix(b"\n").unwrap_or(log);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &log[i + 1..];
            }
        }
    }
    log
}

/// The last lines of a container's console log for a message: at most `lines` non-empty lines,
/// control characters (escape sequences, carriage returns) removed; `None` when the log is empty.
pub fn last_lines(run_dir: &Path, lines: usize) -> Option<String> {
    let f = File::open(run_dir.join(LOG_FILE)).ok()?;
    let len = f.metadata().ok()?.len();
    let take = len.min(4096);
    let mut buf = vec![0u8; take as usize];
    f.read_exact_at(&mut buf, len - take).ok()?;
    let text = String::from_utf8_lossy(&buf);
    let cleaned: Vec<String> = text
        .lines()
        .map(|l| {
            l.chars()
                .filter(|c| !c.is_control() || *c == '\t')
                .collect::<String>()
                .trim_end()
                .to_owned()
        })
        .filter(|l| !l.is_empty())
        .collect();
    if cleaned.is_empty() {
        return None;
    }
    Some(cleaned[cleaned.len().saturating_sub(lines)..].join("\n"))
}
