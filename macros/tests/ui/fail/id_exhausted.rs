use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    #[ipc(id = 4294967295)]
    async fn last(&self) -> Result<(), daemoneye_ipc::Status>;
    // No default id is left after 4294967295.
    async fn after(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
