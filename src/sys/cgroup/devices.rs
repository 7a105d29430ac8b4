//! Device rules (`[deny ]c|b MAJ|*:MIN|* ACCESS`) and the default set every container gets.

#[allow(clippy::wildcard_imports)]
use super::*;

/// One device-cgroup rule (SPEC §4.5 `dev_rule` syntax: `[deny ]c|b MAJ|*:MIN|* ACCESS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRule {
    /// Allow (true) or deny.
    pub allow: bool,
    /// `a` (all), `c` (char) or `b` (block).
    pub kind: char,
    /// Major number; None = `*`.
    pub major: Option<u32>,
    /// Minor number; None = `*`.
    pub minor: Option<u32>,
    /// A non-empty subset of `rwm`.
    pub access: String,
}

impl FromStr for DeviceRule {
    type Err = CgroupError;

    fn from_str(s: &str) -> Result<DeviceRule, CgroupError> {
        let bad = |reason: &str| CgroupError::DeviceRule {
            rule: s.to_string(),
            reason: reason.to_string(),
        };
        let mut words: Vec<&str> = s.split_whitespace().collect();
        let allow = if words.first() == Some(&"deny") {
            words.remove(0);
            false
        } else {
            true
        };
        let [kind, numbers, access] = words[..] else {
            return Err(bad("expected \"[deny ]c|b MAJ|*:MIN|* ACCESS\""));
        };
        let kind = match kind {
            "a" => 'a',
            "c" => 'c',
            "b" => 'b',
            _ => return Err(bad("type must be c, b or a")),
        };
        let (maj, min) = numbers
            .split_once(':')
            .ok_or_else(|| bad("device must be MAJ:MIN"))?;
        let number = |n: &str, what: &str| -> Result<Option<u32>, CgroupError> {
            if n == "*" {
                Ok(None)
            } else if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
                n.parse()
                    .map(Some)
                    .map_err(|_| bad(&format!("{what} number out of range")))
            } else {
                Err(bad(&format!("{what} must be a number or *")))
            }
        };
        let major = number(maj, "major")?;
        let minor = number(min, "minor")?;
        if kind == 'a' && (major.is_some() || minor.is_some()) {
            return Err(bad("type a takes *:*"));
        }
        if access.is_empty()
            || !access.chars().all(|c| "rwm".contains(c))
            || (1..access.len()).any(|i| access[i..].contains(&access[i - 1..i]))
        {
            return Err(bad("access must be a non-empty subset of rwm"));
        }
        Ok(DeviceRule {
            allow,
            kind,
            major,
            minor,
            access: access.to_string(),
        })
    }
}

impl DeviceRule {
    fn allow_char(major: u32, minor: Option<u32>) -> DeviceRule {
        DeviceRule {
            allow: true,
            kind: 'c',
            major: Some(major),
            minor,
            access: "rwm".to_string(),
        }
    }

    /// The v1 `devices.allow`/`devices.deny` line: `c 116:* rw`.
    pub fn to_v1(&self) -> String {
        let n = |v: Option<u32>| v.map_or_else(|| "*".to_string(), |v| v.to_string());
        format!(
            "{} {}:{} {}",
            self.kind,
            n(self.major),
            n(self.minor),
            self.access
        )
    }
}

impl fmt::Display for DeviceRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.allow {
            f.write_str("deny ")?;
        }
        f.write_str(&self.to_v1())
    }
}

/// The safe default device set every container gets (SPEC §4.5b): null, zero, full, random, urandom,
/// tty, console, ptmx, pts, fuse, tun — all `rwm`.
pub fn default_devices() -> Vec<DeviceRule> {
    [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(1)),
        (5, Some(2)),
        (136, None),
        (10, Some(229)),
        (10, Some(200)),
    ]
    .into_iter()
    .map(|(major, minor)| DeviceRule::allow_char(major, minor))
    .collect()
}
