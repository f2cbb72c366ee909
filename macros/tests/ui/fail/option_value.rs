use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    #[ipc(id = "3")]
    async fn text(&self) -> Result<(), daemoneye_ipc::Status>;
    #[ipc(id = 4294967296)]
    async fn too_large(&self) -> Result<(), daemoneye_ipc::Status>;
    // Its default id follows an unreadable one: no error of its own.
    async fn after(&self) -> Result<(), daemoneye_ipc::Status>;
}

fn main() {}
