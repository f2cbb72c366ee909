use daemoneye_ipc::ipc_service;

#[ipc_service]
pub trait Probe {
    async fn count(&self) -> u64;
    async fn nothing(&self);
    async fn alias(&self) -> std::io::Result<()>;
}

fn main() {}
