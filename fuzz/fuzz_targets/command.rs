//! Requests to typed commands: the session's path for a raw payload (`has_command_field`, prost
//! decoding, `Command::try_from`), and structured messages built from the input so that the
//! per-command branches are reached often. Every outcome is a command or a typed error naming the
//! command; an error never echoes a field at length.

#![no_main]

use cml::protocol::{
    command::{Command, RequestError, has_command_field, wire_name},
    pb::{
        AssignInterfaceParams, ContainerStartParams, ControllerToDaemon, WindowSize,
        controller_to_daemon::Command as Wire,
    },
};
use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use prost::Message as _;

/// The longest error text a request may earn.
const MAX_ERROR: usize = 1024;

fn check(m: ControllerToDaemon) {
    let number = m.command;
    let sent = m.container_uuids.clone();
    match Command::try_from(m) {
        Ok(_) => assert!(Wire::try_from(number).is_ok()),
        Err(RequestError::UnknownCommand(n)) => {
            assert_eq!(n, number);
            assert!(Wire::try_from(n).is_err());
        }
        Err(e @ RequestError::Invalid { .. }) => {
            let RequestError::Invalid { command, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*command, wire_name(number));
            assert!(
                e.to_string().len() <= MAX_ERROR,
                "{} byte error for {sent:?}",
                e.to_string().len()
            );
        }
    }
}

fn request(u: &mut Unstructured<'_>) -> Result<ControllerToDaemon> {
    let command = if u.arbitrary()? {
        // Mostly known numbers, to get past the first check.
        i32::from(u.int_in_range(0u8..=120)?) + if u.arbitrary()? { 0 } else { 900 }
    } else {
        u.arbitrary()?
    };
    Ok(ControllerToDaemon {
        command,
        container_uuids: u.arbitrary()?,
        container_start_params: if u.arbitrary()? {
            Some(ContainerStartParams {
                key: u.arbitrary()?,
                no_switch: u.arbitrary()?,
                setup: u.arbitrary()?,
            })
        } else {
            None
        },
        assign_iface_params: if u.arbitrary()? {
            Some(AssignInterfaceParams {
                iface_name: u.arbitrary()?,
                persistent: u.arbitrary()?,
            })
        } else {
            None
        },
        container_config_file: u.arbitrary()?,
        exec_command: u.arbitrary()?,
        exec_args: u.arbitrary()?,
        exec_pty: u.arbitrary()?,
        exec_input: u.arbitrary()?,
        container_config_signature: u.arbitrary()?,
        container_config_certificate: u.arbitrary()?,
        guestos_config_file: u.arbitrary()?,
        guestos_config_signature: u.arbitrary()?,
        guestos_config_certificate: u.arbitrary()?,
        guestos_rootcert: u.arbitrary()?,
        guestos_name: u.arbitrary()?,
        device_cert: u.arbitrary()?,
        device_pin: u.arbitrary()?,
        device_newpin: u.arbitrary()?,
        dev_rule: u.arbitrary()?,
        remove_logs: u.arbitrary()?,
        system_services: u.arbitrary()?,
        exec_window: if u.arbitrary()? {
            Some(WindowSize {
                rows: u.arbitrary()?,
                cols: u.arbitrary()?,
            })
        } else {
            None
        },
        logs_tail: u.arbitrary()?,
        logs_follow: u.arbitrary()?,
    })
}

fuzz_target!(|data: &[u8]| {
    if has_command_field(data) {
        if let Ok(m) = ControllerToDaemon::decode(data) {
            check(m);
        }
    }
    if let Ok(m) = request(&mut Unstructured::new(data)) {
        check(m);
    }
});
