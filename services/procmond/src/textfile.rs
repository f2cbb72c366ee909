//! `--metrics-textfile`: the server's metrics in the Prometheus text format, written
//! atomically every few seconds for node_exporter's textfile collector.
//!
//! Each write goes to a hidden temporary file in the same directory (so that the
//! rename is atomic and node_exporter, which reads `*.prom` only, never sees it), mode
//! 0644 (node_exporter runs as another user), then is renamed over the target. A
//! reader sees the old file or the new one, never a part of either.

use std::{
    io::{self, Write},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use daemoneye_ipc::ServerMetrics;

/// Writes `contents` to `path` atomically (see the module docs).
///
/// # Errors
/// The OS error, naming the file, when the temporary file cannot be written or renamed;
/// the temporary file is removed then.
pub fn write_atomically(path: &Path, contents: &str) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} names no file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o644);
        let mut file = options.open(&temporary)?;
        // The mode asked for at creation is cut by the umask (systemd units often set
        // 0077); node_exporter must still read it.
        #[cfg(unix)]
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        file.write_all(contents.as_bytes())?;
        file.sync_data()?;
        std::fs::rename(&temporary, path)
    })();
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(io::Error::new(
            error.kind(),
            format!("cannot write {}: {error}", path.display()),
        ));
    }
    Ok(())
}

/// Writes `metrics` to `path` now.
///
/// # Errors
/// As [`write_atomically`].
pub async fn write_now(metrics: &ServerMetrics, path: &Path) -> io::Result<()> {
    let text = metrics.prometheus();
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || write_atomically(&path, &text))
        .await
        .unwrap_or_else(|join| Err(io::Error::other(join.to_string())))
}

/// Writes `metrics` to `path` every `every`, until dropped. A failure is logged as a
/// warning once (and again only when the error changes); the recovery is logged too.
pub async fn write_every(metrics: Arc<ServerMetrics>, path: PathBuf, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing: Option<String> = None;
    loop {
        ticks.tick().await;
        match write_now(&metrics, &path).await {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!(path = %path.display(), "metrics textfile written again");
                }
            }
            Err(error) => {
                let error = error.to_string();
                if failing.as_ref() != Some(&error) {
                    tracing::warn!(%error, "cannot write the metrics textfile; will retry");
                    failing = Some(error);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("procmond.prom");
        write_atomically(&path, "a 1\n").expect("first");
        write_atomically(&path, "a 2\n").expect("second");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "a 2\n");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(names, ["procmond.prom"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "mode {mode:o}, whatever the umask");
        }
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("missing").join("procmond.prom");
        let error = write_atomically(&path, "a 1\n").expect_err("no directory");
        assert!(
            error.to_string().contains(&*path.to_string_lossy()),
            "{error}"
        );
    }
}
