//! A greeter service in its own crate: messages from `proto/greeter.proto`, the
//! service as a trait, its implementation.

use daemoneye_ipc::{ipc_service, ServerStream, Status};

/// The messages generated from `proto/greeter.proto` (package `example.greeter.v1`).
pub mod pb {
    daemoneye_ipc::include_proto!("example.greeter.v1");
}
pub use pb::{CountRequest, HelloReply, HelloRequest, Number};

/// The descriptor set of `proto/greeter.proto`, comments included: the service's
/// contract (`GreeterClient::DESCRIPTOR.contract()`) gets every message's schema from it.
pub const FILE_DESCRIPTOR_SET: &[u8] = daemoneye_ipc::include_file_descriptor_set!();

/// Greets people and counts.
#[ipc_service(name = "example.greeter.v1.Greeter", descriptors = FILE_DESCRIPTOR_SET)]
pub trait Greeter {
    /// Answers "Hello, <name>!".
    async fn say_hello(&self, req: HelloRequest) -> Result<HelloReply, Status>;
    /// Sends 1, 2, ... up to `up_to`, one number per item.
    async fn count(&self, req: CountRequest, tx: ServerStream<Number>) -> Result<(), Status>;
}

/// The implementation: plain Rust.
pub struct MyGreeter;

impl Greeter for MyGreeter {
    async fn say_hello(&self, req: HelloRequest) -> Result<HelloReply, Status> {
        if req.name.is_empty() {
            return Err(Status::invalid_argument("name is empty"));
        }
        Ok(HelloReply {
            message: format!("Hello, {}!", req.name),
        })
    }

    async fn count(&self, req: CountRequest, mut tx: ServerStream<Number>) -> Result<(), Status> {
        if !(1..=1000).contains(&req.up_to) {
            return Err(Status::invalid_argument("up_to must be 1 to 1000"));
        }
        for value in 1..=req.up_to {
            tx.send(Number { value }).await?; // waits while the client grants no credit
        }
        Ok(())
    }
}
