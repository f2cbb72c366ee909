use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    #[ipc(id = 3)]
    async fn first(&self) -> Result<(), Status>;
    async fn second(&self) -> Result<(), Status>;
    #[ipc(id = 3)]
    async fn third(&self) -> Result<(), Status>;
    // Takes 4 by default: clashes with `second`.
    #[ipc(id = 4)]
    async fn fourth(&self) -> Result<(), Status>;
}

fn main() {}
