//! Several services on one endpoint, and what the handshake lets through between two
//! builds of one service: a method only one side has is fine, a method whose types
//! changed is refused with a reason naming it.

use daemoneye_ipc::{ipc_service, Code, IpcConfig, IpcError, Server, Status};

/// A request/answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    /// The text.
    #[prost(string, tag = "1")]
    pub text: String,
}

/// Another message.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Number {
    /// The number.
    #[prost(uint64, tag = "1")]
    pub value: u64,
}

/// Upper-cases text.
#[ipc_service(name = "test.Upper")]
pub trait Upper {
    /// The text in upper case.
    async fn upper(&self, req: Text) -> Result<Text, Status>;
}

/// Counts characters.
#[ipc_service(name = "test.Count")]
pub trait Count {
    /// How many characters.
    async fn count(&self, req: Text) -> Result<Number, Status>;
}

/// A service nobody serves here.
#[ipc_service(name = "test.Absent")]
pub trait Absent {
    /// Never answered.
    async fn nothing(&self, req: Text) -> Result<Text, Status>;
}

struct UpperImpl;
impl Upper for UpperImpl {
    async fn upper(&self, req: Text) -> Result<Text, Status> {
        Ok(Text {
            text: req.text.to_uppercase(),
        })
    }
}

struct CountImpl;
impl Count for CountImpl {
    async fn count(&self, req: Text) -> Result<Number, Status> {
        Ok(Number {
            value: req.text.chars().count() as u64,
        })
    }
}

/// Version 1 of a service, as an older peer has it.
mod v1 {
    use super::{Number, Status, Text};

    /// Two methods.
    #[daemoneye_ipc::ipc_service(name = "test.Evolving")]
    pub trait Evolving {
        /// Echoes.
        async fn echo(&self, req: Text) -> Result<Text, Status>;
        /// Measures.
        async fn measure(&self, req: Text) -> Result<Number, Status>;
    }

    pub struct Impl;
    impl Evolving for Impl {
        async fn echo(&self, req: Text) -> Result<Text, Status> {
            Ok(req)
        }
        async fn measure(&self, req: Text) -> Result<Number, Status> {
            Ok(Number {
                value: req.text.len() as u64,
            })
        }
    }
}

/// Version 2: one method added (compatible).
mod v2_added {
    use super::{Number, Status, Text};

    /// Three methods: `reverse` is new.
    #[daemoneye_ipc::ipc_service(name = "test.Evolving")]
    pub trait Evolving {
        /// Echoes.
        async fn echo(&self, req: Text) -> Result<Text, Status>;
        /// Measures.
        async fn measure(&self, req: Text) -> Result<Number, Status>;
        /// New in version 2.
        async fn reverse(&self, req: Text) -> Result<Text, Status>;
    }
}

/// Version 2 with a changed method (incompatible).
mod v2_changed {
    use super::{Number, Status, Text};

    /// `echo` now answers a number.
    #[daemoneye_ipc::ipc_service(name = "test.Evolving")]
    pub trait Evolving {
        /// Echoes, differently.
        async fn echo(&self, req: Text) -> Result<Number, Status>;
        /// Measures.
        async fn measure(&self, req: Text) -> Result<Number, Status>;
    }
}

fn endpoint(dir: &tempfile::TempDir) -> IpcConfig {
    IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "multi"))
}

#[tokio::test]
async fn two_services_on_one_endpoint_are_both_callable_and_a_third_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint(&dir);
    let server = Server::bind(&config, UpperServer::new(UpperImpl))
        .expect("bind")
        .add_service(CountServer::new(CountImpl))
        .expect("a second service");
    assert!(server.services().starts_with(&["test.Upper", "test.Count"]));
    let again = Server::bind(
        &IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "other")),
        UpperServer::new(UpperImpl),
    )
    .expect("bind")
    .add_service(UpperServer::new(UpperImpl));
    assert!(
        matches!(
            again,
            Err(IpcError::Config {
                field: "service",
                ..
            })
        ),
        "a service cannot be added twice"
    );
    let serving = tokio::spawn(server.serve());

    let upper = UpperClient::connect(&config).await.expect("connect Upper");
    let count = CountClient::connect(&config).await.expect("connect Count");
    let text = || Text {
        text: "héllo".into(),
    };
    assert_eq!(upper.upper(text()).await.expect("upper").text, "HÉLLO");
    assert_eq!(count.count(text()).await.expect("count").value, 5);

    let error = AbsentClient::connect(&config)
        .await
        .expect_err("nobody serves test.Absent");
    let IpcError::Handshake { reason, .. } = &error else {
        panic!("expected a handshake refusal, got {error:?}");
    };
    assert!(
        reason.contains("test.Upper") && reason.contains("test.Count"),
        "the refusal names the services there: {reason}"
    );
    serving.abort();
}

