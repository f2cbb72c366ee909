use daemoneye_ipc::{ipc_service, Status};

#[ipc_service]
pub trait Probe {
    const async fn constant(&self) -> Result<(), Status>;
    async unsafe fn not_safe(&self) -> Result<(), Status>;
    async extern "C" fn foreign(&self) -> Result<(), Status>;
    async fn variadic(&self, _: ...) -> Result<(), Status>;
}

fn main() {}
