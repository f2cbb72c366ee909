//! The checked-in code and descriptor set of the wire envelope (`src/generated/`) match
//! `proto/daemoneye_ipc.proto`: regenerated here with the same protox + prost-build
//! settings the crate once used in a build script (kept out of the build so that users
//! compile no protobuf compiler). Refresh them with
//! `DAEMONEYE_UPDATE_CODEGEN=1 cargo test -p daemoneye-ipc --test envelope_codegen`.

use std::path::PathBuf;

#[test]
fn generated_envelope_code_matches_the_proto() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let proto_dir = root.join("proto");
    let fds = protox::compile([proto_dir.join("daemoneye_ipc.proto")], [&proto_dir])
        .expect("the envelope .proto compiles");
    let out = tempfile::tempdir().expect("tempdir");
    prost_build::Config::new()
        .bytes(["."])
        .out_dir(out.path())
        .compile_fds(fds.clone())
        .expect("prost-build generates the code");
    let fresh_code =
        std::fs::read_to_string(out.path().join("daemoneye.ipc.v1.rs")).expect("generated code");
    let fresh_fds = prost::Message::encode_to_vec(&fds);

    let generated = root.join("src/generated");
    let code_path = generated.join("daemoneye.ipc.v1.rs");
    let fds_path = generated.join("daemoneye_ipc.fds");
    if std::env::var_os("DAEMONEYE_UPDATE_CODEGEN").is_some() {
        std::fs::write(&code_path, &fresh_code).expect("write the code");
        std::fs::write(&fds_path, &fresh_fds).expect("write the descriptor set");
        return;
    }
    let code = std::fs::read_to_string(&code_path).unwrap_or_default();
    let set = std::fs::read(&fds_path).unwrap_or_default();
    assert!(
        code == fresh_code && set == fresh_fds,
        "src/generated/ is out of date with proto/daemoneye_ipc.proto; refresh it with\n    \
         DAEMONEYE_UPDATE_CODEGEN=1 cargo test -p daemoneye-ipc --test envelope_codegen"
    );
}
