//! Peer identity and the policy that decides which local processes may connect
//! (seed: IPC, Security Features: "ensure processes run as same user or with
//! appropriate privileges").
//!
//! The server reads the connecting process's credentials from the OS when it accepts a
//! connection (`SO_PEERCRED` on Linux, `getpeereid`/`LOCAL_PEERCRED` on the BSDs and
//! macOS) and checks them against its [`PeerPolicy`] before reading anything else; a
//! refused peer gets a `PERMISSION_DENIED` status in place of the handshake answer
//! ([`IpcError::PermissionDenied`](crate::IpcError::PermissionDenied) on the client).
//! Handlers can ask who called them with [`caller`].
//!
//! Clients check the other direction with the same type: after connecting, and before
//! sending anything, a [`Client`](crate::Client) reads the *server's* credentials and
//! checks them against its server policy (by default [`PeerPolicy::same_user`]: the
//! client's own uid or root; see
//! [`Client::with_server_policy`](crate::Client::with_server_policy)), so that a socket
//! planted by another user is refused with
//! [`IpcError::PermissionDenied`](crate::IpcError::PermissionDenied) naming who serves it.

use std::{fmt, sync::Arc};

/// How messages name the superuser that [`PeerPolicy::same_user`] also admits.
const ROOT: &str = if cfg!(windows) {
    "SYSTEM/Administrators"
} else {
    "root"
};

/// The SID of the LocalSystem account (`NT AUTHORITY\SYSTEM`), Windows' counterpart of
/// root.
pub const SYSTEM_SID: &str = "S-1-5-18";

/// Who is on the other end of a connection, as the OS reports it at accept time.
///
/// A field is `None` where the platform does not report it: Windows has no uid or gid,
/// Unix has no SID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// Effective user id of the peer process (Unix).
    pub uid: Option<u32>,
    /// Effective group id of the peer process (Unix).
    pub gid: Option<u32>,
    /// Process id of the peer (informational: pids are reused, never authorise by it).
    pub pid: Option<u32>,
    /// The user of the peer process's access token, as a string SID (`S-1-5-21-…`;
    /// Windows). `None` also when the token could not be read.
    pub sid: Option<Arc<str>>,
    /// Whether the peer's token has `BUILTIN\Administrators` enabled, i.e. runs as an
    /// elevated administrator (Windows).
    pub administrator: Option<bool>,
}

impl fmt::Display for PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: Option<u32>| v.map_or_else(|| "?".to_owned(), |v| v.to_string());
        match &self.sid {
            Some(sid) => {
                write!(f, "sid={sid} pid={}", show(self.pid))?;
                if self.administrator == Some(true) {
                    f.write_str(" (administrator)")?;
                }
                Ok(())
            }
            None => write!(
                f,
                "uid={} gid={} pid={}",
                show(self.uid),
                show(self.gid),
                show(self.pid)
            ),
        }
    }
}

impl PeerIdentity {
    /// Reads the credentials of the peer of `stream`: on Unix from the socket
    /// (`SO_PEERCRED`, `getpeereid`); on Windows the peer's process id from the pipe
    /// (`GetNamedPipeClientProcessId` / `GetNamedPipeServerProcessId`), then its user
    /// and groups from that process's token (left `None` when the process may not be
    /// queried).
    ///
    /// # Errors
    /// The OS error when the credentials cannot be read.
    pub(crate) fn of(
        stream: &interprocess::local_socket::tokio::Stream,
    ) -> std::io::Result<PeerIdentity> {
        use interprocess::local_socket::traits::StreamCommon;
        let creds = stream.peer_creds()?;
        #[cfg(unix)]
        return Ok(PeerIdentity {
            uid: creds.euid(),
            gid: creds.egid(),
            pid: creds.pid().and_then(|pid| u32::try_from(pid).ok()),
            ..PeerIdentity::default()
        });
        #[cfg(windows)]
        {
            let pid = creds.pid();
            let token = pid.and_then(|pid| crate::windows::process_identity(pid).ok());
            Ok(PeerIdentity {
                pid,
                sid: token.as_ref().map(|t| Arc::from(t.sid.as_str())),
                administrator: token.map(|t| t.administrator),
                ..PeerIdentity::default()
            })
        }
    }

