use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe<M> {
    async fn check(&self) -> Result<(), daemoneye_ipc::Status>;
}

// The trait is still there as written: an impl of it adds no error.
struct Impl;

impl Probe<u32> for Impl {
    async fn check(&self) -> Result<(), daemoneye_ipc::Status> {
        Ok(())
    }
}

fn main() {}
