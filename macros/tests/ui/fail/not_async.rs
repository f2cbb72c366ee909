use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
