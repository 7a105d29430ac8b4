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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn device_rules_parse() {
        let r: DeviceRule = "c 116:* rw".parse().unwrap();
        assert_eq!(
            r,
            DeviceRule {
                allow: true,
                kind: 'c',
                major: Some(116),
                minor: None,
                access: "rw".into()
            }
        );
        assert_eq!(r.to_v1(), "c 116:* rw");
        let r: DeviceRule = "deny b 8:0 rwm".parse().unwrap();
        assert!(!r.allow);
        assert_eq!(r.to_v1(), "b 8:0 rwm");
        assert_eq!(r.to_string(), "deny b 8:0 rwm");
        assert_eq!("  c *:*   m ".parse::<DeviceRule>().unwrap().to_v1(), "c *:* m");
        assert_eq!("a *:* rwm".parse::<DeviceRule>().unwrap().to_v1(), "a *:* rwm");
        for bad in [
            "",
            "deny",
            "c 116 rw",
            "x 1:3 rw",
            "c 1:3",
            "c 1:3 rwx",
            "c 1:3 rr",
            "c a:3 r",
            "c -1:3 r",
            "c 1:3 r extra",
            "allow c 1:3 r",
            "c 99999999999:1 r",
            "a 1:3 rwm",
            "deny deny c 1:3 r",
        ] {
            let err = bad.parse::<DeviceRule>().unwrap_err();
            assert!(matches!(err, CgroupError::DeviceRule { .. }), "{bad}");
            assert!(err.to_string().contains("invalid device rule"), "{err}");
        }
    }

    #[test]
    fn default_devices_are_the_safe_set() {
        let v1: Vec<String> = default_devices().iter().map(DeviceRule::to_v1).collect();
        assert_eq!(
            v1,
            [
                "c 1:3 rwm",
                "c 1:5 rwm",
                "c 1:7 rwm",
                "c 1:8 rwm",
                "c 1:9 rwm",
                "c 5:0 rwm",
                "c 5:1 rwm",
                "c 5:2 rwm",
                "c 136:* rwm",
                "c 10:229 rwm",
                "c 10:200 rwm"
            ]
        );
        assert!(default_devices().iter().all(|r| r.allow));
    }
}
