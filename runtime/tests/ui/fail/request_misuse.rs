use daemoneye_ipc::{ipc_service, Status, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[ipc_service]
pub trait Probe {
    // Requests are taken by value.
    async fn by_reference(&self, request: &Ping) -> Result<Ping, Status>;
    // Client streaming is not supported.
    async fn client_stream(&self, requests: Streaming<Ping>) -> Result<Ping, Status>;
}

fn main() {}
