use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    const LIMIT: u32;
    type Output;
    async fn check(&self) -> Result<(), Status>;
}

fn main() {}
