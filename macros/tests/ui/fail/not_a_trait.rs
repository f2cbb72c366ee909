use daemoneye_ipc::ipc_service;

#[ipc_service]
pub struct Probe;

fn main() {}
