//! The descriptor `#[ipc_service]` generates: names, method ids, type names, doc
//! comments, flags, lookups, and the contract fingerprint (`schema_hash`).

use daemoneye_ipc::{ipc_service, MethodDescriptor, Service, ServiceDescriptor, Status};

/// Message types, reached by path from some methods so that type names keep the path.
pub mod messages {
    /// A filter.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Filter {
        /// Name substring.
        #[prost(string, tag = "1")]
        pub name: String,
    }

    /// A list.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct List {
        /// Names.
        #[prost(string, repeated, tag = "1")]
        pub names: Vec<String>,
    }

    /// A count.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Count {
        /// How many.
        #[prost(uint64, tag = "1")]
        pub count: u64,
    }
}

use messages::{Count, Filter, List};

/// Process inventory.
///
/// Second paragraph of the service doc.
#[ipc_service]
pub trait Inventory {
    /// Lists processes matching the filter.
    ///
    ///   Indented line (kept: it may be a code block).
    ///
    async fn list(&self, request: Filter) -> Result<List, Status>;

    async fn count(&self) -> Result<Count, Status>;

    #[doc = "  Written as an attribute.  "]
    #[ipc(id = 10, idempotent)]
    async fn pinned(&self, request: messages::Filter) -> Result<messages::Count, Status>;

    /// Follows the pinned id.
    #[ipc(bare)]
    async fn after(&self, request: Filter) -> Result<List, Status>;
}

/// An implementation whose methods are never run here: descriptors are constants.
struct InventoryImpl;

impl Inventory for InventoryImpl {
    async fn list(&self, _request: Filter) -> Result<List, Status> {
        Err(Status::unimplemented("list"))
    }
    async fn count(&self) -> Result<Count, Status> {
        Err(Status::unimplemented("count"))
    }
    async fn pinned(&self, _request: Filter) -> Result<Count, Status> {
        Err(Status::unimplemented("pinned"))
    }
    async fn after(&self, _request: Filter) -> Result<List, Status> {
        Err(Status::unimplemented("after"))
    }
}

// No doc comment: the descriptor's doc is empty. Custom wire name.
#[ipc_service(name = "daemoneye.test.Custom")]
pub trait Custom {
    async fn only(&self) -> Result<Count, Status>;
}

const INVENTORY: &ServiceDescriptor = InventoryClient::DESCRIPTOR;

#[test]
fn service_name_defaults_to_the_trait_name() {
    assert_eq!(INVENTORY.name, "Inventory");
}

#[test]
fn service_name_can_be_set() {
    assert_eq!(CustomClient::DESCRIPTOR.name, "daemoneye.test.Custom");
}

#[test]
fn service_doc_is_trimmed_and_multi_line() {
    assert_eq!(
        INVENTORY.doc,
        "Process inventory.\n\nSecond paragraph of the service doc."
    );
    assert_eq!(CustomClient::DESCRIPTOR.doc, "");
}

#[test]
fn methods_in_declaration_order_with_sequential_and_pinned_ids() {
    let ids: Vec<(u32, &str)> = INVENTORY.methods.iter().map(|m| (m.id, m.name)).collect();
    assert_eq!(
        ids,
        [(1, "list"), (2, "count"), (10, "pinned"), (11, "after")]
    );
    assert_eq!(CustomClient::DESCRIPTOR.methods.len(), 1);
    assert_eq!(CustomClient::DESCRIPTOR.methods[0].id, 1);
}

#[test]
fn full_method_descriptors() {
    assert_eq!(
        INVENTORY.methods,
        [
            MethodDescriptor {
                id: 1,
                name: "list",
                request: "Filter",
                response: "List",
                doc: "Lists processes matching the filter.\n\n  Indented line (kept: it may be a code block).",
                client_streaming: false,
                server_streaming: false,
                idempotent: false,
                bare: false,
            },
            MethodDescriptor {
                id: 2,
                name: "count",
                request: "()",
                response: "Count",
                doc: "",
                client_streaming: false,
                server_streaming: false,
                idempotent: false,
                bare: false,
            },
            MethodDescriptor {
                id: 10,
                name: "pinned",
                request: "messages::Filter",
                response: "messages::Count",
                doc: "Written as an attribute.",
                client_streaming: false,
                server_streaming: false,
                idempotent: true,
                bare: false,
            },
            MethodDescriptor {
                id: 11,
                name: "after",
                request: "Filter",
                response: "List",
                doc: "Follows the pinned id.",
                client_streaming: false,
                server_streaming: false,
                idempotent: false,
                bare: true,
            },
        ]
    );
}

#[test]
fn server_descriptor_is_the_clients() {
    assert_eq!(InventoryServer::<InventoryImpl>::DESCRIPTOR, INVENTORY);
    let server = InventoryServer::new(InventoryImpl);
    assert_eq!(server.descriptor(), INVENTORY);
}

