//! The connection handshake, both sides (seed: IPC Protocol; DESIGN: "a connection
//! opens with a handshake: protocol version, service name and schema hash, limits").
//!
//! The client's first frame is an envelope whose body is `hello` (field 15, carrying
//! [`HELLO_MAGIC`]), so that a server tells it from a seed-era peer's bare request. The
//! server answers `hello_ack` when the protocol version, service name and contract hash
//! all match, or a `status` (correlation id 0) saying why not, and closes. Refusals
//! before the handshake (busy, peer not allowed) are the same `status` answer:
//! `RESOURCE_EXHAUSTED` becomes [`IpcError::Busy`], `PERMISSION_DENIED`
//! [`IpcError::PermissionDenied`], anything else [`IpcError::Handshake`].

use bytes::Bytes;

use crate::{
    envelope::{pb, Body, Envelope},
    Code, IpcConfig, IpcError, ServiceDescriptor, Status,
};

/// Magic number in [`pb::Hello::magic`]: the bytes `DIPC` read as a little-endian u32.
pub const HELLO_MAGIC: u32 = u32::from_le_bytes(*b"DIPC");

/// Wire protocol version this crate speaks (the one `daemoneye_ipc.proto` describes).
pub const PROTOCOL_VERSION: u32 = 1;

/// The client's hello for `service`.
pub(crate) fn hello(config: &IpcConfig, service: &ServiceDescriptor) -> Envelope {
    Envelope::new(
        0,
        Body::Hello(pb::Hello {
            magic: HELLO_MAGIC,
            protocol_version: PROTOCOL_VERSION,
            service: service.name.to_owned(),
            schema_hash: service.schema_hash,
            max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
        }),
    )
}

/// Reads the server's answer to the hello: its `hello_ack`, or the refusal as a typed
/// error naming `endpoint`.
///
/// # Errors
/// `Busy`, `PermissionDenied` or `Handshake`, as in the module docs.
pub(crate) fn accepted(reply: Envelope, endpoint: &str) -> Result<pb::HelloAck, IpcError> {
    match reply.body {
        Some(Body::HelloAck(ack)) => Ok(ack),
        Some(Body::Status(status)) => {
            let status = Status::from_wire(status);
            let (endpoint, reason) = (endpoint.to_owned(), status.message().to_owned());
            Err(match status.code() {
                Code::ResourceExhausted => IpcError::Busy { endpoint, reason },
                Code::PermissionDenied => {
                    tracing::debug!(%reason, "server refused this peer");
                    let reason = format!("the server refused this client: {reason}");
                    IpcError::PermissionDenied { endpoint, reason }
                }
                _ => IpcError::Handshake { endpoint, reason },
            })
        }
        _ => Err(IpcError::Handshake {
            endpoint: endpoint.to_owned(),
            reason: "server did not answer the handshake".to_owned(),
        }),
    }
}

/// The server's verdict on a connection's first frame.
pub(crate) enum Verdict {
    /// Serve it; answer with this.
    Accepted(pb::HelloAck),
    /// A hello this server cannot serve (version, service or schema differ).
    Refused(Status),
    /// Not a daemoneye-ipc hello at all (perhaps a seed-era bare request).
    NotHello(Status),
}

/// Checks a client's first frame against the service this server offers.
pub(crate) fn check(frame: Bytes, descriptor: &ServiceDescriptor, config: &IpcConfig) -> Verdict {
    let hello = match <Envelope as prost::Message>::decode(frame) {
        Ok(Envelope {
            body: Some(Body::Hello(hello)),
            ..
        }) if hello.magic == HELLO_MAGIC => hello,
        _ => {
            return Verdict::NotHello(Status::failed_precondition(
                "expected a daemoneye-ipc hello as the first frame",
            ))
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        return Verdict::Refused(Status::failed_precondition(format!(
            "protocol version {} is not supported (server speaks {PROTOCOL_VERSION})",
            hello.protocol_version
        )));
    }
    if hello.service != descriptor.name {
        return Verdict::Refused(Status::failed_precondition(format!(
            "this endpoint serves {:?}, not {:?}",
            descriptor.name, hello.service
        )));
    }
    if hello.schema_hash != descriptor.schema_hash {
        return Verdict::Refused(Status::failed_precondition(format!(
            "schema mismatch for {}: client {:016x}, server {:016x} (rebuild one side)",
            descriptor.name, hello.schema_hash, descriptor.schema_hash
        )));
    }
    Verdict::Accepted(pb::HelloAck {
        protocol_version: PROTOCOL_VERSION,
        service: descriptor.name.to_owned(),
        schema_hash: descriptor.schema_hash,
        max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
        max_in_flight: u32::try_from(config.max_in_flight).unwrap_or(u32::MAX),
    })
}
