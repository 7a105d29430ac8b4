//! Install progress for `push_guestos_config`: a bar redrawn in place at every report on a
//! terminal; otherwise (a log) a line when an image starts and at every further 10 % (stderr either
//! way; stdout stays for results).

use std::io::{IsTerminal, Write};

use crate::protocol::pb::InstallProgress;

/// The fraction done, 0.0 to 1.0 (1.0 when there is nothing to fetch).
fn fraction(p: &InstallProgress) -> f64 {
    let (done, total) = (p.done_bytes.unwrap_or(0), p.total_bytes.unwrap_or(0));
    if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).clamp(0.0, 1.0)
    }
}

/// Renders one progress line: `NAME [#####-----]  45%  3.2/7.1 MiB  IMAGE`.
pub fn render(p: &InstallProgress, bar_width: usize) -> String {
    let (done, total) = (p.done_bytes.unwrap_or(0), p.total_bytes.unwrap_or(0));
    let frac = fraction(p);
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
    /// The tenth of the total last logged (without a terminal).
    last_tenth: u32,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            tty: std::io::stderr().is_terminal(),
            drawn: false,
            last_image: None,
            last_tenth: 0,
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
        } else if let Some(line) = self.log_line(p) {
            let _ = writeln!(err, "{line}");
        }
    }

    /// Without a terminal: the line to log for `p`, when an image starts or another 10 % is done.
    fn log_line(&mut self, p: &InstallProgress) -> Option<String> {
        let tenth = (fraction(p) * 10.0).floor() as u32;
        if p.image == self.last_image && tenth <= self.last_tenth {
            return None;
        }
        self.last_image = p.image.clone();
        self.last_tenth = tenth;
        Some(format!("installing {}", render(p, 20)))
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

    #[test]
    fn without_a_terminal_a_line_per_image_and_per_tenth() {
        let mut progress = Progress {
            tty: false,
            ..Progress::default()
        };
        let at = |image: Option<&str>, done: u64| InstallProgress {
            guestos: Some("g-1".into()),
            image: image.map(Into::into),
            done_bytes: Some(done),
            total_bytes: Some(100),
        };
        let logged: Vec<u64> = [
            at(None, 0),
            at(Some("root.img"), 0),
            at(Some("root.img"), 5),
            at(Some("root.img"), 12),
            at(Some("root.img"), 15),
            at(Some("root.img"), 55),
            at(Some("data.img"), 60),
            at(Some("data.img"), 100),
        ]
        .iter()
        .filter_map(|p| progress.log_line(p).map(|_| p.done_bytes.unwrap()))
        .collect();
        assert_eq!(logged, vec![0, 12, 55, 60, 100]);
    }
}
