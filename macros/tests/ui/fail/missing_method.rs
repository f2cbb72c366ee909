//! An `impl` without one of the trait's methods: rustc's note points at the method in
//! the trait, not at the `#[ipc_service]` line.

use daemoneye_ipc::{ipc_service, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[ipc_service]
pub trait Probe {
    /// Echoes.
    async fn ping(&self, request: Ping) -> Result<Ping, Status>;
    /// Reports health.
    #[ipc(idempotent)]
    async fn health(&self) -> Result<Ping, Status>;
}

struct Impl;

impl Probe for Impl {
    async fn ping(&self, request: Ping) -> Result<Ping, Status> {
        Ok(request)
    }
}

fn main() {}
