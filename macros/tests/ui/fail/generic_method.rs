use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    async fn check<M>(&self, request: M) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
