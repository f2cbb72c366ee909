use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    async fn check() -> Result<(), Status>;
    async fn check_request(request: u32) -> Result<(), Status>;
}

fn main() {}
