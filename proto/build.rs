//! Compiles `proto/daemoneye.proto` with `daemoneye-ipc-build` (protox and prost-build,
//! so no `protoc` is needed on the build machine).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    daemoneye_ipc_build::Builder::new()
        // This crate depends on `prost` itself (and re-exports it), not on the runtime.
        .prost_path("::prost")
        .prost_types_path("::prost_types")
        // Every type derives serde's traits; messages take `#[serde(default)]`.
        .serde(true)
        // `daemoneye_proto::FILE_DESCRIPTOR_SET`, with source info: the `.proto`
        // comments are the message and field docs that service contracts, reflection
        // and the generated reference show.
        .file_descriptor_set_name("daemoneye_descriptor")
        .compile(&["proto/daemoneye.proto"], &["proto"])?;
    Ok(())
}
