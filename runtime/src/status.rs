//! Application-level errors: what a handler returns, as opposed to transport failures
//! ([`IpcError`](crate::IpcError)).

use std::fmt;

pub use crate::envelope::pb::StatusCode as Code;

/// An error status returned by a handler or produced by the runtime for one call.
///
/// Carries a [`Code`] (numbered as in gRPC) and a human-readable message. A client sees
/// it as [`IpcError::Status`](crate::IpcError::Status); the connection stays usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
}

macro_rules! constructors {
    ($($(#[$doc:meta])* $name:ident => $code:ident,)*) => {
        impl Status {
            $(
                $(#[$doc])*
                pub fn $name(message: impl Into<String>) -> Self {
                    Self::new(Code::$code, message)
                }
            )*
        }
    };
}

constructors! {
    /// `CANCELLED`: the caller gave up on the call.
    cancelled => Cancelled,
    /// `UNKNOWN`: an error with no better code.
    unknown => Unknown,
    /// `INVALID_ARGUMENT`: the request is malformed or has a bad value.
    invalid_argument => InvalidArgument,
    /// `DEADLINE_EXCEEDED`: the call's deadline passed before it finished.
    deadline_exceeded => DeadlineExceeded,
    /// `NOT_FOUND`: something the request names does not exist.
    not_found => NotFound,
    /// `ALREADY_EXISTS`: something the request would create exists already.
    already_exists => AlreadyExists,
    /// `PERMISSION_DENIED`: the caller may not do this.
    permission_denied => PermissionDenied,
    /// `RESOURCE_EXHAUSTED`: a limit was hit (connections, sizes, quotas).
    resource_exhausted => ResourceExhausted,
    /// `FAILED_PRECONDITION`: the system is not in a state that allows the call.
    failed_precondition => FailedPrecondition,
    /// `ABORTED`: the call was aborted, typically by a conflict.
    aborted => Aborted,
    /// `OUT_OF_RANGE`: a value is past a valid range.
    out_of_range => OutOfRange,
    /// `UNIMPLEMENTED`: the method is not served here.
    unimplemented => Unimplemented,
    /// `INTERNAL`: an invariant broke on the serving side.
    internal => Internal,
    /// `UNAVAILABLE`: the service cannot answer now; retrying later may work.
    unavailable => Unavailable,
    /// `DATA_LOSS`: unrecoverable loss or corruption of data.
    data_loss => DataLoss,
    /// `UNAUTHENTICATED`: the caller's identity could not be established.
    unauthenticated => Unauthenticated,
}

impl Status {
    /// A status with the given code and message. A message longer than
    /// [`MAX_STATUS_MESSAGE`] bytes is cut there (on a character boundary) and says how
    /// much was cut, so a status always fits in a frame whatever a handler puts in it.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: bounded(message.into()),
        }
    }

    /// The status code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn to_wire(&self) -> crate::envelope::pb::Status {
        crate::envelope::pb::Status {
            code: self.code as i32,
            message: self.message.clone(),
        }
    }

    pub(crate) fn from_wire(status: crate::envelope::pb::Status) -> Self {
        // An unknown code from a newer peer is kept as UNKNOWN rather than rejected.
        let code = Code::try_from(status.code).unwrap_or(Code::Unknown);
        Self {
            code,
            message: bounded(status.message),
        }
    }
}

/// Longest status message kept, in bytes; longer ones are truncated by [`Status::new`]
/// (and on receipt), so that a status can never exceed a frame, and a peer cannot make
/// us hold or log a large one.
pub const MAX_STATUS_MESSAGE: usize = 2048;

/// `message`, cut to at most [`MAX_STATUS_MESSAGE`] bytes on a character boundary, with
/// a note of how many bytes were cut.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message;
    }
    // Leave room for the note (at most ~40 bytes).
    let mut end = MAX_STATUS_MESSAGE - 48;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let cut = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("... ({cut} bytes truncated)"));
    message
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str_name(), self.message)
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_truncated_on_a_char_boundary() {
        let status = Status::invalid_argument("é".repeat(600_000));
        assert!(status.message().len() <= MAX_STATUS_MESSAGE);
        assert!(status.message().ends_with("bytes truncated)"));
        let short = Status::internal("short");
        assert_eq!(short.message(), "short");
    }
}
