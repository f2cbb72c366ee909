use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    #[ipc(bar = 1)]
    async fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