    /// This process's own identity (for connections made in memory).
    #[cfg(feature = "testing")]
    pub(crate) fn this_process() -> PeerIdentity {
        #[cfg(unix)]
        return PeerIdentity {
            uid: Some(euid()),
            // SAFETY: getegid has no preconditions and cannot fail.
            gid: Some(unsafe { libc::getegid() }),
            pid: Some(std::process::id()),
            ..PeerIdentity::default()
        };
        #[cfg(windows)]
        {
            let own = crate::windows::own_identity().ok();
            PeerIdentity {
                pid: Some(std::process::id()),
                sid: own.map(|t| Arc::from(t.sid.as_str())),
                administrator: own.map(|t| t.administrator),
                ..PeerIdentity::default()
            }
        }
    }
}

/// Which peers a server accepts, or which servers a client trusts.
///
/// The default accepts this process's own effective uid and root (uid 0). On a server
/// (`Server::with_peer_policy`) it applies to connecting clients: the owner-only socket
/// mode already keeps others out on Unix, and this check holds even if the socket's
/// mode or directory were loosened. On a client
/// ([`Client::with_server_policy`](crate::Client::with_server_policy)) it applies to the
/// process serving the endpoint, and the uids it lists may also own the socket's
/// directory and the directories above it (besides the client's user and root).
/// Allow-lists add uids and gids.
///
/// On Windows peers are told apart by the user SID of their process token: "this
/// user" is this process's token user, and "root" is SYSTEM (`S-1-5-18`) or an elevated
/// administrator (a token with `BUILTIN\Administrators` enabled), the same principals
/// the server's pipe admits ([`bind`](crate::transport::bind)). Allow-lists add SIDs
/// ([`allow_sid`](Self::allow_sid)); uid and gid lists match nothing there, and a peer
/// whose token could not be read matches only [`any`](Self::any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    allow_any: bool,
    allow_same_uid: bool,
    allow_root: bool,
    uids: Vec<u32>,
    gids: Vec<u32>,
    sids: Vec<String>,
}

impl Default for PeerPolicy {
    fn default() -> Self {
        Self::same_user()
    }
}

impl PeerPolicy {
    /// Accepts this process's effective uid and root.
    pub fn same_user() -> Self {
        Self {
            allow_any: false,
            allow_same_uid: true,
            allow_root: true,
            uids: Vec::new(),
            gids: Vec::new(),
            sids: Vec::new(),
        }
    }

    /// Accepts every peer that can open the endpoint (file permissions still apply).
    pub fn any() -> Self {
        Self {
            allow_any: true,
            ..Self::same_user()
        }
    }

    /// Accepts only the uids and gids added with [`allow_uid`](Self::allow_uid) and
    /// [`allow_gid`](Self::allow_gid) (not even this process's own uid or root).
    pub fn only_listed() -> Self {
        Self {
            allow_any: false,
            allow_same_uid: false,
            allow_root: false,
            uids: Vec::new(),
            gids: Vec::new(),
            sids: Vec::new(),
        }
    }

    /// Also accepts peers running as `uid`.
    pub fn allow_uid(mut self, uid: u32) -> Self {
        self.uids.push(uid);
        self
    }

    /// Also accepts peers whose effective group is `gid`.
    pub fn allow_gid(mut self, gid: u32) -> Self {
        self.gids.push(gid);
        self
    }

    /// Also accepts peers whose process token's user is `sid`, a string SID such as
    /// `S-1-5-21-…-1001` (Windows; matches nothing on Unix).
    pub fn allow_sid(mut self, sid: impl Into<String>) -> Self {
        self.sids.push(sid.into());
        self
    }

    /// Whether `peer` may connect to a server running as effective uid `server_uid`.
    ///
    /// # Errors
    /// Why not, for the refusal message and the log.
    pub fn check(&self, peer: &PeerIdentity, server_uid: Option<u32>) -> Result<(), String> {
        if self.admits(peer, server_uid) {
            Ok(())
        } else {
            Err(format!(
                "peer {peer} is not allowed by the server's peer policy"
            ))
        }
    }

