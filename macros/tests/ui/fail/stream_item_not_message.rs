use daemoneye_ipc::{ipc_service, ServerStream, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// Not a prost message.
pub struct Reading(pub u32);

#[ipc_service]
pub trait Feed {
    async fn numbers(&self, request: Ping, tx: ServerStream<Reading>) -> Result<(), Status>;
}

fn main() {}
