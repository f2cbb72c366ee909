//! Service descriptors: the static description of a service that `#[ipc_service]`
//! generates, used for the handshake, introspection and generated documentation.

/// One method of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// Method id on the wire (>= 1, unique in its service, stable across releases).
    pub id: u32,
    /// The method's name as written in the trait, e.g. `"enumerate_processes"`.
    pub name: &'static str,
    /// The request message type as written in the trait, or `"()"` for none.
    pub request: &'static str,
    /// The response message type as written in the trait.
    pub response: &'static str,
    /// The method's doc comment, trimmed (empty when it has none).
    pub doc: &'static str,
    /// Whether the client sends a stream of requests (always `false` for now).
    pub client_streaming: bool,
    /// Whether the server answers with a stream (always `false` for now).
    pub server_streaming: bool,
    /// Whether a call may safely run twice (`#[ipc(idempotent)]`); only such calls are
    /// ever retried by a client.
    pub idempotent: bool,
    /// Whether this method also answers seed-era peers that send bare request frames
    /// with no envelope or handshake (`#[ipc(bare)]`; at most one per service).
    pub bare: bool,
}

/// A service: its name, methods and contract fingerprint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// Fully qualified name checked in the handshake, e.g. `"daemoneye.ProcessCollector"`.
    pub name: &'static str,
    /// The trait's doc comment, trimmed.
    pub doc: &'static str,
    /// The methods, in declaration order.
    pub methods: &'static [MethodDescriptor],
    /// Fingerprint of the contract: the first 8 bytes (big-endian) of the SHA-256 of the
    /// service name and each method's id, name, request and response message names
    /// (the last path segment of each type, so `a::Msg` and `Msg` are the same) and
    /// streaming flag. Equal fingerprints are accepted at once in the handshake;
    /// different ones are compared method by method (see [`crate::handshake`]).
    pub schema_hash: u64,
    /// The encoded protobuf `FileDescriptorSet` (with comments) the service's messages
    /// were generated from, given with `#[ipc_service(descriptors = PATH)]`; empty when
    /// the messages were derived by hand. Full message schemas come from it.
    pub file_descriptor_set: &'static [u8],
}

/// A message's own name: the last segment of a Rust path (`a::b::Msg`) or a protobuf
/// full name (`daemoneye.v1.Msg`), which is the protobuf message name for generated
/// types. The contract fingerprint and the handshake compare messages by it, so that
/// spelling a path differently changes nothing (the macro applies the same rule).
pub(crate) fn message_name(type_name: &str) -> &str {
    type_name.rsplit(['.', ':']).next().unwrap_or(type_name)
}

impl ServiceDescriptor {
    /// The method with wire id `id`.
    pub fn method(&self, id: u32) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.id == id)
    }

    /// The method that answers bare (seed-era) request frames, if any.
    pub fn bare_method(&self) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.bare)
    }

    /// The service's full contract: its methods with protobuf message names, and every
    /// message and enum they use, with fields and doc comments, from
    /// [`file_descriptor_set`](Self::file_descriptor_set). Messages derived by hand (no
    /// descriptor set) appear by name with `known: false` and no fields; to get their
    /// full schema, generate them from a `.proto` file and pass its descriptor set with
    /// `#[ipc_service(descriptors = ...)]`. The one structure that reflection, the
    /// generated docs, `describe` and the snapshot checks all read.
    ///
    /// # Errors
    /// [`SchemaError`](crate::schema::SchemaError) when the descriptor set does not
    /// decode or a type name is ambiguous in it.
    pub fn contract(&self) -> Result<crate::Contract, crate::schema::SchemaError> {
        let methods = self
            .methods
            .iter()
            .map(|method| crate::schema::MethodContract {
                id: method.id,
                name: method.name.to_owned(),
                request: method.request.to_owned(),
                response: method.response.to_owned(),
                server_streaming: method.server_streaming,
                idempotent: method.idempotent,
                bare: method.bare,
                doc: method.doc.to_owned(),
            })
            .collect();
        let sets: &[&[u8]] = if self.file_descriptor_set.is_empty() {
            &[]
        } else {
            std::slice::from_ref(&self.file_descriptor_set)
        };
        crate::Contract::build(self.name, self.doc, methods, sets)
    }

    /// The method named `name`.
    pub fn method_by_name(&self, name: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.name == name)
    }
}
