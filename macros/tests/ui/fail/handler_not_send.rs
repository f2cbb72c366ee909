use std::rc::Rc;

use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    async fn check(&self) -> Result<(), Status>;
}

struct Impl;

impl Probe for Impl {
    async fn check(&self) -> Result<(), Status> {
        let shared = Rc::new(1u32);
        std::future::ready(()).await;
        drop(shared);
        Ok(())
    }
}

fn main() {
    let _ = ProbeServer::new(Impl);
}
