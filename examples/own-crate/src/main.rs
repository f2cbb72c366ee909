//! Serves the greeter on a socket, then calls it through the generated client.
//!
//! ```text
//! cargo run -- /tmp/greeter/greeter.sock
//! ```

use daemoneye_ipc::{IpcConfig, Server, StreamExt};
use greeter::{CountRequest, GreeterClient, GreeterServer, HelloRequest, MyGreeter};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/greeter-example/greeter.sock".to_owned());
    let config = IpcConfig::with_endpoint(endpoint);
    let server = Server::bind(&config, GreeterServer::new(MyGreeter))?;
    tokio::spawn(server.serve()); // the socket is removed when the server is dropped

    let client = GreeterClient::connect(&config).await?;
    let hello = HelloRequest {
        name: "DaemonEye".into(),
    };
    println!("{}", client.say_hello(hello).await?.message);

    let mut numbers = client.count(CountRequest { up_to: 3 }).await?;
    while let Some(number) = numbers.next().await {
        println!("{}", number?.value);
    }
    Ok(())
}
