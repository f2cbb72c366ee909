use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    const LIMIT: u32;
    type Output;
    async fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
