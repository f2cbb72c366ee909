//! Windows security for named pipes: who a process runs as (its token's user SID and
//! whether it is an elevated administrator), and the security descriptor that keeps a
//! server's pipe to its own user, SYSTEM and Administrators (seed: IPC, Security
//! Features: "user-restricted for Windows pipes"; the counterpart of the Unix socket's
//! mode 0600).
//!
//! The peer of a pipe is found with `GetNamedPipeClientProcessId` /
//! `GetNamedPipeServerProcessId` (through `interprocess`'s `peer_creds`); its user is
//! then read from that process's token (`OpenProcess` with
//! `PROCESS_QUERY_LIMITED_INFORMATION`, `OpenProcessToken`, `GetTokenInformation`).

use std::{io, sync::OnceLock};

use interprocess::os::windows::security_descriptor::SecurityDescriptor;
use widestring::U16CString;
use windows_sys::Win32::{
    Foundation::{CloseHandle, LocalFree, ERROR_FILE_NOT_FOUND, ERROR_SEM_TIMEOUT, HANDLE},
    Security::{
        Authorization::ConvertSidToStringSidW, GetTokenInformation, IsWellKnownSid, TokenGroups,
        TokenUser, WinBuiltinAdministratorsSid, TOKEN_GROUPS, TOKEN_INFORMATION_CLASS, TOKEN_QUERY,
        TOKEN_USER,
    },
    System::{
        Pipes::WaitNamedPipeW,
        SystemServices::SE_GROUP_ENABLED,
        Threading::{
            GetCurrentProcess, OpenProcess, OpenProcessToken, PROCESS_QUERY_LIMITED_INFORMATION,
        },
    },
};

/// Who a process runs as, read from its access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TokenIdentity {
    /// The token's user, in string form (`S-1-5-21-…`).
    pub(crate) sid: String,
    /// Whether the token has `BUILTIN\Administrators` (S-1-5-32-544) enabled: an elevated
    /// administrator (a filtered, non-elevated token has the group deny-only).
    pub(crate) administrator: bool,
}

/// This process's identity, read once.
///
/// # Errors
/// The OS error when this process's token cannot be read.
pub(crate) fn own_identity() -> io::Result<&'static TokenIdentity> {
    static OWN: OnceLock<Result<TokenIdentity, String>> = OnceLock::new();
    OWN.get_or_init(|| {
        // SAFETY: the pseudo-handle of the current process needs no closing.
        let process = unsafe { GetCurrentProcess() };
        token_identity(process).map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| io::Error::other(e.clone()))
}

/// The identity of process `pid`.
///
/// # Errors
/// The OS error when the process cannot be opened (it exited, or this process may not
/// query it) or its token cannot be read.
pub(crate) fn process_identity(pid: u32) -> io::Result<TokenIdentity> {
    // SAFETY: plain call; the handle is checked and closed below.
    let process = unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) };
    if process.is_null() {
        return Err(io::Error::last_os_error());
    }
    let process = Handle(process);
    token_identity(process.0)
}

/// A kernel handle closed on drop.
struct Handle(HANDLE);

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle was opened by this module and is closed once.
        unsafe { CloseHandle(self.0) };
    }
}