    /// Whether a client whose effective uid is `own_uid` trusts `server`, the process
    /// serving its endpoint.
    ///
    /// # Errors
    /// Why not, naming the server's uid, gid and pid and whom the policy admits.
    pub(crate) fn check_server(
        &self,
        server: &PeerIdentity,
        own_uid: Option<u32>,
    ) -> Result<(), String> {
        if self.admits(server, own_uid) {
            Ok(())
        } else {
            Err(format!(
                "server process {server} is not trusted by this client's server policy ({})",
                self.admitted(own_uid)
            ))
        }
    }

    /// Whether the policy admits a peer with these credentials, for a process whose
    /// own effective uid is `own_uid`.
    fn admits(&self, peer: &PeerIdentity, own_uid: Option<u32>) -> bool {
        if self.allow_any {
            return true;
        }
        if let Some(sid) = peer.sid.as_deref() {
            return self.admits_sid(sid, peer.administrator == Some(true));
        }
        let gid_ok = peer.gid.is_some_and(|gid| self.gids.contains(&gid));
        peer.uid.is_some_and(|uid| self.admits_uid(uid, own_uid)) || gid_ok
    }

    /// Whether the policy admits a Windows peer running as `sid` (an elevated
    /// administrator if `administrator`), for a process running as this one does.
    fn admits_sid(&self, sid: &str, administrator: bool) -> bool {
        #[cfg(windows)]
        let same = crate::windows::own_identity().is_ok_and(|own| own.sid == sid);
        #[cfg(not(windows))]
        let same = false;
        (self.allow_same_uid && same)
            || (self.allow_root && (sid == SYSTEM_SID || administrator))
            || self.sids.iter().any(|listed| listed == sid)
    }

    /// Whether the policy admits every peer ([`any`](Self::any)).
    pub(crate) fn admits_anyone(&self) -> bool {
        self.allow_any
    }

    /// Whether the policy trusts user `uid` (gids aside), for a process whose own
    /// effective uid is `own_uid`: who may own the directories on a socket's path.
    pub(crate) fn admits_uid(&self, uid: u32, own_uid: Option<u32>) -> bool {
        self.allow_any
            || (self.allow_same_uid && Some(uid) == own_uid)
            || (self.allow_root && uid == 0)
            || self.uids.contains(&uid)
    }

    /// Who may own the directories on the path of a socket served by a peer this policy
    /// admits: this user, root, and the listed uids. This user and root could tamper
    /// with the endpoint anyway; a listed uid is a user trusted to serve it.
    #[cfg(unix)]
    pub(crate) fn directory_owners(&self) -> PeerPolicy {
        PeerPolicy {
            allow_any: self.allow_any,
            allow_same_uid: true,
            allow_root: true,
            uids: self.uids.clone(),
            gids: Vec::new(),
            sids: Vec::new(),
        }
    }

    /// Whom the policy admits, for messages: `this user (uid 1000) or root`.
    pub(crate) fn admitted(&self, own_uid: Option<u32>) -> String {
        if self.allow_any {
            return "anyone".to_owned();
        }
        let mut who = Vec::new();
        if self.allow_same_uid {
            #[cfg(windows)]
            let own_sid = crate::windows::own_identity()
                .ok()
                .map(|own| own.sid.clone());
            #[cfg(not(windows))]
            let own_sid: Option<String> = None;
            who.push(match (own_uid, own_sid) {
                (Some(uid), _) => format!("this user (uid {uid})"),
                (None, Some(sid)) => format!("this user ({sid})"),
                (None, None) => "this user".to_owned(),
            });
        }
        if self.allow_root {
            who.push(ROOT.to_owned());
        }
        who.extend(self.uids.iter().map(|uid| format!("uid {uid}")));
        who.extend(self.gids.iter().map(|gid| format!("gid {gid}")));
        who.extend(self.sids.iter().cloned());
        match who.split_last() {
            None => "nobody".to_owned(),
            Some((last, [])) => last.clone(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        }
    }
}

tokio::task_local! {
    static CALLER: PeerIdentity;
}

/// The identity of the process whose call the current handler is running, or `None`
/// outside a handler.
///
/// ```
/// # use daemoneye_ipc::Status;
/// async fn whoami() -> Result<String, Status> {
///     let caller = daemoneye_ipc::peer::caller().ok_or_else(|| Status::internal("not in a call"))?;
///     Ok(caller.to_string())
/// }
/// ```
pub fn caller() -> Option<PeerIdentity> {
    CALLER.try_with(Clone::clone).ok()
}

/// Runs `call` with `identity` as its [`caller`].
pub(crate) async fn with_caller<F: std::future::Future>(
    identity: PeerIdentity,
    call: F,
) -> F::Output {
    CALLER.scope(identity, call).await
}

/// The effective uid of this process.
#[cfg(unix)]
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The effective uid of this process, where the platform has uids.
pub(crate) fn own_uid() -> Option<u32> {
    #[cfg(unix)]
    return Some(euid());
    #[cfg(not(unix))]
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32) -> PeerIdentity {
        PeerIdentity {
            uid: Some(uid),
            gid: Some(gid),
            pid: Some(42),
            ..PeerIdentity::default()
        }
    }

