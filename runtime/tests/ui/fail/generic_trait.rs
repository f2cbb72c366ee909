use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe<M> {
    async fn check(&self) -> Result<(), Status>;
}

fn main() {}
