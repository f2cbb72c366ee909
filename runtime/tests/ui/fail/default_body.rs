use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    async fn check(&self) -> Result<(), Status> {
        Ok(())
    }
}

fn main() {}
