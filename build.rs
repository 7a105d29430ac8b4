//! Generates the protocol types with prost-build and a descriptor set for the text format, using
//! protox so that no `protoc` is needed.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/control.proto",
        "proto/container.proto",
        "proto/guestos.proto",
        "proto/device.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    let set_path = out.join("cml_descriptor.bin");
    std::fs::write(&set_path, prost::Message::encode_to_vec(&fds))?;
    prost_build::Config::new().enable_type_names().compile_fds(fds)?;
    Ok(())
}
