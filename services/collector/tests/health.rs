//! The collector's health follows the process table: a server whose table cannot be
//! read answers `NOT_SERVING` (for the whole server and for the collector's service)
//! through the built-in health service, and `SERVING` again once a later read finds it,
//! without any call in between (the collector reads it again by itself).

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use daemoneye_collector::{
    ProcessCollectorClient, ProcessCollectorServer, SystemCollector, TableState,
};
use daemoneye_ipc::{
    envelope::pb,
    health::{HealthClient, ServingStatus},
    IpcConfig, Server,
};
use daemoneye_proto::{ProcessFilter, ProcessRecord};

/// Upper bound for anything awaited here; never a speed requirement.
const PATIENCE: Duration = Duration::from_secs(30);

async fn status(health: &HealthClient, service: &str) -> ServingStatus {
    health
        .check(pb::HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .expect("check")
        .status()
}

/// Polls until both the server and the collector's service report `expected`.
async fn until(health: &HealthClient, expected: ServingStatus) {
    let deadline = Instant::now() + PATIENCE;
    let service = ProcessCollectorClient::DESCRIPTOR.name;
    loop {
        let both = (status(health, "").await, status(health, service).await);
        if both == (expected, expected) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still {both:?}, not {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_process_table_is_not_serving_until_it_reads_again() {
    let readable = Arc::new(AtomicBool::new(true));
    let table = {
        let readable = readable.clone();
        move || {
            if readable.load(Ordering::SeqCst) {
                vec![ProcessRecord {
                    pid: 1,
                    name: "init".to_owned(),
                    ..ProcessRecord::default()
                }]
            } else {
                Vec::new()
            }
        }
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let config = IpcConfig::with_endpoint(daemoneye_ipc::config::endpoint_in(dir.path(), "c"));
    let collector = SystemCollector::from_config(&config).with_process_table(table);
    let mut states = collector.process_table();
    assert_eq!(*states.borrow_and_update(), TableState::Unknown);
    let server =
        Server::bind(&config, ProcessCollectorServer::new(collector.clone())).expect("bind");
    let monitor = tokio::spawn(
        collector
            .clone()
            .report_health(server.health(), Duration::from_millis(50)),
    );
    tokio::spawn(server.serve());
    let health = HealthClient::connect(&config).await.expect("health");
    let client = ProcessCollectorClient::connect(&config)
        .await
        .expect("collector");

    // Every service starts SERVING; the first probe finds the table readable.
    until(&health, ServingStatus::Serving).await;
    let first = tokio::time::timeout(PATIENCE, states.wait_for(|s| *s != TableState::Unknown))
        .await
        .expect("probed")
        .expect("open")
        .clone();
    assert_eq!(first, TableState::Readable);

    // A listing finds the table empty: the server stops serving.
    readable.store(false, Ordering::SeqCst);
    let listed = client
        .enumerate_processes(ProcessFilter::default())
        .await
        .expect("answered");
    assert!(listed.processes.is_empty());
    until(&health, ServingStatus::NotServing).await;
    assert!(matches!(
        &*states.borrow_and_update(),
        TableState::Unreadable(reason) if reason.contains("no process")
    ));

    // Readable again: the collector's own probe notices, with no call made.
    readable.store(true, Ordering::SeqCst);
    until(&health, ServingStatus::Serving).await;
    assert_eq!(*states.borrow_and_update(), TableState::Readable);
    monitor.abort();
}

/// A listing limited to some pids says nothing about the table as a whole.
#[tokio::test]
async fn a_listing_by_pid_is_no_verdict_on_the_table() {
    let collector = SystemCollector::new();
    let states = collector.process_table();
    let none = ProcessFilter {
        pids: vec![u32::MAX - 1],
        ..ProcessFilter::default()
    };
    use daemoneye_collector::ProcessCollector;
    let listed = collector.enumerate_processes(none).await.expect("listed");
    assert!(listed.processes.is_empty());
    assert_eq!(*states.borrow(), TableState::Unknown);
    assert_eq!(
        collector.probe_process_table().await.expect("probe"),
        TableState::Readable,
        "this host lists this test's own process"
    );
}
