use daemoneye_ipc::{ipc_service, ServerStream, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[ipc_service]
pub trait Feed {
    // The stream's items go through `tx`: the method returns `Result<(), Status>`.
    async fn returns_value(&self, request: Ping, tx: ServerStream<Ping>) -> Result<Ping, Status>;
    // The stream comes last.
    async fn stream_first(&self, tx: ServerStream<Ping>, request: Ping) -> Result<(), Status>;
    // One item type.
    async fn no_item(&self, request: Ping, tx: ServerStream) -> Result<(), Status>;
    // One stream, of owned items.
    async fn two_streams(&self, tx: ServerStream<Ping>, again: ServerStream<Ping>) -> Result<(), Status>;
    async fn borrowed_items(&self, tx: ServerStream<&'static Ping>) -> Result<(), Status>;
    // Bare peers expect one answer.
    #[ipc(bare)]
    async fn bare_stream(&self, request: Ping, tx: ServerStream<Ping>) -> Result<(), Status>;
}

fn main() {}
