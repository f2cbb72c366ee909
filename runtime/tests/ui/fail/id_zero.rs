use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    #[ipc(id = 0)]
    async fn check(&self) -> Result<(), Status>;
}

fn main() {}
