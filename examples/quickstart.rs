//! Quickstart: serve DaemonEye's process collector and query it, all in one process.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```
//!
//! In production `procmond` serves the collector and `daemoneye-agent` calls it from
//! another process; here both ends live in this program, connected by a real Unix socket
//! (a named pipe on Windows).

use std::{error::Error, path::Path, process::ExitCode};

use daemoneye_collector::{ProcessCollectorClient, ProcessCollectorServer, SystemCollector};
use daemoneye_ipc::{IpcConfig, Server};
use daemoneye_proto::{HashRequest, ProcessFilter, ProcessRecord};

/// How many processes to show, by resident memory.
const TOP: usize = 15;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("quickstart failed: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Box<dyn Error>> {
    // 1. Pick an endpoint. `IpcConfig::default()` would use procmond's real socket
    //    (/var/run/daemoneye/procmond.sock as root, \\.\pipe\daemoneye\procmond on
    //    Windows); an endpoint of a private temporary directory keeps this demo from
    //    colliding with an installed procmond.
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let config =
        IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "procmond"));

    // 2. Serve the collector. `#[ipc_service]` on the `ProcessCollector` trait generated
    //    `ProcessCollectorServer`, which routes each request to `SystemCollector`.
    let server = Server::bind(&config, ProcessCollectorServer::new(SystemCollector::new()))
        .map_err(|e| format!("cannot serve on {}: {e}", config.endpoint_path))?;
    println!("daemoneye-ipc quickstart");
    println!(
        "  serving the ProcessCollector service on {}",
        config.endpoint_path
    );
    if cfg!(windows) {
        println!("  (a named pipe only you, SYSTEM and Administrators can open)\n");
    } else {
        println!("  (a Unix socket, mode 0600, in a directory only you can open)\n");
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(server.serve_with_shutdown(async {
        let _ = stopped.await;
    }));

    // 3. Connect the generated typed client; the handshake checks that both ends agree
    //    on the service and its schema.
    let client = ProcessCollectorClient::connect(&config).await?;

    // 4. Enumerate every process (an empty filter matches all of them).
    let list = client.enumerate_processes(ProcessFilter::default()).await?;
    let me = std::process::id();
    let mut processes: Vec<&ProcessRecord> = list.processes.iter().collect();
    processes.sort_by_key(|p| std::cmp::Reverse(p.memory_usage.unwrap_or(0)));
    let mut shown: Vec<&ProcessRecord> = processes.iter().take(TOP).copied().collect();
    if let Some(own) = processes.iter().skip(TOP).find(|p| p.pid == me) {
        shown.push(own); // always show ourselves, even when we are not in the top
    }
    println!(
        "{} processes; the top {TOP} by resident memory:\n",
        list.processes.len()
    );
    println!(
        "{:>7} {:>7}  {:<16} {:>10}  EXECUTABLE",
        "PID", "PPID", "NAME", "MEMORY"
    );
    for p in shown {
        let ppid = p
            .ppid
            .map_or_else(|| "-".to_owned(), |ppid| ppid.to_string());
        let memory = format!("{:.1} MiB", p.memory_usage.unwrap_or(0) as f64 / 1048576.0);
        let exe = p.executable_path.as_deref().unwrap_or("-");
        let marker = if p.pid == me {
            "   <- this process"
        } else {
            ""
        };
        println!(
            "{:>7} {:>7}  {:<16} {:>10}  {}{marker}",
            p.pid,
            ppid,
            clip(&p.name, 16),
            memory,
            clip(exe, 60)
        );
    }

    // 5. Hash this program's own executable on the server side.
    let exe = std::env::current_exe().map_err(|e| format!("cannot locate this executable: {e}"))?;
    let request = HashRequest {
        path: exe.to_string_lossy().into_owned(),
        algorithm: "sha256".to_owned(),
        expected_hash: None,
    };
    let hash = client.check_hash(request).await?;
    if !hash.success {
        let why = hash
            .error_message
            .unwrap_or_else(|| "no reason given".to_owned());
        return Err(format!("check_hash failed: {why}").into());
    }
    println!(
        "\n{}  {}  ({})",
        hash.hash_value, hash.file_path, hash.algorithm
    );

    // 6. Shut down gracefully: the server stops accepting, lets calls in flight finish,
    //    closes its connections and removes the socket file (a pipe just closes).
    drop(client);
    let _ = stop.send(());
    server
        .await
        .map_err(|e| format!("server task failed: {e}"))??;
    if cfg!(unix) {
        let gone = !Path::new(&config.endpoint_path).exists();
        println!(
            "\nserver stopped; socket removed: {}",
            if gone { "yes" } else { "no" }
        );
    } else {
        println!("\nserver stopped; pipe closed");
    }
    Ok(())
}

/// `text` cut to at most `width` characters, keeping the end (the informative part of a
/// path) behind a leading `…`.
fn clip(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}
