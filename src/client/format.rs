//! Pure helpers of the client: container resolution, enum names, tables, JSON shapes and exit
//! statuses. Nothing here touches a socket or a terminal, so all of it is unit-tested.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::protocol::pb::{
    ContainerState, ContainerStatus, ContainerTokenType, ContainerTrust, ContainerType, CryptfsMode,
    DaemonToController, GuestOsConfig,
    daemon_to_controller::{Code, Response},
};

/// Finds the container `arg` names: a status whose UUID equals `arg` (compared as parsed UUIDs, so
/// case and the dashless form do not matter) wins; otherwise the first status, in the daemon's
/// (creation) order, whose name equals `arg`.
pub fn resolve_container<'a>(statuses: &'a [ContainerStatus], arg: &str) -> Option<&'a ContainerStatus> {
    if let Ok(wanted) = Uuid::parse_str(arg)
        && let Some(hit) = statuses
            .iter()
            .find(|s| Uuid::parse_str(&s.uuid).is_ok_and(|u| u == wanted))
    {
        return Some(hit);
    }
    statuses.iter().find(|s| s.name == arg)
}

/// Formats an uptime in seconds for humans: `42s`, `3m05s`, `2h01m`, `1d02h`; `-` for 0.
pub fn format_uptime(secs: u64) -> String {
    const MIN: u64 = 60;
    const HOUR: u64 = 60 * MIN;
    const DAY: u64 = 24 * HOUR;
    match secs {
        0 => "-".to_owned(),
        s if s < MIN => format!("{s}s"),
        s if s < HOUR => format!("{}m{:02}s", s / MIN, s % MIN),
        s if s < DAY => format!("{}h{:02}m", s / HOUR, (s % HOUR) / MIN),
        s => format!("{}d{:02}h", s / DAY, (s % DAY) / HOUR),
    }
}

macro_rules! enum_name_fn {
    ($(#[$doc:meta])* $fn:ident, $ty:ty) => {
        $(#[$doc])*
        pub fn $fn(value: i32) -> String {
            <$ty>::try_from(value).map_or_else(|_| value.to_string(), |v| v.as_str_name().to_owned())
        }
    };
}

enum_name_fn!(
    /// Wire name of a container state (`RUNNING`), or the number if unknown.
    state_name,
    ContainerState
);
enum_name_fn!(
    /// Wire name of a token type (`SOFT`), or the number if unknown.
    token_type_name,
    ContainerTokenType
);
enum_name_fn!(
    /// Wire name of a container type (`CONTAINER`), or the number if unknown.
    container_type_name,
    ContainerType
);
enum_name_fn!(
    /// Wire name of a trust level (`SIGNED`), or the number if unknown.
    trust_name,
    ContainerTrust
);
enum_name_fn!(
    /// Wire name of a cryptfs mode (`ENCRYPT_ONLY`), or the number if unknown.
    cryptfs_name,
    CryptfsMode
);
enum_name_fn!(
    /// Wire name of a reply code (`CONTAINER_STATUS`), or the number if unknown.
    code_name,
    Code
);
enum_name_fn!(
    /// Wire name of a response (`CMD_OK`), or the number if unknown.
    response_name,
    Response
);

/// What a reply says in one word: its `response` name for a `RESPONSE`, else its code name.
pub fn reply_name(reply: &DaemonToController) -> String {
    match (Code::try_from(reply.code), reply.response) {
        (Ok(Code::Response), Some(r)) => response_name(r),
        _ => code_name(reply.code),
    }
}

/// Renders rows as columns separated by two spaces, each as wide as its widest cell; the last
/// column is not padded, so no line has trailing blanks.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                out.push_str(cell);
            } else {
                let pad = widths
                    .get(i)
                    .copied()
                    .unwrap_or(0)
                    .saturating_sub(cell.chars().count());
                out.push_str(cell);
                out.push_str(&" ".repeat(pad + 2));
            }
        }
        // Empty trailing cells leave padding behind.
        out.truncate(out.trim_end_matches(' ').len());
        out.push('\n');
    }
    out
}

/// The `list` table: a header, then one line per container (NAME UUID STATE GUESTOS UPTIME).
pub fn list_table(statuses: &[ContainerStatus]) -> String {
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            vec![
                one_line(&s.name),
                s.uuid.clone(),
                state_name(s.state),
                one_line(&s.guestos),
                format_uptime(s.uptime),
            ]
        })
        .collect();
    table(&["NAME", "UUID", "STATE", "GUESTOS", "UPTIME"], &rows)
}