    #[test]
    fn default_accepts_same_uid_and_root_only() {
        let policy = PeerPolicy::default();
        assert!(policy.check(&peer(1000, 1000), Some(1000)).is_ok());
        assert!(policy.check(&peer(0, 0), Some(1000)).is_ok());
        let refused = policy.check(&peer(1001, 1001), Some(1000)).unwrap_err();
        assert!(refused.contains("uid=1001"), "{refused}");
        assert!(policy.check(&PeerIdentity::default(), Some(1000)).is_err() || cfg!(not(unix)));
    }

    #[test]
    fn allow_lists_and_only_listed() {
        let policy = PeerPolicy::same_user().allow_uid(1001).allow_gid(50);
        assert!(policy.check(&peer(1001, 1), Some(1000)).is_ok());
        assert!(policy.check(&peer(1002, 50), Some(1000)).is_ok());
        assert!(policy.check(&peer(1002, 51), Some(1000)).is_err());
        let strict = PeerPolicy::only_listed().allow_uid(7);
        assert!(
            strict.check(&peer(1000, 1000), Some(1000)).is_err(),
            "not even self"
        );
        assert!(
            strict.check(&peer(0, 0), Some(1000)).is_err(),
            "not even root"
        );
        assert!(strict.check(&peer(7, 7), Some(1000)).is_ok());
        assert!(PeerPolicy::any().check(&peer(5, 5), Some(1000)).is_ok());
    }

    #[test]
    fn server_check_names_the_server_and_whom_the_policy_trusts() {
        let policy = PeerPolicy::default();
        assert!(policy.check_server(&peer(1000, 1000), Some(1000)).is_ok());
        assert!(policy.check_server(&peer(0, 0), Some(1000)).is_ok());
        let refused = policy
            .check_server(&peer(65534, 65534), Some(1000))
            .unwrap_err();
        assert_eq!(
            refused,
            format!(
                "server process uid=65534 gid=65534 pid=42 is not trusted by this client's \
                 server policy (this user (uid 1000) or {ROOT})"
            )
        );
        let listed = PeerPolicy::only_listed().allow_uid(7).allow_gid(8);
        assert_eq!(listed.admitted(Some(1)), "uid 7 or gid 8");
        assert_eq!(PeerPolicy::only_listed().admitted(None), "nobody");
        assert_eq!(PeerPolicy::any().admitted(None), "anyone");
    }

    #[cfg(unix)]
    #[test]
    fn directory_owners_are_this_user_root_and_listed_uids() {
        let owners = PeerPolicy::only_listed().allow_uid(7).directory_owners();
        for uid in [1000, 0, 7] {
            assert!(owners.admits_uid(uid, Some(1000)), "{uid}");
        }
        assert!(!owners.admits_uid(8, Some(1000)));
        assert_eq!(
            owners.admitted(Some(1000)),
            "this user (uid 1000), root or uid 7"
        );
        assert!(PeerPolicy::any().directory_owners().admits_anyone());
    }

    #[tokio::test]
    async fn caller_is_scoped_to_the_call() {
        assert_eq!(caller(), None);
        let inside = with_caller(peer(3, 4), async { caller() }).await;
        assert_eq!(inside, Some(peer(3, 4)));
        assert_eq!(caller(), None);
    }
}
