use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    fn check(&self) -> Result<(), Status>;
}

fn main() {}
