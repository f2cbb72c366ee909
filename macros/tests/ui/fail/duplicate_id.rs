use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    #[ipc(id = 3)]
    async fn first(&self) -> Result<(), daemoneye_ipc::Status>;
    async fn second(&self) -> Result<(), daemoneye_ipc::Status>;
    #[ipc(id = 3)]
    async fn third(&self) -> Result<(), daemoneye_ipc::Status>;
    // Takes 4 by default: clashes with `second`.
    #[ipc(id = 4)]
    async fn fourth(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
