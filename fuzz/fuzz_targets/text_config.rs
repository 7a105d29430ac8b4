//! The protobuf text parser on arbitrary bytes, through every config type and through
//! `load_config`: no panic, no stack overflow, every error at a line:column inside the input, and
//! every config that loads prints to text that loads back to the same config.

#![no_main]

use cml::{
    container::{ConfigError, load_config},
    protocol::{
        pb::{ContainerConfig, DeviceConfig, GuestOsConfig},
        text::{self, TextError},
    },
};
use libfuzzer_sys::fuzz_target;

fn check_position(input: &[u8], e: &TextError) {
    let text = String::from_utf8_lossy(input);
    let lines: Vec<&str> = text.split('\n').collect();
    assert!(e.line >= 1 && e.line <= lines.len(), "{e}");
    let width = lines[e.line - 1].chars().count();
    assert!(e.column >= 1 && e.column <= width + 1, "{e}");
    assert!(e.to_string().starts_with(&format!("{}:{}: ", e.line, e.column)));
}

fn check<T: prost::Message + prost::Name + Default>(input: &[u8]) {
    if let Err(e) = text::parse::<T>(input) {
        check_position(input, &e);
    }
}

fuzz_target!(|data: &[u8]| {
    check::<ContainerConfig>(data);
    check::<GuestOsConfig>(data);
    check::<DeviceConfig>(data);
    match load_config(data) {
        Ok(cfg) => {
            let printed = text::print(&cfg);
            let again = load_config(printed.as_bytes())
                .unwrap_or_else(|e| panic!("printed config does not load: {e}\n{printed}"));
            assert_eq!(again, cfg, "{printed}");
        }
        Err(ConfigError::Text(e)) => check_position(data, &e),
        Err(ConfigError::Invalid { field, reason }) => assert!(!field.is_empty() && !reason.is_empty()),
    }
});
