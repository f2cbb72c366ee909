use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    async fn check(&self, pid: u32, path: String) -> Result<(), Status>;
}

fn main() {}
