//! Everything a normal service uses: doc comments, a custom service name, a method
//! without request, a pinned id, an impl written with plain `async fn`, and the
//! generated client, server and descriptor used from ordinary code.

use daemoneye_ipc::{ipc_service, IpcError, Server, ServerStream, Service, Status};

/// A request.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// A response.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Pong {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// Liveness checks.
#[ipc_service(name = "test.Probe")]
pub trait Probe {
    /// Echoes the text.
    async fn ping(&self, request: Ping) -> Result<Pong, Status>;
    /// Reports health; takes no request.
    #[ipc(id = 10, idempotent)]
    async fn health(&self) -> Result<Pong, Status>;
    async fn after(&self, request: Ping) -> Result<Pong, Status>;
    /// Streams pongs.
    async fn pongs(&self, request: Ping, tx: ServerStream<Pong>) -> Result<(), Status>;
    /// Streams pongs without a request.
    async fn all_pongs(&self, tx: ServerStream<Pong>) -> Result<(), Status>;
}

struct ProbeImpl;

impl Probe for ProbeImpl {
    async fn ping(&self, request: Ping) -> Result<Pong, Status> {
        Ok(Pong { text: request.text })
    }

    async fn health(&self) -> Result<Pong, Status> {
        Ok(Pong { text: "ok".into() })
    }

    async fn after(&self, _request: Ping) -> Result<Pong, Status> {
        Err(Status::unimplemented("not yet"))
    }

    async fn pongs(&self, request: Ping, mut tx: ServerStream<Pong>) -> Result<(), Status> {
        tx.send(Pong { text: request.text }).await
    }

    async fn all_pongs(&self, mut tx: ServerStream<Pong>) -> Result<(), Status> {
        for _ in 0..3 {
            tx.send(Pong::default()).await?;
        }
        Ok(())
    }
}

/// The generated client's methods have the expected signatures.
#[allow(dead_code)]
async fn use_client(client: &ProbeClient) -> Result<(), IpcError> {
    let _: Pong = client.ping(Ping { text: "hi".into() }).await?;
    let _: Pong = client.health().await?;
    let _: Pong = client.after(Ping::default()).await?;
    let _: daemoneye_ipc::Streaming<Pong> = client.pongs(Ping::default()).await?;
    let _: daemoneye_ipc::Streaming<Pong> = client.all_pongs().await?;
    Ok(())
}

/// The generated server can be bound.
#[allow(dead_code)]
fn bind(config: &daemoneye_ipc::IpcConfig) -> Result<Server<ProbeServer<ProbeImpl>>, IpcError> {
    Server::bind(config, ProbeServer::new(ProbeImpl))
}

fn assert_service<S: Service + Clone + std::fmt::Debug>(_: &S) {}

fn main() {
    let server = ProbeServer::new(ProbeImpl);
    assert_service(&server);
    let descriptor = ProbeClient::DESCRIPTOR;
    assert_eq!(descriptor.name, "test.Probe");
    assert_eq!(descriptor.doc, "Liveness checks.");
    let ids: Vec<u32> = descriptor.methods.iter().map(|m| m.id).collect();
    assert_eq!(ids, [1, 10, 11, 12, 13]);
    assert_eq!(descriptor.methods[1].request, "()");
    let streaming: Vec<bool> = descriptor.methods.iter().map(|m| m.server_streaming).collect();
    assert_eq!(streaming, [false, false, false, true, true]);
    assert_eq!(descriptor.methods[3].response, "Pong", "a stream's item type");
    assert_eq!(descriptor.methods[4].request, "()");
    assert_eq!(server.descriptor(), descriptor);
}