/// The `list_guestos` table: a header, then one line per installed version.
pub fn guestos_table(configs: &[GuestOsConfig]) -> String {
    let rows: Vec<Vec<String>> = configs
        .iter()
        .map(|g| {
            vec![
                one_line(&g.name),
                g.version.to_string(),
                one_line(&g.hardware),
                one_line(&g.description.en),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "HARDWARE", "DESCRIPTION"], &rows)
}

/// Keeps a table cell on one line (a name with a newline must not add a line to `list`).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// A container status as JSON, enums as their wire names, extension fields `null` when absent.
pub fn status_json(s: &ContainerStatus) -> Value {
    json!({
        "name": s.name,
        "uuid": s.uuid,
        "state": state_name(s.state),
        "guestos": s.guestos,
        "uptime": s.uptime,
        "created": s.created,
        "type": container_type_name(s.r#type),
        "trust_level": trust_name(s.trust_level),
        "cryptfs_mode": cryptfs_name(s.cryptfs_mode),
        "token_type": s.token_type.map(token_type_name),
        "pid": s.pid,
        "restart_count": s.restart_count,
        "update_pending": s.update_pending,
        "memory_bytes": s.memory_bytes,
        "cpu_usec": s.cpu_usec,
        "pids": s.pids,
        "color": s.color,
    })
}

/// The `list --json` document.
pub fn list_json(statuses: &[ContainerStatus]) -> Value {
    json!({ "containers": statuses.iter().map(status_json).collect::<Vec<_>>() })
}

/// `key: value` lines of a JSON object (for `device_stats`).
pub fn key_value_lines(object: &Value) -> String {
    let mut out = String::new();
    if let Value::Object(map) = object {
        for (k, v) in map {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{k}: {v}\n"));
        }
    }
    out
}

/// How `run` ends, from `EXEC_END`'s `exec_end_reason`: the decimal exit status the daemon sends
/// (`128+N` for signal N). An absent or empty reason (upstream's daemon) counts as 0; `None` means
/// the reason cannot be read as a status.
pub fn exec_exit_status(reason: Option<&str>) -> Option<u8> {
    let reason = reason.map(str::trim).unwrap_or("");
    if reason.is_empty() {
        return Some(0);
    }
    reason.parse::<u8>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, uuid: &str) -> ContainerStatus {
        ContainerStatus {
            uuid: uuid.into(),
            name: name.into(),
            r#type: ContainerType::Container as i32,
            state: ContainerState::Stopped as i32,
            guestos: "busybox".into(),
            trust_level: ContainerTrust::Unsigned as i32,
            cryptfs_mode: CryptfsMode::NotImplemented as i32,
            ..Default::default()
        }
    }

    const U1: &str = "11111111-2222-3333-4444-555555555555";
    const U2: &str = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";

    #[test]
    fn uuid_wins_over_an_earlier_container_named_like_it() {
        let list = vec![status(U2, U1), status("b", U2)];
        assert_eq!(resolve_container(&list, U2).unwrap().name, "b");
        // Case and the dashless form do not matter for UUIDs.
        assert_eq!(resolve_container(&list, &U2.to_uppercase()).unwrap().name, "b");
        assert_eq!(resolve_container(&list, &U2.replace('-', "")).unwrap().name, "b");
    }

    #[test]
    fn a_uuid_shaped_name_is_found_when_no_uuid_matches() {
        let list = vec![status(U2, U1)];
        assert_eq!(resolve_container(&list, U2).unwrap().uuid, U1);
    }

    #[test]
    fn first_name_match_in_order_wins() {
        let list = vec![
            status("x", U1),
            status("a", U2),
            status("a", "bbbbbbbb-0000-0000-0000-000000000000"),
        ];
        assert_eq!(resolve_container(&list, "a").unwrap().uuid, U2);
        assert!(resolve_container(&list, "A").is_none());
        assert!(resolve_container(&list, "nope").is_none());
        assert!(resolve_container(&[], "a").is_none());
    }

    #[test]
    fn uptime_is_human() {
        assert_eq!(format_uptime(0), "-");
        assert_eq!(format_uptime(42), "42s");
        assert_eq!(format_uptime(60), "1m00s");
        assert_eq!(format_uptime(185), "3m05s");
        assert_eq!(format_uptime(2 * 3600 + 61), "2h01m");
        assert_eq!(format_uptime(86400 + 2 * 3600 + 59), "1d02h");
        assert_eq!(format_uptime(400 * 86400), "400d00h");
    }

    #[test]
    fn list_table_has_a_header_and_one_aligned_line_per_container() {
        let mut a = status("alpha", U1);
        a.state = ContainerState::Running as i32;
        a.uptime = 42;
        let mut b = status("b\nc", U2);
        b.state = ContainerState::Shutdown as i32;
        let text = list_table(&[a, b]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert_eq!(
            lines[0],
            format!("NAME   UUID{}  STATE     GUESTOS  UPTIME", " ".repeat(32))
        );
        assert_eq!(lines[1], format!("alpha  {U1}  RUNNING   busybox  42s"));
        assert_eq!(lines[2], format!("b c    {U2}  SHUTDOWN  busybox  -"));
        assert!(text.lines().all(|l| !l.ends_with(' ')));
        assert_eq!(list_table(&[]), "NAME  UUID  STATE  GUESTOS  UPTIME\n");
    }

    #[test]
    fn status_json_uses_enum_names_and_extension_fields() {
        let mut s = status("a", U1);
        s.token_type = Some(ContainerTokenType::Soft as i32);
        s.pid = Some(42);
        s.memory_bytes = Some(4096);
        s.cpu_usec = Some(1_500_000);
        let v = list_json(&[s]);
        let c = &v["containers"][0];
        assert_eq!(c["state"], "STOPPED");
        assert_eq!(c["token_type"], "SOFT");
        assert_eq!(c["type"], "CONTAINER");
        assert_eq!(c["trust_level"], "UNSIGNED");
        assert_eq!(c["cryptfs_mode"], "NOT_IMPLEMENTED");
        assert_eq!(c["pid"], 42);
        assert!(c["restart_count"].is_null());
        assert_eq!(c["memory_bytes"], 4096);
        assert_eq!(c["cpu_usec"], 1_500_000);
        assert!(c["pids"].is_null() && c["color"].is_null());
    }

    #[test]
    fn exec_status_is_read_from_the_end_reason() {
        assert_eq!(exec_exit_status(None), Some(0));
        assert_eq!(exec_exit_status(Some("3")), Some(3));
        assert_eq!(exec_exit_status(Some("137\n")), Some(137));
        assert_eq!(exec_exit_status(Some("127")), Some(127));
        assert_eq!(exec_exit_status(Some("killed")), None);
        assert_eq!(exec_exit_status(Some("300")), None);
    }

    #[test]
    fn reply_names() {
        let r = DaemonToController {
            code: Code::Response as i32,
            response: Some(Response::CmdFailed as i32),
            ..Default::default()
        };
        assert_eq!(reply_name(&r), "CMD_FAILED");
        let r = DaemonToController {
            code: Code::ContainerStatus as i32,
            ..Default::default()
        };
        assert_eq!(reply_name(&r), "CONTAINER_STATUS");
        assert_eq!(state_name(99), "99");
    }
}

/// The current time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    utc(d.as_secs(), d.subsec_millis())
}

/// Formats Unix time as `YYYY-MM-DDTHH:MM:SS.mmmZ` (civil-from-days, proleptic Gregorian).
pub fn utc(secs: u64, millis: u32) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod time_tests {
    #[test]
    fn utc_formatting() {
        assert_eq!(super::utc(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::utc(1_795_982_407, 5), "2026-11-29T20:00:07.005Z");
        assert_eq!(super::utc(951_782_400, 0), "2000-02-29T00:00:00.000Z");
    }
}

/// One interface line from cmld: `name mac state address/prefix…` (`-` for no MAC).
struct IfaceLine<'a> {
    name: &'a str,
    mac: &'a str,
    state: &'a str,
    addrs: Vec<&'a str>,
}

fn parse_iface(line: &str) -> Option<IfaceLine<'_>> {
    let mut words = line.split_whitespace();
    let (name, mac, state) = (words.next()?, words.next()?, words.next()?);
    Some(IfaceLine {
        name,
        mac,
        state,
        addrs: words.collect(),
    })
}

