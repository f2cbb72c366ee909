use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    async fn check(&mut self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
