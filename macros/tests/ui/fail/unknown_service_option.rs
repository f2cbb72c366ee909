use daemoneye_ipc::ipc_service;

#[ipc_service(foo = "x")]
pub trait Probe {
    async fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
