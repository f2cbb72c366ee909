use daemoneye_ipc::ipc_service;

#[ipc_service(name = " ")]
pub trait Blank {
    async fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

#[ipc_service(name = Probe)]
pub trait NotAString {
    async fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

#[ipc_service(name = "test.Twice", name = "test.Again")]
pub trait Twice {
    async fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
