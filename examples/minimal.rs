//! The smallest complete daemoneye-ipc service: define it, implement it, serve it, call it.
//!
//! ```text
//! cargo run --release --example minimal
//! ```

use daemoneye_ipc::{ipc_service, IpcConfig, IpcError, Server, Status};

// 1. Messages are ordinary prost messages; a private service needs no .proto file.
/// A line of text.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Text {
    #[prost(string, tag = "1")]
    pub text: String,
}

/// Some numbers.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Numbers {
    #[prost(int64, repeated, tag = "1")]
    pub values: Vec<i64>,
}

// 2. The service is a trait: each method takes one message and returns a message or a
//    `Status`. `#[ipc_service]` generates `GreeterClient` and `GreeterServer<T>`.
/// Greets people and adds numbers.
#[ipc_service(name = "example.Greeter")]
pub trait Greeter {
    /// Answers "Hello, <name>!".
    async fn greet(&self, name: Text) -> Result<Text, Status>;
    /// Answers the sum of `values`; INVALID_ARGUMENT when it overflows.
    async fn sum(&self, numbers: Numbers) -> Result<Numbers, Status>;
}

// 3. The implementation is plain Rust.
struct MyGreeter;

impl Greeter for MyGreeter {
    async fn greet(&self, name: Text) -> Result<Text, Status> {
        let text = format!("Hello, {}!", name.text);
        Ok(Text { text })
    }
    async fn sum(&self, numbers: Numbers) -> Result<Numbers, Status> {
        let total = numbers
            .values
            .iter()
            .try_fold(0i64, |a, v| a.checked_add(*v));
        let total = total.ok_or_else(|| Status::invalid_argument("sum overflows i64"))?;
        Ok(Numbers {
            values: vec![total],
        })
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // 4. Serve on an endpoint of a fresh temporary directory (removed on exit): a Unix
    //    socket inside it, or a named pipe on Windows.
    let dir = tempfile::tempdir()?;
    let config =
        IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "greeter"));
    let server = Server::bind(&config, GreeterServer::new(MyGreeter))?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));

    // 5. Connect the generated typed client and call both methods.
    let client = GreeterClient::connect(&config).await?;
    let name = Text {
        text: "DaemonEye".into(),
    };
    println!("greet -> {}", client.greet(name).await?.text);
    let numbers = Numbers {
        values: vec![40, 2],
    };
    println!("sum   -> {:?}", client.sum(numbers).await?.values);

    // A handler's `Status` arrives as `IpcError::Status`; the connection stays usable.
    let overflow = Numbers {
        values: vec![i64::MAX, 1],
    };
    match client.sum(overflow).await {
        Err(IpcError::Status(status)) => println!("sum   -> error {status}"),
        other => println!("sum   -> unexpected {other:?}"),
    }

    // 6. Shut down gracefully: calls in flight finish, the socket file is removed
    //    (a pipe just closes).
    let _ = stop.send(());
    server.await??;
    Ok(())
}
