//! The envelope every frame carries: correlation id plus request, response, status,
//! cancel or handshake. Generated from `proto/daemoneye_ipc.proto` by prost.
//!
//! The generated code and descriptor set are checked in (`src/generated/`), so that
//! building this crate runs no protobuf compiler; the test `envelope_codegen` fails
//! when they no longer match the `.proto` and prints the command that refreshes them.

/// Protobuf types generated from `proto/daemoneye_ipc.proto` (package `daemoneye.ipc.v1`).
#[allow(missing_docs, clippy::doc_lazy_continuation)]
pub mod pb {
    include!("generated/daemoneye.ipc.v1.rs");
}

/// The encoded protobuf `FileDescriptorSet` of `proto/daemoneye_ipc.proto`, comments
/// included: the wire envelope's and the built-in services' full schema.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("generated/daemoneye_ipc.fds");

pub use pb::envelope::Body;
pub use pb::Envelope;

/// Room left in a frame for the envelope around a request's or response's payload
/// (correlation id, method id, deadline, tags and lengths), in bytes.
pub const ENVELOPE_OVERHEAD: usize = 32;

pub use crate::handshake::{HELLO_MAGIC, PROTOCOL_VERSION};

impl Envelope {
    /// An envelope with the given correlation id and body.
    pub fn new(correlation_id: u64, body: Body) -> Self {
        Self {
            correlation_id,
            body: Some(body),
        }
    }
}
