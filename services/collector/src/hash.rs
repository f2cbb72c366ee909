//! Streaming file hashing.
//!
//! Files are read through a fixed buffer of [`HASH_BUFFER_BYTES`], never whole, so
//! memory stays bounded whatever the file's size. Only regular files are hashed: a FIFO,
//! device or directory is refused (on Unix the file is opened with `O_NONBLOCK`, so even
//! a FIFO swapped in under the path cannot block the open). These functions block:
//! call them from `tokio::task::spawn_blocking`.

use std::{
    fs::File,
    io::{self, Read},
    path::Path,
};

use daemoneye_ipc::CancelFlag;
use daemoneye_proto::{HashRequest, HashResult};
use sha2::{Digest, Sha256};

/// Size of the read buffer used while hashing, in bytes (64 KiB).
pub const HASH_BUFFER_BYTES: usize = 64 * 1024;

/// The algorithm used when a request names none, and the only one supported.
pub const DEFAULT_HASH_ALGORITHM: &str = "sha256";

/// Why a file could not be hashed.
#[derive(Debug)]
pub(crate) enum HashError {
    /// Opening, inspecting or reading the file failed.
    Io {
        /// What was being done: "open", "inspect" or "read".
        operation: &'static str,
        /// The OS error.
        error: io::Error,
    },
    /// The path names something other than a regular file.
    NotAFile,
    /// The caller went away; hashing stopped early.
    Cancelled,
}

impl HashError {
    fn describe(&self, path: &str) -> String {
        match self {
            HashError::Io { operation, error } => format!("cannot {operation} {path}: {error}"),
            HashError::NotAFile => format!("{path} is not a regular file"),
            HashError::Cancelled => format!("hashing {path} was cancelled"),
        }
    }
}

/// Opens `path` for reading without blocking on FIFOs and checks it is a regular file.
fn open_regular(path: &Path) -> Result<File, HashError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options.open(path).map_err(|error| HashError::Io {
        operation: "open",
        error,
    })?;
    let metadata = file.metadata().map_err(|error| HashError::Io {
        operation: "inspect",
        error,
    })?;
    if !metadata.is_file() {
        return Err(HashError::NotAFile);
    }
    Ok(file)
}

