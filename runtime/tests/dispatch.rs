//! The generated server's dispatch, called directly through `Service` (no socket):
//! decoding, routing, encoding and error mapping.

use daemoneye_ipc::{ipc_service, Code, Service, Status};
use prost::Message;

/// A lookup request; `fail_code` > 0 makes the handler fail with that status code.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Lookup {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(int32, tag = "2")]
    pub fail_code: i32,
}

/// A lookup answer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Found {
    #[prost(uint32, tag = "1")]
    pub pid: u32,
    #[prost(string, tag = "2")]
    pub name: String,
}

#[ipc_service(name = "test.Registry")]
pub trait Registry {
    async fn lookup(&self, request: Lookup) -> Result<Found, Status>;
    async fn first(&self) -> Result<Found, Status>;
    #[ipc(id = 7, bare)]
    async fn legacy(&self, request: Lookup) -> Result<Found, Status>;
}

struct RegistryImpl;

impl Registry for RegistryImpl {
    async fn lookup(&self, request: Lookup) -> Result<Found, Status> {
        if request.fail_code != 0 {
            let code = Code::try_from(request.fail_code).unwrap_or(Code::Unknown);
            return Err(Status::new(
                code,
                format!("lookup of pid {} failed", request.pid),
            ));
        }
        Ok(found(request.pid))
    }
    async fn first(&self) -> Result<Found, Status> {
        Ok(found(1))
    }
    async fn legacy(&self, request: Lookup) -> Result<Found, Status> {
        Ok(found(request.pid + 1000))
    }
}

/// A service without a bare method.
#[ipc_service]
pub trait Plain {
    async fn ping(&self, request: Lookup) -> Result<Lookup, Status>;
}

struct PlainImpl;

impl Plain for PlainImpl {
    async fn ping(&self, request: Lookup) -> Result<Lookup, Status> {
        Ok(request)
    }
}

fn found(pid: u32) -> Found {
    Found {
        pid,
        name: format!("proc-{pid}"),
    }
}

fn server() -> RegistryServer<RegistryImpl> {
    RegistryServer::new(RegistryImpl)
}

/// Runs one call on the generated server.
async fn call(method_id: u32, payload: Vec<u8>) -> Result<Vec<u8>, Status> {
    server()
        .call(method_id, payload.into())
        .await
        .map(|bytes| bytes.to_vec())
}

fn lookup(pid: u32) -> Vec<u8> {
    Lookup { pid, fail_code: 0 }.encode_to_vec()
}

#[tokio::test]
async fn valid_request_returns_the_encoded_response() {
    let answer = call(1, lookup(42)).await.expect("lookup succeeds");
    assert_eq!(answer, found(42).encode_to_vec());
    assert_eq!(Found::decode(&answer[..]).expect("decodes"), found(42));
}

#[tokio::test]
async fn pinned_id_routes_to_its_method() {
    let answer = call(7, lookup(5)).await.expect("legacy succeeds");
    assert_eq!(Found::decode(&answer[..]).expect("decodes"), found(1005));
}

#[tokio::test]
async fn method_without_request_ignores_the_payload() {
    for payload in [Vec::new(), vec![0xff, 0xff, 0xff]] {
        let answer = call(2, payload).await.expect("first succeeds");
        assert_eq!(Found::decode(&answer[..]).expect("decodes"), found(1));
    }
}

#[tokio::test]
async fn empty_payload_is_the_default_request() {
    // Protobuf semantics: zero bytes decode to the all-defaults message.
    let answer = call(1, Vec::new()).await.expect("lookup succeeds");
    assert_eq!(Found::decode(&answer[..]).expect("decodes"), found(0));
}

#[tokio::test]
async fn unknown_method_id_is_unimplemented_and_named() {
    for id in [0, 3, 6, 8, u32::MAX] {
        let status = call(id, lookup(1)).await.expect_err("unknown id fails");
        assert_eq!(status.code(), Code::Unimplemented, "id {id}: {status}");
        assert!(
            status.message().contains(&id.to_string()),
            "message names the id {id}: {status}"
        );
        assert!(
            status.message().contains("test.Registry"),
            "message names the service: {status}"
        );
    }
}

#[tokio::test]
async fn garbage_payload_is_invalid_argument() {
    let garbage: [&[u8]; 3] = [
        // A varint that never ends.
        &[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ],
        // A length-delimited field longer than the payload.
        &[0x12, 0x40, b'a'],
        // Wire type 7 does not exist.
        &[0x0f],
    ];
    for payload in garbage {
        let status = call(1, payload.to_vec())
            .await
            .expect_err("garbage is rejected");
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{payload:?}: {status}"
        );
        assert!(
            status.message().contains("Lookup"),
            "message names the expected type: {status}"
        );
    }
}

#[tokio::test]
async fn handler_status_passes_through_unchanged() {
    for code in 1..=16 {
        let expected_code = Code::try_from(code).expect("codes 1..=16 exist");
        let request = Lookup {
            pid: 9,
            fail_code: code,
        };
        let status = call(1, request.encode_to_vec())
            .await
            .expect_err("handler fails");
        assert_eq!(
            status,
            Status::new(expected_code, "lookup of pid 9 failed"),
            "code {code}"
        );
    }
}

#[tokio::test]
async fn bare_frames_route_to_the_bare_method() {
    let answer = server().call_bare(lookup(3).into()).await;
    let answer = answer
        .expect("the service has a bare method")
        .expect("legacy succeeds");
    assert_eq!(Found::decode(&answer[..]).expect("decodes"), found(1003));

    let status = server()
        .call_bare(vec![0x0f].into())
        .await
        .expect("the service has a bare method")
        .expect_err("garbage is rejected");
    assert_eq!(status.code(), Code::InvalidArgument);

    let plain = PlainServer::new(PlainImpl);
    assert!(plain.call_bare(lookup(3).into()).await.is_none());
    // The ordinary path of a service without a bare method still works.
    let echoed = plain
        .call(1, lookup(3).into())
        .await
        .expect("ping succeeds");
    assert_eq!(echoed.to_vec(), lookup(3));
}
