use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    async fn check(&self) -> Result<(), String>;
}

fn main() {}
