use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    #[ipc(bare)]
    async fn first(&self, request: u32) -> Result<(), daemoneye_ipc::Status>;
    #[ipc(bare)]
    async fn second(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
