use daemoneye_ipc::{ipc_service, Status};

#[ipc_service(foo = "x")]
pub trait Probe {
    async fn check(&self) -> Result<(), Status>;
}

fn main() {}
