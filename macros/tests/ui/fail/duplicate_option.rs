use daemoneye_ipc::{ipc_service, Status};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Msg {
    #[prost(uint32, tag = "1")]
    pub value: u32,
}

#[ipc_service]
pub trait Repeats {
    #[ipc(id = 5, id = 6)]
    async fn twice(&self, req: Msg) -> Result<Msg, Status>;
    #[ipc(idempotent)]
    #[ipc(idempotent)]
    async fn again(&self, req: Msg) -> Result<Msg, Status>;
}

fn main() {}