/// The lowercase hex SHA-256 of the regular file at `path`, read in chunks of
/// [`HASH_BUFFER_BYTES`]. Checks `cancelled` between chunks.
pub(crate) fn sha256_file(path: &Path, cancelled: &CancelFlag) -> Result<String, HashError> {
    let mut file = open_regular(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    loop {
        if cancelled.is_cancelled() {
            return Err(HashError::Cancelled);
        }
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buffer[..n]),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                return Err(HashError::Io {
                    operation: "read",
                    error,
                })
            }
        }
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Answers a [`HashRequest`]; never fails as a call (see
/// [`SystemCollector::check_hash`](crate::SystemCollector) for the outcome rules).
pub(crate) fn hash_request(request: &HashRequest, cancelled: &CancelFlag) -> HashResult {
    let requested = request.algorithm.trim();
    let failure = |algorithm: &str, message: String| HashResult {
        hash_value: String::new(),
        algorithm: algorithm.to_owned(),
        file_path: request.path.clone(),
        success: false,
        error_message: Some(message),
    };
    if !(requested.is_empty() || requested.eq_ignore_ascii_case(DEFAULT_HASH_ALGORITHM)) {
        return failure(
            requested,
            format!(
                "unsupported hash algorithm {requested:?} (supported: {DEFAULT_HASH_ALGORITHM})"
            ),
        );
    }
    if request.path.is_empty() {
        return failure(DEFAULT_HASH_ALGORITHM, "no path given to hash".to_owned());
    }
    let hash_value = match sha256_file(Path::new(&request.path), cancelled) {
        Ok(hash) => hash,
        Err(error) => return failure(DEFAULT_HASH_ALGORITHM, error.describe(&request.path)),
    };
    let mismatch = request
        .expected_hash
        .as_deref()
        .map(str::trim)
        .filter(|expected| !expected.is_empty() && !expected.eq_ignore_ascii_case(&hash_value));
    HashResult {
        success: mismatch.is_none(),
        error_message: mismatch
            .map(|expected| format!("hash mismatch: expected {expected}, got {hash_value}")),
        hash_value,
        algorithm: DEFAULT_HASH_ALGORITHM.to_owned(),
        file_path: request.path.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// sha256("hello world\n"), as printed by `sha256sum`.
    const HELLO_SHA256: &str = "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447";
    /// sha256 of the empty input.
    const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn request(path: &Path, algorithm: &str, expected: Option<&str>) -> HashRequest {
        HashRequest {
            path: path.to_string_lossy().into_owned(),
            algorithm: algorithm.to_owned(),
            expected_hash: expected.map(str::to_owned),
        }
    }

    fn temp_file(content: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(content).expect("write");
        file.flush().expect("flush");
        file
    }

    #[test]
    fn known_content_has_known_hash() {
        let file = temp_file(b"hello world\n");
        let result = hash_request(&request(file.path(), "", None), &CancelFlag::new());
        assert!(result.success, "{result:?}");
        assert_eq!(result.hash_value, HELLO_SHA256);
        assert_eq!(result.algorithm, "sha256");
        assert_eq!(result.file_path, file.path().to_string_lossy());
        assert_eq!(result.error_message, None);

        let empty = temp_file(b"");
        let result = hash_request(&request(empty.path(), "SHA256", None), &CancelFlag::new());
        assert_eq!(result.hash_value, EMPTY_SHA256);
    }

    #[test]
    fn file_larger_than_the_buffer_hashes_correctly() {
        let content: Vec<u8> = (0..(1024 * 1024 + 3)).map(|i| (i % 251) as u8).collect();
        assert!(content.len() > HASH_BUFFER_BYTES);
        let file = temp_file(&content);
        let expected = format!("{:x}", Sha256::digest(&content));
        let hash = sha256_file(file.path(), &CancelFlag::new()).expect("hash");
        assert_eq!(hash, expected);
    }

    #[test]
    fn expected_hash_is_compared_case_insensitively() {
        let file = temp_file(b"hello world\n");
        let upper = HELLO_SHA256.to_uppercase();
        let result = hash_request(
            &request(file.path(), "sha256", Some(&upper)),
            &CancelFlag::new(),
        );
        assert!(result.success, "{result:?}");
        assert_eq!(result.error_message, None);

        let empty_expectation = hash_request(
            &request(file.path(), "sha256", Some("")),
            &CancelFlag::new(),
        );
        assert!(empty_expectation.success, "empty expected_hash is unset");
    }

    #[test]
    fn mismatch_fails_but_reports_the_hash() {
        let file = temp_file(b"hello world\n");
        let result = hash_request(
            &request(file.path(), "sha256", Some(EMPTY_SHA256)),
            &CancelFlag::new(),
        );
        assert!(!result.success);
        assert_eq!(result.hash_value, HELLO_SHA256);
        assert_eq!(
            result.error_message.as_deref(),
            Some(format!("hash mismatch: expected {EMPTY_SHA256}, got {HELLO_SHA256}").as_str())
        );
    }

    #[test]
    fn missing_file_names_the_path_and_the_os_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("absent.bin");
        let result = hash_request(&request(&path, "", None), &CancelFlag::new());
        assert!(!result.success);
        assert!(result.hash_value.is_empty());
        let message = result.error_message.expect("message");
        assert!(message.contains(&*path.to_string_lossy()), "{message}");
        assert!(message.contains("No such file"), "{message}");
    }

    #[test]
    fn unsupported_algorithm_is_a_failed_result() {
        let file = temp_file(b"x");
        let result = hash_request(&request(file.path(), "md5", None), &CancelFlag::new());
        assert!(!result.success);
        assert_eq!(result.algorithm, "md5");
        assert!(result.hash_value.is_empty());
        let message = result.error_message.expect("message");
        assert!(
            message.contains("\"md5\"") && message.contains("sha256"),
            "{message}"
        );
    }

    #[test]
    fn directories_and_empty_paths_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let result = hash_request(&request(dir.path(), "", None), &CancelFlag::new());
        assert!(!result.success);
        let message = result.error_message.expect("message");
        assert!(message.contains("not a regular file"), "{message}");

        let result = hash_request(&request(Path::new(""), "", None), &CancelFlag::new());
        assert!(!result.success);
        assert_eq!(
            result.error_message.as_deref(),
            Some("no path given to hash")
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("fifo");
        let c_path = std::ffi::CString::new(path.to_string_lossy().as_bytes()).expect("c path");
        // SAFETY: c_path is a valid NUL-terminated string.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        let result = hash_request(&request(&path, "", None), &CancelFlag::new());
        assert!(!result.success);
        assert!(result
            .error_message
            .expect("message")
            .contains("not a regular file"));
    }

    #[test]
    fn cancellation_stops_hashing() {
        let file = temp_file(b"hello world\n");
        let cancelled = CancelFlag::new();
        cancelled.cancel();
        let result = sha256_file(file.path(), &cancelled);
        assert!(matches!(result, Err(HashError::Cancelled)));
    }
}
