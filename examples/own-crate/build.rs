fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Rust messages and the descriptor set (with the comments) into OUT_DIR; no protoc.
    daemoneye_ipc_build::compile_protos(&["proto/greeter.proto"], &["proto"])?;
    Ok(())
}
