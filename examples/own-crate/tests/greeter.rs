//! The greeter over a real socket, and its contract read from the .proto comments.

use std::path::PathBuf;

use daemoneye_ipc::{Code, IpcConfig, IpcError, Server, StreamExt};
use greeter::{CountRequest, GreeterClient, GreeterServer, HelloRequest, MyGreeter};

/// A fresh directory for the socket, removed at the end (the server creates it 0700).
struct SocketDir(PathBuf);

impl SocketDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("greeter-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }

    fn config(&self) -> IpcConfig {
        IpcConfig::with_endpoint(self.0.join("greeter.sock").to_string_lossy())
    }
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test]
async fn both_methods_over_a_real_socket() {
    let dir = SocketDir::new("calls");
    let config = dir.config();
    let server = Server::bind(&config, GreeterServer::new(MyGreeter)).unwrap();
    tokio::spawn(server.serve());
    let client = GreeterClient::connect(&config).await.unwrap();

    let hello = HelloRequest {
        name: "DaemonEye".into(),
    };
    let reply = client.say_hello(hello).await.unwrap();
    assert_eq!(reply.message, "Hello, DaemonEye!");

    // A handler's Status reaches the caller; the connection stays usable.
    match client.say_hello(HelloRequest::default()).await {
        Err(IpcError::Status(status)) => assert_eq!(status.code(), Code::InvalidArgument),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }

    // The stream: every item in order, then its end.
    let numbers: Vec<u32> = client
        .count(CountRequest { up_to: 100 })
        .await
        .unwrap()
        .map(|number| number.unwrap().value)
        .collect()
        .await;
    assert_eq!(numbers, (1..=100).collect::<Vec<u32>>());

    // A stream's error is its last item.
    let mut refused = client.count(CountRequest { up_to: 0 }).await.unwrap();
    match refused.next().await {
        Some(Err(IpcError::Status(status))) => assert_eq!(status.code(), Code::InvalidArgument),
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
    assert!(refused.next().await.is_none());
}

#[test]
fn the_contract_has_the_proto_schemas_and_comments() {
    let contract = GreeterClient::DESCRIPTOR.contract().unwrap();
    assert_eq!(contract.service, "example.greeter.v1.Greeter");
    assert_eq!(contract.doc, "Greets people and counts.");

    let say_hello = &contract.methods[0];
    assert_eq!(say_hello.name, "say_hello");
    assert_eq!(say_hello.request, "example.greeter.v1.HelloRequest");
    assert_eq!(say_hello.response, "example.greeter.v1.HelloReply");
    assert_eq!(say_hello.doc, "Answers \"Hello, <name>!\".");
    let count = &contract.methods[1];
    assert!(count.server_streaming);
    assert_eq!(count.response, "example.greeter.v1.Number");

    let request = contract.message("example.greeter.v1.HelloRequest").unwrap();
    assert!(request.known, "the schema comes from the .proto file");
    assert_eq!(request.doc, "Whom to greet.");
    assert_eq!(request.fields[0].name, "name");
    assert_eq!(request.fields[0].type_name, "string");
    assert_eq!(
        request.fields[0].doc,
        "The name to greet, e.g. \"DaemonEye\"."
    );
    let up_to = &contract
        .message("example.greeter.v1.CountRequest")
        .unwrap()
        .fields[0];
    assert_eq!(up_to.doc, "The last number sent (1 to 1000).");
}
