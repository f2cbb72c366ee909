//! `#[ipc_service]`: turns a trait into a typed local RPC service. Users name it
//! `daemoneye_ipc::ipc_service`.
//!
//! ```
//! use daemoneye_ipc::{ipc_service, Status};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! pub struct Ping {
//!     #[prost(string, tag = "1")]
//!     pub text: String,
//! }
//!
//! /// Answers pings.
//! #[ipc_service]
//! pub trait Echo {
//!     /// Returns the request unchanged.
//!     async fn echo(&self, req: Ping) -> Result<Ping, Status>;
//!     /// Answers without a request.
//!     async fn hello(&self) -> Result<Ping, Status>;
//! }
//!
//! struct Service;
//!
//! impl Echo for Service {
//!     async fn echo(&self, req: Ping) -> Result<Ping, Status> {
//!         Ok(req)
//!     }
//!
//!     async fn hello(&self) -> Result<Ping, Status> {
//!         Ok(Ping { text: "hello".into() })
//!     }
//! }
//!
//! let _dispatch = EchoServer::new(Service);
//! assert_eq!(EchoClient::DESCRIPTOR.name, "Echo");
//! assert_eq!(EchoClient::DESCRIPTOR.doc, "Answers pings.");
//! ```
//!
//! Methods are `async fn name(&self, request: Req) -> Result<Resp, Status>` or
//! `async fn name(&self) -> Result<Resp, Status>`, where `Req` and `Resp` are prost
//! messages. The macro keeps the trait (its methods become
//! `fn ... -> impl Future<Output = ...> + Send`, so implementors write plain `async fn`
//! and handler futures are not boxed) and generates beside it `EchoClient` (typed async
//! client), `EchoServer<T: Echo>` (server dispatch, for `Server::bind`) and
//! `EchoClient::DESCRIPTOR` (service name, methods, doc comments, contract hash).
//!
//! # Options
//!
//! | option | on | default |
//! | --- | --- | --- |
//! | [`name = "pkg.Service"`](#name--pkgservice) | the trait | the trait's name |
//! | [`descriptors = EXPR`](#descriptors--expr) | the trait | no full message schemas |
//! | [`#[ipc(id = N)]`](#ipcid--n) | a method | 1 + the previous method's id |
//! | [`#[ipc(idempotent)]`](#ipcidempotent) | a method | not retried once sent |
//! | [`#[ipc(bare)]`](#ipcbare) | one unary method | no bare frames |
//! | [a `ServerStream<Item>` argument](#streaming-a-serverstreamitem-argument) | a method | one response |
//!
//! A method takes several options in one attribute: `#[ipc(id = 10, idempotent)]`.
//!
//! ### `name = "pkg.Service"`
//!
//! The service's wire name: clients and servers compare it in the handshake, and an
//! endpoint serving several services routes by it. Not empty.
//!
//! ```
//! # use daemoneye_ipc::{ipc_service, Status};
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Ping {}
//! #[ipc_service(name = "example.Echo")]
//! pub trait Echo {
//!     async fn echo(&self, req: Ping) -> Result<Ping, Status>;
//! }
//!
//! assert_eq!(EchoClient::DESCRIPTOR.name, "example.Echo");
//! ```
//!
//! ### `descriptors = EXPR`
//!
//! The encoded protobuf `FileDescriptorSet` (a `&'static [u8]`, with source info) that
//! the messages were generated from. The service's contract
//! (`ServiceDescriptor::contract`: reflection, generated docs, snapshot checks) then
//! has every message's full schema with the `.proto` comments; without it, messages
//! derived by hand appear by name only. A crate that compiles its `.proto` files in
//! `build.rs` and writes the set to `OUT_DIR` includes it as
//! `include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"))`.
//!
//! ```
//! # use daemoneye_ipc::{ipc_service, Status};
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Ping {}
//! /// Written by `build.rs` in a real crate.
//! pub const FILE_DESCRIPTOR_SET: &[u8] = &[];
//!
//! #[ipc_service(name = "example.Echo", descriptors = FILE_DESCRIPTOR_SET)]
//! pub trait Echo {
//!     async fn echo(&self, req: Ping) -> Result<Ping, Status>;
//! }
//!
//! assert_eq!(EchoClient::DESCRIPTOR.file_descriptor_set, FILE_DESCRIPTOR_SET);
//! ```
//!
//! ### `#[ipc(id = N)]`
//!
//! Pins the method's wire id, so that reordering or inserting methods keeps the
//! contract. Ids start at 1 and are unique in the service; a method without one takes
//! 1 + the previous method's.
//!
//! ```
//! # use daemoneye_ipc::{ipc_service, Status};
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Ping {}
//! #[ipc_service]
//! pub trait Echo {
//!     async fn echo(&self, req: Ping) -> Result<Ping, Status>;
//!     #[ipc(id = 10)]
//!     async fn health(&self) -> Result<Ping, Status>;
//!     async fn after(&self) -> Result<Ping, Status>;
//! }
//!
//! let ids: Vec<u32> = EchoClient::DESCRIPTOR.methods.iter().map(|m| m.id).collect();
//! assert_eq!(ids, [1, 10, 11]);
//! ```
//!
//! ### `#[ipc(idempotent)]`
//!
//! The method is safe to run twice, so a client may retry it after the connection is
//! lost with the request sent (a request that provably never left is retried whatever
//! the method).
//!
//! ```
//! # use daemoneye_ipc::{ipc_service, Status};
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Ping {}
//! #[ipc_service]
//! pub trait Echo {
//!     #[ipc(idempotent)]
//!     async fn health(&self) -> Result<Ping, Status>;
//! }
//!
//! assert!(EchoClient::DESCRIPTOR.methods[0].idempotent);
//! ```
//!
//! ### `#[ipc(bare)]`
//!
//! The method also answers seed-era peers that send a bare request message (no
//! envelope, no handshake) and expect the bare response back. At most one method per
//! service; it takes a request and does not stream.
//!
//! ```
//! # use daemoneye_ipc::{ipc_service, Status};
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Task {}
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct TaskResult {}
//! #[ipc_service]
//! pub trait Collector {
//!     #[ipc(bare)]
//!     async fn run(&self, task: Task) -> Result<TaskResult, Status>;
//! }
//!
//! let bare = CollectorClient::DESCRIPTOR.bare_method();
//! assert_eq!(bare.map(|m| m.name), Some("run"));
//! ```
//!
//! ### Streaming: a `ServerStream<Item>` argument
//!
//! A method streams its answer when its last argument is a `ServerStream<Item>` (after
//! the request, if any) and it returns `Result<(), Status>`. The handler sends items
//! with `tx.send(item).await?`, which waits for the client's credit; the generated
//! client method returns `Result<Streaming<Item>, IpcError>`, a `futures::Stream` of
//! `Result<Item, IpcError>`, and dropping it cancels the call.
//!
//! ```
//! # use daemoneye_ipc::{ipc_service, ServerStream, Status};
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Query { #[prost(uint32, tag = "1")] pub count: u32 }
//! # #[derive(Clone, PartialEq, prost::Message)]
//! # pub struct Reading { #[prost(uint32, tag = "1")] pub value: u32 }
//! #[ipc_service]
//! pub trait Feed {
//!     /// `count` readings, as they come.
//!     async fn readings(&self, req: Query, tx: ServerStream<Reading>) -> Result<(), Status>;
//! }
//!
//! struct Sensor;
//!
//! impl Feed for Sensor {
//!     async fn readings(&self, req: Query, mut tx: ServerStream<Reading>) -> Result<(), Status> {
//!         for value in 0..req.count {
//!             tx.send(Reading { value }).await?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! assert!(FeedClient::DESCRIPTOR.methods[0].server_streaming);
//! ```
//!
//! # Rules
//!
//! Every rule is checked at once and each mistake is one compile error at the tokens
//! that break it (`valid.rs`, one function per rule): the service name is not empty;
//! the trait is neither generic nor `unsafe` and contains only methods; each method is
//! an `async fn`, not `const`, `unsafe`, `extern`, variadic or generic, takes `&self`,
//! then at most one request, then optionally one `ServerStream<Item>`, and has no
//! default body; the request, the response and stream items are owned messages, taken
//! and returned by value (not `&T`, `Cow<'a, T>`, `impl Trait`, tuples or
//! `Streaming<T>`); the return type is `Result<Response, Status>` (`Result<(), Status>`
//! for a stream); ids start at 1, are unique, and a default is left for each method;
//! at most one method is `bare`, and it takes a request and does not stream.
//!
//! When a rule is broken, the trait is still emitted, with the methods that break a rule
//! as written, and so are the client and server of the other methods: the user's `impl`
//! blocks and the code that uses the client and server add no errors of their own, so
//! the errors shown are the ones to fix.
//!
//! # Shape
//!
//! A thin entry point (this file); the trait read into a model (`ast.rs`, leniently, so
//! that one mistake never hides another); the rules (`valid.rs`), collected in one
//! context (`ctxt.rs`); code generated from the checked model, or the fallback above
//! (`expand.rs`). Compile-fail cases in `tests/ui/`.

mod ast;
mod ctxt;
mod expand;
mod valid;

use proc_macro::TokenStream;

/// Generates a client, server dispatch and descriptor for a service trait; see the
/// crate documentation.
#[proc_macro_attribute]
pub fn ipc_service(args: TokenStream, input: TokenStream) -> TokenStream {
    match syn::parse::<syn::Item>(input) {
        Ok(item) => expand::ipc_service(args.into(), item).into(),
        Err(error) => error.into_compile_error().into(),
    }
}