#[test]
fn lookups_by_id_and_name() {
    assert_eq!(INVENTORY.method(1).map(|m| m.name), Some("list"));
    assert_eq!(INVENTORY.method(10).map(|m| m.name), Some("pinned"));
    assert_eq!(INVENTORY.method(11).map(|m| m.name), Some("after"));
    for absent in [0, 3, 9, 12, u32::MAX] {
        assert_eq!(INVENTORY.method(absent), None, "id {absent}");
    }
    assert_eq!(INVENTORY.method_by_name("count").map(|m| m.id), Some(2));
    assert_eq!(INVENTORY.method_by_name("after").map(|m| m.id), Some(11));
    assert_eq!(INVENTORY.method_by_name("missing"), None);
    assert_eq!(
        INVENTORY.method_by_name("List"),
        None,
        "names are case-sensitive"
    );
    assert_eq!(INVENTORY.bare_method().map(|m| m.id), Some(11));
    assert_eq!(CustomClient::DESCRIPTOR.bare_method(), None);
}

/// Variants of one contract, each in its own module; all share the wire name so that
/// only the stated difference can change the hash.
mod hashed {
    use super::messages::{Count, Filter, List};
    use daemoneye_ipc::{ipc_service, ServiceDescriptor, Status};

    pub mod base {
        use super::*;
        #[ipc_service(name = "test.Hashed")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            async fn put(&self, request: Filter) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }

    /// Identical contract; docs, argument names and options outside the contract differ.
    pub mod same {
        use super::*;
        /// Documented this time.
        #[ipc_service(name = "test.Hashed")]
        pub trait Other {
            /// Gets.
            #[ipc(idempotent)]
            async fn get(&self, filter: Filter) -> Result<List, Status>;
            #[ipc(id = 2)]
            async fn put(&self, other_name: Filter) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = OtherClient::DESCRIPTOR;
    }

    pub mod service_name {
        use super::*;
        #[ipc_service(name = "test.Hashed2")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            async fn put(&self, request: Filter) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }

    pub mod method_name {
        use super::*;
        #[ipc_service(name = "test.Hashed")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            async fn store(&self, request: Filter) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }

    pub mod method_id {
        use super::*;
        #[ipc_service(name = "test.Hashed")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            #[ipc(id = 3)]
            async fn put(&self, request: Filter) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }

    pub mod request_type {
        use super::*;
        #[ipc_service(name = "test.Hashed")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            async fn put(&self, request: Count) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }

    pub mod no_request {
        use super::*;
        #[ipc_service(name = "test.Hashed")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            async fn put(&self) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }

    pub mod response_type {
        use super::*;
        #[ipc_service(name = "test.Hashed")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            async fn put(&self, request: Filter) -> Result<List, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }

    pub mod extra_method {
        use super::*;
        #[ipc_service(name = "test.Hashed")]
        pub trait Hashed {
            async fn get(&self, request: Filter) -> Result<List, Status>;
            async fn put(&self, request: Filter) -> Result<Count, Status>;
            async fn delete(&self, request: Filter) -> Result<Count, Status>;
        }
        pub const DESCRIPTOR: &ServiceDescriptor = HashedClient::DESCRIPTOR;
    }
}

/// `hashed::base`'s fingerprint: the first 8 bytes (big-endian) of
/// `sha256("service=test.Hashed\nmethod=1:get:Filter:List\nmethod=2:put:Filter:Count\n")`,
/// computed independently (`printf ... | sha256sum`). If this changes, every deployed
/// peer stops talking to new builds: change it only on purpose.
const BASE_SCHEMA_HASH: u64 = 0x688d_952d_6f57_bd7d;

#[test]
fn schema_hash_is_pinned() {
    assert_eq!(
        hashed::base::DESCRIPTOR.schema_hash,
        BASE_SCHEMA_HASH,
        "schema hash changed: {:#018x}",
        hashed::base::DESCRIPTOR.schema_hash
    );
}

#[test]
fn schema_hash_ignores_what_is_not_contract() {
    assert_eq!(
        hashed::same::DESCRIPTOR.schema_hash,
        hashed::base::DESCRIPTOR.schema_hash
    );
}

#[test]
fn schema_hash_changes_with_the_contract() {
    let base = hashed::base::DESCRIPTOR.schema_hash;
    let variants = [
        ("service name", hashed::service_name::DESCRIPTOR),
        ("method name", hashed::method_name::DESCRIPTOR),
        ("method id", hashed::method_id::DESCRIPTOR),
        ("request type", hashed::request_type::DESCRIPTOR),
        ("no request", hashed::no_request::DESCRIPTOR),
        ("response type", hashed::response_type::DESCRIPTOR),
        ("extra method", hashed::extra_method::DESCRIPTOR),
    ];
    for (what, descriptor) in variants {
        assert_ne!(
            descriptor.schema_hash, base,
            "a different {what} kept the hash"
        );
    }
    // All variants differ from each other too.
    for (i, (a, da)) in variants.iter().enumerate() {
        for (b, db) in &variants[i + 1..] {
            assert_ne!(da.schema_hash, db.schema_hash, "{a} vs {b}");
        }
    }
}
