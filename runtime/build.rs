//! Compiles the wire envelope (`proto/daemoneye_ipc.proto`) with protox, a pure-Rust
//! protobuf compiler, so building needs no `protoc` on the machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("proto");
    let file = dir.join("daemoneye_ipc.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&dir])?;
    // The descriptor set, comments included, for the built-in reflection service's
    // own schema (`envelope::FILE_DESCRIPTOR_SET`).
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("daemoneye_ipc.fds"),
        prost::Message::encode_to_vec(&fds),
    )?;
    prost_build::Config::new().bytes(["."]).compile_fds(fds)?;
    Ok(())
}