/// The `ifaces` table: NAME, MAC, STATE, ADDRESSES. Lines in another shape (an older daemon's
/// `ip link` output) are printed as they are.
pub fn ifaces_table(lines: &[String]) -> String {
    let parsed: Option<Vec<_>> = lines.iter().map(|l| parse_iface(l)).collect();
    match parsed {
        Some(rows) => table(
            &["NAME", "MAC", "STATE", "ADDRESSES"],
            &rows
                .iter()
                .map(|r| {
                    vec![
                        r.name.to_owned(),
                        r.mac.to_owned(),
                        r.state.to_owned(),
                        r.addrs.join(" "),
                    ]
                })
                .collect::<Vec<_>>(),
        ),
        None => lines
            .iter()
            .map(|l| format!("{}\n", l.trim_end_matches('\n')))
            .collect(),
    }
}

/// `ifaces --json`: `{"ifaces": [{"name", "mac", "state", "addresses": [..]}]}` (raw strings for
/// lines in another shape).
pub fn ifaces_json(lines: &[String]) -> serde_json::Value {
    let list: Vec<_> = lines
        .iter()
        .map(|l| match parse_iface(l) {
            Some(r) => serde_json::json!({
                "name": r.name,
                "mac": (r.mac != "-").then_some(r.mac),
                "state": r.state,
                "addresses": r.addrs,
            }),
            None => serde_json::Value::String(l.clone()),
        })
        .collect();
    serde_json::json!({ "ifaces": list })
}
