//! Compiles `proto/daemoneye.proto` into Rust with prost-build.
//!
//! The `.proto` is parsed by `protox` (a pure-Rust protobuf compiler), so no
//! `protoc` binary is needed on the build machine.

use std::{env, error::Error, fs, path::PathBuf};

use protox::prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let include_dir = manifest_dir.join("proto");
    let proto_file = include_dir.join("daemoneye.proto");
    println!("cargo:rerun-if-changed={}", proto_file.display());

    let fds = protox::compile([&proto_file], [&include_dir])?;

    // Encoded descriptor set, exposed as `daemoneye_proto::FILE_DESCRIPTOR_SET`, with
    // source info kept: the `.proto` comments are the message and field docs that
    // service contracts, reflection and the generated reference show.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("daemoneye_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    prost_build::Config::new()
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Messages only (not enums): missing JSON fields take their proto3 defaults.
        .message_attribute(".", "#[serde(default)]")
        .compile_fds(fds)?;
    Ok(())
}