fn token_identity(process: HANDLE) -> io::Result<TokenIdentity> {
    let mut token: HANDLE = std::ptr::null_mut();
    // SAFETY: `process` is a live process handle; `token` receives a new handle.
    if unsafe { OpenProcessToken(process, TOKEN_QUERY, &mut token) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = Handle(token);
    let user = token_information(&token, TokenUser)?;
    // SAFETY: GetTokenInformation(TokenUser) filled the buffer with a TOKEN_USER, whose
    // SID points into the same buffer; read_unaligned because a Vec<u8> is byte-aligned.
    let user_sid = unsafe { std::ptr::read_unaligned(user.as_ptr().cast::<TOKEN_USER>()) }
        .User
        .Sid;
    let sid = sid_string(user_sid)?;
    let groups = token_information(&token, TokenGroups)?;
    // SAFETY: the buffer holds a TOKEN_GROUPS: a count, then that many SID_AND_ATTRIBUTES
    // (the array starts at the `Groups` field), whose SIDs point into the same buffer.
    let administrator = unsafe {
        let header = groups.as_ptr().cast::<TOKEN_GROUPS>();
        let count = std::ptr::read_unaligned(std::ptr::addr_of!((*header).GroupCount));
        let first = std::ptr::addr_of!((*header).Groups)
            .cast::<windows_sys::Win32::Security::SID_AND_ATTRIBUTES>();
        (0..count as usize).any(|i| {
            let group = std::ptr::read_unaligned(first.add(i));
            group.Attributes & (SE_GROUP_ENABLED as u32) != 0
                && IsWellKnownSid(group.Sid, WinBuiltinAdministratorsSid) != 0
        })
    };
    Ok(TokenIdentity { sid, administrator })
}

/// One `GetTokenInformation` class, in a buffer of the size the OS asks for.
fn token_information(token: &Handle, class: TOKEN_INFORMATION_CLASS) -> io::Result<Vec<u8>> {
    let mut needed = 0u32;
    // SAFETY: a size query: no buffer, `needed` receives the size.
    unsafe { GetTokenInformation(token.0, class, std::ptr::null_mut(), 0, &mut needed) };
    if needed == 0 {
        return Err(io::Error::last_os_error());
    }
    // u64-aligned storage, so the structures inside are at least as aligned as the OS's.
    let mut buffer = vec![0u8; needed as usize];
    // SAFETY: `buffer` has `needed` writable bytes.
    if unsafe {
        GetTokenInformation(
            token.0,
            class,
            buffer.as_mut_ptr().cast(),
            needed,
            &mut needed,
        )
    } == 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(buffer)
}

/// A SID in string form (`S-1-5-18`).
fn sid_string(sid: windows_sys::Win32::Security::PSID) -> io::Result<String> {
    let mut text: *mut u16 = std::ptr::null_mut();
    // SAFETY: `sid` points to a valid SID; `text` receives a LocalAlloc'd string.
    if unsafe { ConvertSidToStringSidW(sid, &mut text) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a NUL-terminated wide string from the OS, freed with LocalFree once read.
    let string = unsafe { widestring::U16CStr::from_ptr_str(text) }.to_string_lossy();
    // SAFETY: allocated by ConvertSidToStringSidW with LocalAlloc.
    unsafe { LocalFree(text.cast()) };
    Ok(string)
}

/// The SDDL of a server's pipe: a protected DACL (nothing inherited) granting full
/// access to `owner` (the server's user SID), SYSTEM and Administrators, and nobody
/// else (not Everyone, not anonymous logons, which the default pipe DACL admits to
/// read).
pub(crate) fn pipe_sddl(owner: &str) -> String {
    format!("D:P(A;;GA;;;{owner})(A;;GA;;;SY)(A;;GA;;;BA)")
}

/// The security descriptor of [`pipe_sddl`] for this process's user.
///
/// # Errors
/// The OS error when this process's token cannot be read or the descriptor not built.
pub(crate) fn pipe_security_descriptor() -> io::Result<SecurityDescriptor> {
    let owner = &own_identity()?.sid;
    let sddl = U16CString::from_str(pipe_sddl(owner))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    SecurityDescriptor::deserialize(&sddl)
}

/// Whether a server is listening on the pipe `endpoint`: `WaitNamedPipeW` with a 1 ms
/// wait succeeds when an instance waits for a client (a live server keeps one, see
/// `transport::bind`); it fails with `ERROR_FILE_NOT_FOUND` when no instance exists and
/// times out when the instances left are all connected or closing (a server that has
/// stopped while its clients still hold their ends: not served). Nothing is connected.
/// `transport::bind` asks this before creating the pipe because Wine ignores
/// `FILE_FLAG_FIRST_PIPE_INSTANCE`; on Windows that flag still covers the moment
/// between this question and the creation.
///
/// # Errors
/// `InvalidInput` for a name with a NUL; any other failure of `WaitNamedPipeW`.
pub(crate) fn pipe_is_served(endpoint: &str) -> io::Result<bool> {
    let name = U16CString::from_str(endpoint)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `name` is a NUL-terminated wide string that outlives the call.
    if unsafe { WaitNamedPipeW(name.as_ptr(), 1) } != 0 {
        return Ok(true);
    }
    let error = io::Error::last_os_error();
    match error
        .raw_os_error()
        .and_then(|code| u32::try_from(code).ok())
    {
        Some(ERROR_FILE_NOT_FOUND | ERROR_SEM_TIMEOUT) => Ok(false),
        _ => Err(error),
    }
}
