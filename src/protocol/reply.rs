//! Builders for `DaemonToController` replies. Every failure reply carries `error_message`.

use super::pb::{
    ContainerConfig, ContainerStatus, DaemonToController, GuestOsConfig,
    daemon_to_controller::{Code, Response},
};

/// A `RESPONSE` reply with the given code.
pub fn response(r: Response) -> DaemonToController {
    DaemonToController {
        code: Code::Response as i32,
        response: Some(r as i32),
        ..Default::default()
    }
}

/// A `RESPONSE` failure reply (`CMD_FAILED`, `CMD_UNSUPPORTED`, or a command's own code) with a reason.
pub fn failure(r: Response, message: impl Into<String>) -> DaemonToController {
    DaemonToController {
        error_message: Some(bounded(message.into())),
        ..response(r)
    }
}

/// Longest `error_message` of a failure reply. Errors quote the value they refuse, escaped: a
/// hostile config field of 14 MiB of control characters came back as a 73 MB reply, which no
/// client reads (the 64 MiB frame limit holds both ways). A longer message keeps its start and its
/// end, which name the field and the reason.
pub const MAX_ERROR_MESSAGE: usize = 64 * 1024;

fn bounded(message: String) -> String {
    if message.len() <= MAX_ERROR_MESSAGE {
        return message;
    }
    let mut head = MAX_ERROR_MESSAGE / 2;
    while !message.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = message.len() - MAX_ERROR_MESSAGE / 4;
    while !message.is_char_boundary(tail) {
        tail += 1;
    }
    format!(
        "{} … [{} bytes left out] … {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}

/// `RESPONSE: CMD_OK`.
pub fn ok() -> DaemonToController {
    response(Response::CmdOk)
}

/// `RESPONSE: CMD_FAILED` with a reason.
pub fn failed(message: impl Into<String>) -> DaemonToController {
    failure(Response::CmdFailed, message)
}

/// `RESPONSE: CMD_UNSUPPORTED` with a reason.
pub fn unsupported(message: impl Into<String>) -> DaemonToController {
    failure(Response::CmdUnsupported, message)
}

/// `CONTAINER_STATUS` with the given entries.
pub fn status(entries: Vec<ContainerStatus>) -> DaemonToController {
    DaemonToController {
        code: Code::ContainerStatus as i32,
        container_status: entries,
        ..Default::default()
    }
}

/// `CONTAINER_IFACES`: one line per interface inside the container.
pub fn ifaces(lines: Vec<String>) -> DaemonToController {
    DaemonToController {
        code: Code::ContainerIfaces as i32,
        container_ifaces: lines,
        ..Default::default()
    }
}

/// `CONTAINERS_LIST` with the given UUIDs.
pub fn container_list(uuids: Vec<String>) -> DaemonToController {
    DaemonToController {
        code: Code::ContainersList as i32,
        container_uuids: uuids,
        ..Default::default()
    }
}

/// `CONTAINER_CONFIG` with parallel config and UUID lists.
pub fn configs(entries: Vec<(String, ContainerConfig)>) -> DaemonToController {
    let (container_uuids, container_configs) = entries.into_iter().unzip();
    DaemonToController {
        code: Code::ContainerConfig as i32,
        container_uuids,
        container_configs,
        ..Default::default()
    }
}

/// `reply` with `warnings` (joined by "; ") in `warning_message`; unchanged when there are none.
pub fn with_warnings(reply: DaemonToController, warnings: &[String]) -> DaemonToController {
    if warnings.is_empty() {
        return reply;
    }
    DaemonToController {
        warning_message: Some(bounded(warnings.join("; "))),
        ..reply
    }
}

/// `GUESTOS_CONFIGS_LIST`.
pub fn guestos_list(configs: Vec<GuestOsConfig>) -> DaemonToController {
    DaemonToController {
        code: Code::GuestosConfigsList as i32,
        guestos_configs: configs,
        ..Default::default()
    }
}

/// `CONTAINER_CMLD_HANDLES_PIN`.
pub fn handles_pin(v: bool) -> DaemonToController {
    DaemonToController {
        code: Code::ContainerCmldHandlesPin as i32,
        container_cmld_handles_pin: Some(v),
        ..Default::default()
    }
}

/// `DEVICE_PROVISIONED_STATE`.
pub fn provisioned(v: bool, hosted: bool) -> DaemonToController {
    DaemonToController {
        code: Code::DeviceProvisionedState as i32,
        device_is_provisioned: Some(v),
        device_hosted: Some(hosted),
        ..Default::default()
    }
}

/// `DEVICE_CSR` with the CSR, or without it and with the reason.
pub fn csr(csr: Result<Vec<u8>, String>) -> DaemonToController {
    match csr {
        Ok(pem) => DaemonToController {
            code: Code::DeviceCsr as i32,
            device_csr: Some(pem),
            ..Default::default()
        },
        Err(e) => DaemonToController {
            code: Code::DeviceCsr as i32,
            error_message: Some(e),
            ..Default::default()
        },
    }
}

/// `DEVICE_STATS`.
pub fn device_stats(stats: crate::protocol::pb::DeviceStats) -> DaemonToController {
    DaemonToController {
        code: Code::DeviceStats as i32,
        device_stats: Some(stats),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_error_messages_keep_their_ends() {
        let msg = format!("field 'x': {} is wrong", "\u{e9}".repeat(MAX_ERROR_MESSAGE));
        let shown = failed(msg).error_message.unwrap();
        assert!(shown.len() <= MAX_ERROR_MESSAGE);
        assert!(
            shown.starts_with("field 'x': \u{e9}") && shown.ends_with("\u{e9} is wrong"),
            "{shown}"
        );
        assert!(shown.contains("bytes left out"));
        assert_eq!(failed("short").error_message.as_deref(), Some("short"));
    }
}