#[tokio::test]
async fn a_method_only_one_side_has_does_not_break_the_handshake() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint(&dir);
    let server = Server::bind(&config, v1::EvolvingServer::new(v1::Impl)).expect("bind");
    let serving = tokio::spawn(server.serve());
    assert_ne!(
        v1::EvolvingClient::DESCRIPTOR.schema_hash,
        v2_added::EvolvingClient::DESCRIPTOR.schema_hash,
        "the contracts differ"
    );
    // A newer client (one more method) talks to an older server.
    let client = v2_added::EvolvingClient::connect(&config)
        .await
        .expect("a compatible client connects");
    let echoed = client
        .echo(Text { text: "x".into() })
        .await
        .expect("a shared method works");
    assert_eq!(echoed.text, "x");
    let error = client
        .reverse(Text { text: "x".into() })
        .await
        .expect_err("the server does not have it");
    assert!(
        matches!(&error, IpcError::Status(s) if s.code() == Code::Unimplemented),
        "{error:?}"
    );
    serving.abort();
}

#[tokio::test]
async fn a_method_whose_types_changed_is_refused_by_name() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint(&dir);
    let server = Server::bind(&config, v1::EvolvingServer::new(v1::Impl)).expect("bind");
    let serving = tokio::spawn(server.serve());
    let error = v2_changed::EvolvingClient::connect(&config)
        .await
        .expect_err("an incompatible client is refused");
    let IpcError::Handshake { reason, .. } = &error else {
        panic!("expected a handshake refusal, got {error:?}");
    };
    assert!(
        reason.contains("method echo differs") && reason.contains("Number"),
        "{reason}"
    );
    serving.abort();
}

#[tokio::test]
async fn reflection_lists_the_services_and_returns_the_compiled_in_contract() {
    use daemoneye_ipc::{envelope::pb, reflection::ReflectionClient, Contract};

    let dir = tempfile::tempdir().expect("tempdir");
    let config = endpoint(&dir);
    let server = Server::bind(&config, UpperServer::new(UpperImpl))
        .expect("bind")
        .add_service(CountServer::new(CountImpl))
        .expect("a second service");
    let serving = tokio::spawn(server.serve());

    let reflection = ReflectionClient::connect(&config)
        .await
        .expect("every endpoint serves reflection");
    let info = reflection.server_info().await.expect("server info");
    let names: Vec<&str> = info.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "test.Upper",
            "test.Count",
            "daemoneye.ipc.Reflection",
            "daemoneye.ipc.Health"
        ]
    );
    assert_eq!(
        info.protocol_version,
        daemoneye_ipc::envelope::PROTOCOL_VERSION
    );
    assert_eq!(info.crate_version, env!("CARGO_PKG_VERSION"));
    let limits = info.limits.expect("limits");
    assert_eq!(limits.max_frame_bytes as usize, config.max_frame_bytes);
    assert_eq!(limits.crc32_variant, "crc32c");
    assert_eq!(
        info.services[1].schema_hash,
        CountClient::DESCRIPTOR.schema_hash
    );

    let described = reflection
        .describe(pb::DescribeRequest {
            service: "test.Count".into(),
        })
        .await
        .expect("describe");
    let contract = Contract::from_json(&described.contract_json).expect("contract JSON");
    let compiled = CountClient::DESCRIPTOR
        .contract()
        .expect("compiled-in contract");
    assert_eq!(
        contract, compiled,
        "reflection returns the compiled-in contract"
    );
    assert_eq!(contract.methods[0].doc, "How many characters.");

    // The reflection service describes itself with full schemas from the .proto.
    let own = reflection
        .describe(pb::DescribeRequest {
            service: "daemoneye.ipc.Reflection".into(),
        })
        .await
        .expect("describe reflection");
    let own = Contract::from_json(&own.contract_json).expect("JSON");
    let info_schema = own
        .message("daemoneye.ipc.v1.ServerInfo")
        .expect("ServerInfo has a schema");
    assert!(info_schema.known);
    assert!(info_schema
        .fields
        .iter()
        .any(|f| f.name == "crate_version" && f.doc.contains("crate")));

    let missing = reflection
        .describe(pb::DescribeRequest {
            service: "test.Absent".into(),
        })
        .await
        .expect_err("not served");
    assert!(
        matches!(&missing, IpcError::Status(s) if s.code() == Code::NotFound),
        "{missing:?}"
    );
    serving.abort();
}
