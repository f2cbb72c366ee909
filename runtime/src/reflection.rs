//! The built-in reflection service, `daemoneye.ipc.Reflection`, that every endpoint
//! serves beside its own services (in the spirit of gRPC server reflection): what is
//! served here, with each service's full contract, the protocol and crate versions and
//! the server's limits. `daemoneye-cli describe --endpoint EP` reads it.
//!
//! ```no_run
//! # async fn run() -> Result<(), daemoneye_ipc::IpcError> {
//! use daemoneye_ipc::{envelope::pb, reflection::ReflectionClient, IpcConfig};
//! let config = IpcConfig::with_endpoint("/run/daemoneye/procmond.sock");
//! let reflection = ReflectionClient::connect(&config).await?;
//! let info = reflection.server_info().await?;
//! for service in &info.services {
//!     let contract = reflection
//!         .describe(pb::DescribeRequest { service: service.name.clone() })
//!         .await?;
//!     println!("{}: {} bytes of contract", service.name, contract.contract_json.len());
//! }
//! # Ok(()) }
//! ```

use crate::{envelope::pb, ipc_service, IpcConfig, ServiceDescriptor, Status};

/// What every endpoint says about itself; see the [module docs](self).
#[ipc_service(
    name = "daemoneye.ipc.Reflection",
    descriptors = crate::envelope::FILE_DESCRIPTOR_SET
)]
pub trait Reflection {
    /// What this endpoint serves (every service, the built-in ones included), the
    /// protocol and crate versions, and the server's limits.
    #[ipc(id = 1, idempotent)]
    async fn server_info(&self) -> Result<pb::ServerInfo, Status>;

    /// One service's full contract: methods, every message and enum with their fields
    /// and doc comments (as `Contract` JSON), and the protobuf descriptor set.
    /// `NOT_FOUND` for a service not served here.
    #[ipc(id = 2, idempotent)]
    async fn describe(&self, request: pb::DescribeRequest) -> Result<pb::ServiceContract, Status>;
}

/// The reflection service of one server.
pub(crate) struct Served {
    pub(crate) services: Vec<&'static ServiceDescriptor>,
    pub(crate) limits: pb::Limits,
}

impl Served {
    pub(crate) fn new(services: Vec<&'static ServiceDescriptor>, config: &IpcConfig) -> Self {
        let limits = pb::Limits {
            max_frame_bytes: u32::try_from(config.max_frame_bytes).unwrap_or(u32::MAX),
            max_in_flight: u32::try_from(config.max_in_flight).unwrap_or(u32::MAX),
            max_connections: u32::try_from(config.max_connections).unwrap_or(u32::MAX),
            crc32_variant: config.crc32_variant.as_str().to_owned(),
            read_timeout_ms: config.read_timeout_ms,
            write_timeout_ms: config.write_timeout_ms,
            handler_timeout_ms: config.handler_timeout_ms,
        };
        Self { services, limits }
    }
}

impl Reflection for Served {
    async fn server_info(&self) -> Result<pb::ServerInfo, Status> {
        Ok(pb::ServerInfo {
            protocol_version: crate::handshake::PROTOCOL_VERSION,
            crate_version: env!("CARGO_PKG_VERSION").to_owned(),
            services: self
                .services
                .iter()
                .map(|service| pb::ServiceSummary {
                    name: service.name.to_owned(),
                    doc: service.doc.to_owned(),
                    schema_hash: service.schema_hash,
                    methods: u32::try_from(service.methods.len()).unwrap_or(u32::MAX),
                })
                .collect(),
            limits: Some(self.limits.clone()),
        })
    }

    async fn describe(&self, request: pb::DescribeRequest) -> Result<pb::ServiceContract, Status> {
        let Some(service) = self.services.iter().find(|s| s.name == request.service) else {
            let served: Vec<&str> = self.services.iter().map(|s| s.name).collect();
            return Err(Status::not_found(format!(
                "{:?} is not served here; served: {}",
                request.service,
                served.join(", ")
            )));
        };
        let contract = service
            .contract()
            .map_err(|error| Status::internal(format!("cannot build the contract: {error}")))?;
        let contract_json = serde_json::to_string(&contract)
            .map_err(|error| Status::internal(format!("cannot encode the contract: {error}")))?;
        Ok(pb::ServiceContract {
            contract_json,
            file_descriptor_set: crate::Bytes::from_static(service.file_descriptor_set),
            schema_hash: service.schema_hash,
        })
    }
}
