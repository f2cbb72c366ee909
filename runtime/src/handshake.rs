//! The connection handshake, both sides (seed: IPC Protocol; DESIGN: "a connection
//! opens with a handshake: protocol version, service name and schema hash, limits").
//!
//! The client's first frame is an envelope whose body is `hello` (field 15, carrying
//! [`HELLO_MAGIC`]), so that a server tells it from a seed-era peer's bare request. The
//! server answers `hello_ack` when it accepts, or a `status` (correlation id 0) saying
//! why not, and closes. What it checks, in order:
//!
//! 1. the protocol version is the same ([`PROTOCOL_VERSION`]);
//! 2. the endpoint serves the service the hello names (an endpoint may serve several;
//!    the refusal names those it serves);
//! 3. the contracts agree: equal schema hashes are accepted at once; otherwise every
//!    method the client and the server both have (by id, or by name) must have the same
//!    id, name, request and response message names and streaming flag. A method only
//!    one side has is allowed (calling it is answered `UNIMPLEMENTED`), so adding a
//!    method never breaks a running peer. Message *fields* are not compared: adding a
//!    field is compatible by protobuf's rules, and the field-level rules (a number
//!    reused with another type, a field removed without reserving its number...) are
//!    the breaking-change check's job ([`crate::compat`]), run in tests before release.
//!
//! Refusals before the handshake (busy, peer not allowed) are the same `status`
//! answer: `RESOURCE_EXHAUSTED` becomes [`IpcError::Busy`], `PERMISSION_DENIED`
//! [`IpcError::PermissionDenied`], anything else [`IpcError::Handshake`].

use bytes::Bytes;

use crate::{
    descriptor::message_name,
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
            methods: signatures(service),
        }),
    )
}

/// The handshake's view of a service's methods.
fn signatures(service: &ServiceDescriptor) -> Vec<pb::MethodSignature> {
    service
        .methods
        .iter()
        .map(|method| pb::MethodSignature {
            id: method.id,
            name: method.name.to_owned(),
            request: message_name(method.request).to_owned(),
            response: message_name(method.response).to_owned(),
            server_streaming: method.server_streaming,
        })
        .collect()
}

/// Why the client's methods and the server's cannot work together, if they cannot.
fn incompatible(client: &[pb::MethodSignature], server: &ServiceDescriptor) -> Option<String> {
    let ours = signatures(server);
    for theirs in client {
        let same_id = ours.iter().find(|m| m.id == theirs.id);
        let same_name = ours.iter().find(|m| m.name == theirs.name);
        let mine = match (same_id, same_name) {
            (None, None) => continue, // only the client has it
            (Some(mine), _) | (None, Some(mine)) => mine,
        };
        if mine != theirs {
            let show = |m: &pb::MethodSignature| {
                let stream = if m.server_streaming { "stream " } else { "" };
                format!(
                    "{} = {}({}) -> {stream}{}",
                    m.id, m.name, m.request, m.response
                )
            };
            return Some(format!(
                "method {} differs: client {}, server {}",
                theirs.name,
                show(theirs),
                show(mine)
            ));
        }
    }
    None
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
    /// Serve this service; answer with the ack.
    Accepted(&'static ServiceDescriptor, pb::HelloAck),
    /// A hello this server cannot serve (version, service or schema differ).
    Refused(Status),
    /// Not a daemoneye-ipc hello at all (perhaps a seed-era bare request).
    NotHello(Status),
}

/// Checks a client's first frame against the services this endpoint offers.
pub(crate) fn check(
    frame: Bytes,
    services: &[&'static ServiceDescriptor],
    config: &IpcConfig,
) -> Verdict {
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
    let Some(descriptor) = services.iter().copied().find(|s| s.name == hello.service) else {
        let served: Vec<&str> = services.iter().map(|s| s.name).collect();
        return Verdict::Refused(Status::failed_precondition(format!(
            "this endpoint serves {}, not {:?}",
            served.join(", "),
            hello.service
        )));
    };
    if hello.schema_hash != descriptor.schema_hash {
        let reason = if hello.methods.is_empty() {
            Some(format!(
                "client {:016x}, server {:016x} (a client that sends no method list must \
                 match exactly; rebuild one side)",
                hello.schema_hash, descriptor.schema_hash
            ))
        } else {
            incompatible(&hello.methods, descriptor)
        };
        if let Some(reason) = reason {
            return Verdict::Refused(Status::failed_precondition(format!(
                "contract mismatch for {}: {reason}",
                descriptor.name
            )));
        }
    }
    Verdict::Accepted(
        descriptor,
        pb::HelloAck {
            protocol_version: PROTOCOL_VERSION,
            service: descriptor.name.to_owned(),
            schema_hash: descriptor.schema_hash,
            max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
            max_in_flight: u32::try_from(config.max_in_flight).unwrap_or(u32::MAX),
        },
    )
}
