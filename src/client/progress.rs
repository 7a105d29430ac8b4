//! Install progress for `push_guestos_config`: a bar redrawn in place on a terminal, one line per
//! image otherwise (stderr either way; stdout stays for results).

use std::io::{IsTerminal, Write};

use crate::protocol::pb::InstallProgress;

/// Renders one progress line: `NAME [#####-----]  45%  3.2/7.1 MiB  IMAGE`.
pub fn render(p: &InstallProgress, bar_width: usize) -> String {
    let (done, total) = (p.done_bytes.unwrap_or(0), p.total_bytes.unwrap_or(0));
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    };
    let filled = (frac * bar_width as f64).round() as usize;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    format!(
        "{} [{}{}] {:>3}% {:.1}/{:.1} MiB {}",
        p.guestos.as_deref().unwrap_or("GuestOS"),
        "#".repeat(filled),
        "-".repeat(bar_width - filled),
        (frac * 100.0).round() as u32,
        mib(done),
        mib(total),
        p.image.as_deref().unwrap_or("")
    )
}

/// Shows install progress on stderr.
pub struct Progress {
    tty: bool,
    drawn: bool,
    last_image: Option<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            last_image: None,
        }
    }
}

impl Progress {
    /// Shows one progress report.
    pub fn update(&mut self, p: &InstallProgress) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[K{}", render(p, 30));
            let _ = err.flush();
            self.drawn = true;
        } else if p.image != self.last_image {
            self.last_image = p.image.clone();
            let _ = writeln!(err, "installing {}", render(p, 20));
        }
    }

    /// Ends the bar's line.
    pub fn finish(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_a_bar() {
        let p = InstallProgress {
            guestos: Some("busybox-1".into()),
            image: Some("root.img".into()),
            done_bytes: Some(512 * 1024),
            total_bytes: Some(1024 * 1024),
        };
        assert_eq!(render(&p, 10), "busybox-1 [#####-----]  50% 0.5/1.0 MiB root.img");
        let empty = InstallProgress {
            total_bytes: Some(0),
            ..Default::default()
        };
        assert!(render(&empty, 4).contains("[####] 100%"));
    }
}
