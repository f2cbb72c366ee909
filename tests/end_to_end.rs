//! End to end over real Unix sockets: a three-method service defined here, many calls
//! in flight on one connection, errors that name the endpoint.

use std::time::Duration;

use daemoneye_ipc::{ipc_service, IpcConfig, IpcError, Server, Status};

/// A request carrying an id and a number.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tagged {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(uint32, tag = "2")]
    pub value: u32,
}

/// A counter of calls.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Count {
    #[prost(uint64, tag = "1")]
    pub calls: u64,
}

/// A test service with three methods.
#[ipc_service(name = "test.Calc")]
pub trait Calc {
    /// Doubles `value`, keeping `id`; sleeps `value % 7` ms first so answers reorder.
    async fn double(&self, req: Tagged) -> Result<Tagged, Status>;
    /// Fails with NOT_FOUND naming the id.
    async fn fail(&self, req: Tagged) -> Result<Tagged, Status>;
    /// How many calls this server has run.
    async fn calls(&self) -> Result<Count, Status>;
}

#[derive(Default)]
struct CalcImpl {
    calls: std::sync::atomic::AtomicU64,
}

impl Calc for CalcImpl {
    async fn double(&self, req: Tagged) -> Result<Tagged, Status> {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(u64::from(req.value % 7))).await;
        Ok(Tagged {
            id: req.id,
            value: req.value * 2,
        })
    }
    async fn fail(&self, req: Tagged) -> Result<Tagged, Status> {
        Err(Status::not_found(format!("no such thing: {}", req.id)))
    }
    async fn calls(&self) -> Result<Count, Status> {
        Ok(Count {
            calls: self.calls.load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

fn start(dir: &tempfile::TempDir) -> IpcConfig {
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "calc"));
    let server = Server::bind(&config, CalcServer::new(CalcImpl::default())).expect("bind");
    tokio::spawn(server.serve());
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_on_one_connection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = start(&dir);
    let client = CalcClient::connect(&config).await.expect("connect");
    let calls = (0..200u32).map(|i| {
        let client = client.clone();
        tokio::spawn(async move {
            let id = format!("call-{i}");
            let answer = client
                .double(Tagged {
                    id: id.clone(),
                    value: i,
                })
                .await
                .expect("call");
            (id, i, answer)
        })
    });
    for call in calls.collect::<Vec<_>>() {
        let (id, i, answer) = call.await.expect("task");
        assert_eq!(answer.id, id);
        assert_eq!(answer.value, i * 2);
    }
    assert_eq!(client.calls().await.expect("calls").calls, 200);
    assert_eq!(client.client().in_flight(), 0);
}

#[tokio::test]
async fn handler_status_reaches_the_caller_and_the_connection_lives_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = start(&dir);
    let client = CalcClient::connect(&config).await.expect("connect");
    let err = client
        .fail(Tagged {
            id: "x1".into(),
            value: 0,
        })
        .await
        .expect_err("must fail");
    let status = err.status().expect("a status");
    assert_eq!(status.code(), daemoneye_ipc::Code::NotFound);
    assert_eq!(status.message(), "no such thing: x1");
    let ok = client
        .double(Tagged {
            id: "after".into(),
            value: 4,
        })
        .await
        .expect("still usable");
    assert_eq!(ok.value, 8);
}

#[tokio::test]
async fn no_server_names_the_endpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = daemoneye_ipc::config::endpoint_in(dir.path(), "nobody");
    let err = CalcClient::connect(&IpcConfig::with_endpoint(&endpoint))
        .await
        .expect_err("nothing listens");
    match &err {
        IpcError::ServerNotFound { endpoint: e } | IpcError::ConnectionRefused { endpoint: e } => {
            assert_eq!(e, &endpoint)
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert!(err.to_string().contains(&endpoint));
}

#[cfg(unix)] // file modes and socket paths; tests/windows_pipes.rs has Windows' counterpart
#[tokio::test]
async fn endpoints_are_owner_only_and_unsafe_directories_are_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory the server creates is 0700 and the socket 0600.
    let nested = dir.path().join("run").join("calc.sock");
    let config = IpcConfig::with_endpoint(nested.to_string_lossy());
    let server = Server::bind(&config, CalcServer::new(CalcImpl::default())).expect("bind");
    let mode =
        |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(nested.parent().expect("dir")), 0o700);
    assert_eq!(mode(&nested), 0o600);
    // A live socket is never replaced.
    let err = Server::bind(&config, CalcServer::new(CalcImpl::default())).expect_err("in use");
    assert!(err.to_string().contains("already running"), "{err}");
    drop(server);
    assert!(!nested.exists(), "the listener removes its socket");

    // A world-writable directory without the sticky bit is refused.
    let open_dir = dir.path().join("open");
    std::fs::create_dir(&open_dir).expect("mkdir");
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(&open_dir, "x"));
    let err = Server::bind(&config, CalcServer::new(CalcImpl::default())).expect_err("unsafe dir");
    assert!(
        matches!(
            err,
            IpcError::Config {
                field: "endpoint_path",
                ..
            }
        ),
        "{err:?}"
    );

    // An over-long path is a configuration error naming the field.
    let long = format!("/tmp/{}.sock", "x".repeat(120));
    let err = Server::bind(
        &IpcConfig::with_endpoint(long),
        CalcServer::new(CalcImpl::default()),
    )
    .expect_err("too long");
    assert!(
        matches!(
            err,
            IpcError::Config {
                field: "endpoint_path",
                ..
            }
        ),
        "{err:?}"
    );
}

#[cfg(unix)] // a pipe leaves no file behind
#[tokio::test]
async fn a_stale_socket_file_is_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stale.sock");
    // A socket file nobody listens on: bind a std listener and drop it without unlinking.
    drop(std::os::unix::net::UnixListener::bind(&path).expect("bind std"));
    assert!(path.exists());
    let config = IpcConfig::with_endpoint(path.to_string_lossy());
    let server = Server::bind(&config, CalcServer::new(CalcImpl::default())).expect("replaces it");
    tokio::spawn(server.serve());
    let client = CalcClient::connect(&config).await.expect("connect");
    assert_eq!(client.calls().await.expect("call").calls, 0);
}
