//! Requests are owned messages: each misuse is one error at the request's type that
//! says what to write, and the `impl` written to match adds none.

use std::borrow::Cow;

use daemoneye_ipc::{ipc_service, Status, Streaming};

#[derive(Clone, PartialEq, prost::Message)]
pub struct Ping {
    #[prost(string, tag = "1")]
    pub text: String,
}

#[ipc_service]
pub trait Probe {
    // Requests are taken by value.
    async fn by_reference(&self, request: &Ping) -> Result<Ping, Status>;
    async fn by_cow(&self, request: Cow<'static, Ping>) -> Result<Ping, Status>;
    // One concrete type.
    async fn by_trait(&self, request: impl Into<Ping> + Send) -> Result<Ping, Status>;
    // Client streaming is not supported.
    async fn client_stream(&self, requests: Streaming<Ping>) -> Result<Ping, Status>;
}

struct Impl;

impl Probe for Impl {
    async fn by_reference(&self, request: &Ping) -> Result<Ping, Status> {
        Ok(request.clone())
    }

    async fn by_cow(&self, request: Cow<'static, Ping>) -> Result<Ping, Status> {
        Ok(request.into_owned())
    }

    async fn by_trait(&self, request: impl Into<Ping> + Send) -> Result<Ping, Status> {
        Ok(request.into())
    }

    async fn client_stream(&self, _requests: Streaming<Ping>) -> Result<Ping, Status> {
        Ok(Ping::default())
    }
}

fn main() {}
