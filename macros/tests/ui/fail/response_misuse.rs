use daemoneye_ipc::{ipc_service, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[ipc_service]
pub trait Probe {
    // Responses are returned by value.
    async fn by_reference(&self) -> Result<&Ping, Status>;
    // One response message.
    async fn two(&self) -> Result<(Ping, Ping), Status>;
}

fn main() {}
