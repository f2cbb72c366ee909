//! `#[ipc_service]`: turns a trait into a typed local RPC service.
//!
//! The trait's methods must be `async fn name(&self, request: Req) -> Result<Resp, Status>`
//! (or `async fn name(&self) -> Result<Resp, Status>`), where `Req` and `Resp` are prost
//! messages. The macro keeps the trait (its methods become
//! `fn ... -> impl Future<Output = ...> + Send`, so implementors write plain `async fn`),
//! and generates beside it `FooClient` (typed async client), `FooServer<T>` (server
//! dispatch) and a service descriptor (`FooClient::DESCRIPTOR`).
//!
//! A method streams its answer when its last argument is a `ServerStream<Item>` and it
//! returns `Result<(), Status>`: `async fn watch(&self, req: Req, tx: ServerStream<Item>)
//! -> Result<(), Status>`. The handler sends items with `tx.send(item).await?` (which
//! waits for the client's credit); the generated client method returns
//! `Result<Streaming<Item>, IpcError>`, a `futures::Stream` of `Result<Item, IpcError>`.
//!
//! Options: `#[ipc_service(name = "pkg.Foo")]` sets the service name checked in the
//! handshake (default: the trait's name); on a method, `#[ipc(id = N)]` pins its wire id
//! (default: 1 + the previous method's id), `#[ipc(idempotent)]` lets clients retry it
//! after a lost connection, and `#[ipc(bare)]` (one unary method per service) also
//! answers seed-era bare request frames.
//!
//! Shape: parse the trait into a model (`ast.rs`), validate it (`valid.rs`, errors
//! collected in `ctxt.rs`), expand the model (`expand.rs`); every error points at the
//! user's own tokens.

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
