//! `VERIFY_EXECUTABLE`: does the file at a process's executable path still hold what
//! the process runs?
//!
//! On Linux, `/proc/PID/exe` opens the very image the process runs, even after its
//! file was deleted or replaced, and reading the link gives the path it was started
//! from (with a `" (deleted)"` suffix once that name is unlinked, which replacing a
//! file by renaming another over it does too). The image is hashed through that open
//! file, and compared with the file found at the path today: looked up through
//! `/proc/PID/root`, so that a process in a container or chroot is compared with the
//! file in its own view of the filesystem, then in the collector's own view.
//!
//! These functions block: call them on a blocking thread.

use daemoneye_ipc::CancelFlag;
use daemoneye_proto::{ExecutableState, VerifyResult};

use crate::hash::Algorithm;

/// Verifies the executable of process `pid`; every outcome is a [`VerifyResult`].
pub(crate) fn verify(pid: u32, algorithm: &str, cancelled: &CancelFlag) -> VerifyResult {
    let mut result = VerifyResult {
        pid,
        state: ExecutableState::Error as i32,
        ..VerifyResult::default()
    };
    let algorithm = match Algorithm::parse(algorithm) {
        Ok(algorithm) => algorithm,
        Err(message) => {
            result.algorithm = algorithm.trim().to_owned();
            result.error_message = Some(message);
            return result;
        }
    };
    result.algorithm = algorithm.name().to_owned();
    match imp::verify(pid, algorithm, cancelled, &mut result) {
        Ok(state) => result.state = state as i32,
        Err(message) => {
            result.state = ExecutableState::Error as i32;
            result.error_message = Some(message);
        }
    }
    result
}

#[cfg(target_os = "linux")]
mod imp {
    use std::{
        fs, io,
        os::unix::fs::MetadataExt,
        path::{Path, PathBuf},
    };

    use daemoneye_ipc::CancelFlag;
    use daemoneye_proto::{ExecutableState, VerifyResult};

    use crate::hash::{self, Algorithm, HashError};

    /// What the kernel appends to the link of an executable whose name was unlinked.
    const DELETED_SUFFIX: &str = " (deleted)";

    /// Fills `result`'s path, hashes and `same_file`; the state, or why there is none.
    pub(super) fn verify(
        pid: u32,
        algorithm: Algorithm,
        cancelled: &CancelFlag,
        result: &mut VerifyResult,
    ) -> Result<ExecutableState, String> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let exe = proc_dir.join("exe");
        let link = fs::read_link(&exe).map_err(|error| match error.kind() {
            io::ErrorKind::NotFound if !proc_dir.exists() => format!("no process {pid}"),
            io::ErrorKind::NotFound => {
                format!("process {pid} has no executable (a kernel thread, or exiting)")
            }
            _ => format!("cannot read the executable of process {pid}: {error}"),
        })?;
        let link = link.to_string_lossy().into_owned();
        let (path, unlinked) = match link.strip_suffix(DELETED_SUFFIX) {
            Some(path) => (path.to_owned(), true),
            None => (link, false),
        };
        result.executable_path = path.clone();

        // The image the process runs, pinned by this open file whatever happens to
        // its name meanwhile.
        let image = fs::File::open(&exe)
            .map_err(|error| format!("cannot open the executable of process {pid}: {error}"))?;
        let image_meta = image
            .metadata()
            .map_err(|error| format!("cannot inspect the executable of process {pid}: {error}"))?;
        result.running_hash = hash::hash_reader(image, algorithm, cancelled)
            .map_err(|error| error.describe(&format!("the executable of process {pid}")))?;

        let Some((found, meta)) = lookup(&proc_dir, &path) else {
            if unlinked {
                result.error_message = Some(format!(
                    "{path} was deleted; process {pid} runs the deleted file"
                ));
                return Ok(ExecutableState::Deleted);
            }
            return Err(format!(
                "{path} (the executable of process {pid}) is not visible from the collector"
            ));
        };
        if (meta.dev(), meta.ino()) == (image_meta.dev(), image_meta.ino()) {
            result.same_file = true;
            result.disk_hash = Some(result.running_hash.clone());
            return Ok(ExecutableState::Unchanged);
        }
        match hash::hash_file(&found, algorithm, cancelled) {
            Ok(disk) if disk == result.running_hash => {
                result.disk_hash = Some(disk);
                Ok(ExecutableState::Unchanged)
            }
            Ok(disk) => {
                result.error_message = Some(format!(
                    "{path} was replaced: the file there now has {algorithm} {disk}, process \
                     {pid} runs {}",
                    result.running_hash
                ));
                result.disk_hash = Some(disk);
                Ok(ExecutableState::Replaced)
            }
            Err(HashError::Cancelled) => Err("verification was cancelled".to_owned()),
            Err(error) => {
                // Another file is there (another device or inode): replaced, though
                // its content could not be compared.
                result.error_message = Some(format!(
                    "{path} was replaced by another file, which cannot be hashed: {}",
                    error.describe(&path)
                ));
                Ok(ExecutableState::Replaced)
            }
        }
    }

    /// The file at `path` as the process sees it (through its root), else as the
    /// collector does; `None` when neither has one.
    fn lookup(proc_dir: &Path, path: &str) -> Option<(PathBuf, fs::Metadata)> {
        let relative = path.trim_start_matches('/');
        [proc_dir.join("root").join(relative), PathBuf::from(path)]
            .into_iter()
            .find_map(|candidate| fs::metadata(&candidate).ok().map(|meta| (candidate, meta)))
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use daemoneye_ipc::CancelFlag;
    use daemoneye_proto::{ExecutableState, VerifyResult};

    use crate::hash::Algorithm;

    pub(super) fn verify(
        _pid: u32,
        _algorithm: Algorithm,
        _cancelled: &CancelFlag,
        _result: &mut VerifyResult,
    ) -> Result<ExecutableState, String> {
        Err("verifying executables needs Linux's /proc".to_owned())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn this_test_binary_is_unchanged() {
        let result = verify(std::process::id(), "", &CancelFlag::new());
        assert_eq!(result.state(), ExecutableState::Unchanged, "{result:?}");
        assert!(result.same_file);
        assert_eq!(result.algorithm, "sha256");
        assert_eq!(result.running_hash.len(), 64);
        assert_eq!(
            result.disk_hash.as_deref(),
            Some(result.running_hash.as_str())
        );
        let exe = std::env::current_exe().expect("exe");
        assert_eq!(std::path::Path::new(&result.executable_path), exe);
    }

    #[test]
    fn errors_are_results_with_a_message() {
        // Pids are at most 2^22 on Linux.
        let missing = verify(u32::MAX, "sha256", &CancelFlag::new());
        assert_eq!(missing.state(), ExecutableState::Error);
        assert_eq!(
            missing.error_message.as_deref(),
            Some("no process 4294967295")
        );

        let unsupported = verify(std::process::id(), "md5", &CancelFlag::new());
        assert_eq!(unsupported.state(), ExecutableState::Error);
        assert_eq!(unsupported.algorithm, "md5");
        assert!(unsupported
            .error_message
            .expect("message")
            .starts_with("unsupported hash algorithm"));

        let cancelled = CancelFlag::new();
        cancelled.cancel();
        let stopped = verify(std::process::id(), "blake3", &cancelled);
        assert_eq!(stopped.state(), ExecutableState::Error);
    }
}
