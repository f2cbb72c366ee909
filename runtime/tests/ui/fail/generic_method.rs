use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    async fn check<M>(&self, request: M) -> Result<(), Status>;
}

fn main() {}
