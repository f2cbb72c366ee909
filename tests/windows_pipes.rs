//! Windows named pipes: the pipe's security descriptor admits only the server's user,
//! SYSTEM and Administrators (read back from a live pipe); a second server on a name
//! another server holds is refused; a handler sees its caller's pid and user SID.
//! The Unix counterparts (socket mode 0600, a live socket never replaced, peer uid) are
//! in end_to_end.rs and semantics.rs.
#![cfg(windows)]

use std::os::windows::io::AsRawHandle;

use daemoneye_ipc::{ipc_service, IpcConfig, Server, Status};
use windows_sys::Win32::{
    Foundation::LocalFree,
    Security::{
        Authorization::{
            ConvertSecurityDescriptorToStringSecurityDescriptorW, GetSecurityInfo, SDDL_REVISION_1,
            SE_KERNEL_OBJECT,
        },
        DACL_SECURITY_INFORMATION, OWNER_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR,
    },
};

/// The caller as the handler saw it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Caller {
    #[prost(uint32, optional, tag = "1")]
    pub pid: Option<u32>,
    #[prost(string, optional, tag = "2")]
    pub sid: Option<String>,
}

/// Tells a caller who it is.
#[ipc_service(name = "test.Who")]
pub trait Who {
    /// The caller's identity, from `daemoneye_ipc::peer::caller()`.
    async fn who(&self) -> Result<Caller, Status>;
}

struct WhoImpl;

impl Who for WhoImpl {
    async fn who(&self) -> Result<Caller, Status> {
        let caller = daemoneye_ipc::peer::caller().ok_or_else(|| Status::internal("no caller"))?;
        Ok(Caller {
            pid: caller.pid,
            sid: caller.sid.map(|sid| sid.to_string()),
        })
    }
}

fn start(dir: &tempfile::TempDir) -> (IpcConfig, tokio::task::JoinHandle<()>) {
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "who"));
    assert!(
        config.endpoint_path.starts_with(r"\\.\pipe\daemoneye\"),
        "{}",
        config.endpoint_path
    );
    let server = Server::bind(&config, WhoServer::new(WhoImpl)).expect("bind");
    let serving = tokio::spawn(async move {
        let _ = server.serve().await;
    });
    (config, serving)
}

/// The owner and DACL of the pipe at `endpoint`, in SDDL, as the OS reports them to a
/// client that opened it.
fn pipe_sddl(endpoint: &str) -> String {
    let pipe = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(endpoint)
        .expect("open the pipe as a client");
    let mut descriptor: PSECURITY_DESCRIPTOR = std::ptr::null_mut();
    let info = DACL_SECURITY_INFORMATION | OWNER_SECURITY_INFORMATION;
    // SAFETY: a live handle; the OS allocates the descriptor, freed below.
    let error = unsafe {
        GetSecurityInfo(
            pipe.as_raw_handle(),
            SE_KERNEL_OBJECT,
            info,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &mut descriptor,
        )
    };
    assert_eq!(error, 0, "GetSecurityInfo");
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: a valid descriptor; the OS allocates the string, freed below.
    let done = unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            descriptor,
            SDDL_REVISION_1,
            info,
            &mut text,
            std::ptr::null_mut(),
        )
    };
    assert_ne!(
        done, 0,
        "ConvertSecurityDescriptorToStringSecurityDescriptorW"
    );
    // SAFETY: a NUL-terminated string from the OS.
    let sddl = unsafe { widestring::U16CStr::from_ptr_str(text) }.to_string_lossy();
    // SAFETY: both were LocalAlloc'd by the OS.
    unsafe {
        LocalFree(text.cast());
        LocalFree(descriptor);
    }
    sddl
}

#[tokio::test]
async fn the_pipe_admits_only_its_user_system_and_administrators() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _serving) = start(&dir);
    let client = WhoClient::connect(&config).await.expect("connect");
    let me = client.who().await.expect("who");
    let sid = me.sid.expect("the caller's SID");

    let endpoint = config.endpoint_path.clone();
    let sddl = tokio::task::spawn_blocking(move || pipe_sddl(&endpoint))
        .await
        .expect("join");
    // A protected DACL: nothing inherited, and exactly three grants.
    assert!(sddl.contains("D:P"), "{sddl}");
    let aces: Vec<&str> = sddl
        .split("D:P")
        .nth(1)
        .expect("a DACL")
        .split(['(', ')'])
        .filter(|ace| !ace.is_empty())
        .collect();
    let trustees: Vec<&str> = aces
        .iter()
        .map(|ace| ace.rsplit(';').next().expect("a trustee"))
        .collect();
    assert_eq!(trustees.len(), 3, "{sddl}");
    for trustee in [sid.as_str(), "SY", "BA"] {
        assert!(trustees.contains(&trustee), "{trustee} missing from {sddl}");
    }
    assert!(
        aces.iter().all(|ace| ace.starts_with("A;")),
        "only grants: {sddl}"
    );
}

#[tokio::test]
async fn a_second_server_on_a_served_name_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _serving) = start(&dir);
    let err = Server::bind(&config, WhoServer::new(WhoImpl)).expect_err("the name is taken");
    let text = err.to_string();
    assert!(text.contains("already running"), "{text}");
    assert!(text.contains(&config.endpoint_path), "{text}");
    // The first server still answers.
    let client = WhoClient::connect(&config).await.expect("connect");
    client.who().await.expect("who");
}

#[tokio::test]
async fn a_handler_sees_the_callers_pid_and_sid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (config, _serving) = start(&dir);
    let client = WhoClient::connect(&config).await.expect("connect");
    let me = client.who().await.expect("who");
    assert_eq!(me.pid, Some(std::process::id()));
    let sid = me.sid.expect("the caller's SID");
    assert!(sid.starts_with("S-1-"), "{sid}");

    // A policy that lists only another user refuses this one, naming the SID.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "strict"));
    let server = Server::bind(&config, WhoServer::new(WhoImpl))
        .expect("bind")
        .with_peer_policy(
            daemoneye_ipc::PeerPolicy::only_listed().allow_sid("S-1-5-21-1-2-3-4242"),
        );
    tokio::spawn(async move {
        let _ = server.serve().await;
    });
    let err = WhoClient::connect(&config).await.expect_err("refused");
    assert!(
        matches!(err, daemoneye_ipc::IpcError::PermissionDenied { .. }),
        "{err:?}"
    );

    // Listing this user's SID admits it.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "listed"));
    let server = Server::bind(&config, WhoServer::new(WhoImpl))
        .expect("bind")
        .with_peer_policy(daemoneye_ipc::PeerPolicy::only_listed().allow_sid(sid.clone()));
    tokio::spawn(async move {
        let _ = server.serve().await;
    });
    let client = WhoClient::connect(&config).await.expect("admitted by SID");
    assert_eq!(client.who().await.expect("who").sid, Some(sid));
}
