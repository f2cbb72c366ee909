use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    async fn check() -> Result<(), daemoneye_ipc::Status>;
    async fn check_request(request: u32) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
