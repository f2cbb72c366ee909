//! A trait with three mistakes, implemented and used as if it had none: exactly one
//! error per mistake, none in the `impl` or in the code that uses the client and server.

use daemoneye_ipc::{ipc_service, IpcConfig, IpcError, Server, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[ipc_service(name = "test.Probe")]
pub trait Probe {
    /// Right: served and callable.
    async fn ping(&self, request: Ping) -> Result<Ping, Status>;
    /// Mistake 1: a request by reference.
    async fn by_reference(&self, request: &Ping) -> Result<Ping, Status>;
    /// Mistake 2: not `async`.
    fn not_async(&self) -> Result<Ping, Status>;
    /// Mistake 3: the id of `ping`.
    #[ipc(id = 1)]
    async fn same_id(&self) -> Result<Ping, Status>;
}

struct Impl;

impl Probe for Impl {
    async fn ping(&self, request: Ping) -> Result<Ping, Status> {
        Ok(request)
    }

    async fn by_reference(&self, request: &Ping) -> Result<Ping, Status> {
        Ok(request.clone())
    }

    fn not_async(&self) -> Result<Ping, Status> {
        Ok(Ping::default())
    }

    async fn same_id(&self) -> Result<Ping, Status> {
        Ok(Ping::default())
    }
}

#[allow(dead_code)]
async fn run(config: &IpcConfig) -> Result<(), IpcError> {
    let server = Server::bind(config, ProbeServer::new(Impl))?;
    tokio::spawn(server.serve());
    let client = ProbeClient::connect(config).await?;
    let _: Ping = client.ping(Ping::default()).await?;
    Ok(())
}

fn main() {}
