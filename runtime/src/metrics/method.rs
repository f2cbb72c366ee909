//! Per-method counters: calls started and finished by status code, in flight, a latency
//! histogram, bytes and stream items, recorded by the runtime for every call.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Instant,
};

use serde::{Deserialize, Serialize};

use crate::{Code, ServiceDescriptor};

/// Upper bounds of the latency histogram's buckets, in microseconds (the last bucket,
/// past 60 s, is unbounded). Fine at the low end, where local calls live.
pub const LATENCY_BUCKETS_US: [u64; 22] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000,
    500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// A latency histogram of relaxed atomic counters: recording is two additions (its
/// count is the sum of its buckets, added up when read).
#[derive(Debug, Default)]
pub(crate) struct Histogram {
    /// One counter per bucket of [`LATENCY_BUCKETS_US`], then the overflow bucket.
    buckets: [AtomicU64; LATENCY_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl Histogram {
    fn record(&self, micros: u64) {
        let bucket = LATENCY_BUCKETS_US.partition_point(|bound| *bound < micros);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Per-bucket counts (not cumulative), the sum in microseconds and the count.
    fn read(&self) -> ([u64; LATENCY_BUCKETS_US.len() + 1], u64, u64) {
        let mut buckets = [0; LATENCY_BUCKETS_US.len() + 1];
        for (out, bucket) in buckets.iter_mut().zip(&self.buckets) {
            *out = bucket.load(Ordering::Relaxed);
        }
        let count = buckets.iter().sum();
        (buckets, self.sum_us.load(Ordering::Relaxed), count)
    }
}

/// The `q` quantile (0..1) of a histogram's per-bucket counts, in microseconds,
/// interpolated linearly inside the bucket that holds it (so within one bucket's width
/// of the truth); 0 when empty. The overflow bucket reports its lower bound.
pub(crate) fn quantile(buckets: &[u64], q: f64) -> f64 {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (index, count) in buckets.iter().enumerate() {
        let above = below + count;
        if (above as f64) >= rank && *count > 0 {
            let lower = if index == 0 {
                0
            } else {
                LATENCY_BUCKETS_US[index - 1]
            } as f64;
            let Some(upper) = LATENCY_BUCKETS_US.get(index) else {
                return lower;
            };
            let within = (rank - below as f64) / *count as f64;
            return lower + (*upper as f64 - lower) * within.clamp(0.0, 1.0);
        }
        below = above;
    }
    0.0
}

/// Counters of one method of one service, kept by the runtime for every call.
#[derive(Debug)]
pub(crate) struct MethodStats {
    pub(crate) service: &'static str,
    pub(crate) method: &'static str,
    pub(crate) id: u32,
    started: AtomicU64,
    /// Finished calls by status code (`Code as usize`, 0 = OK). Calls in flight are
    /// `started` less these, counted when read: a call costs four additions (W1).
    by_code: [AtomicU64; CODES],
    latency: Histogram,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
    stream_items: AtomicU64,
}

/// Status codes 0 (`OK`) to 16 (`UNAUTHENTICATED`).
const CODES: usize = 17;

impl MethodStats {
    fn new(service: &'static str, method: &'static str, id: u32) -> Self {
        Self {
            service,
            method,
            id,
            started: AtomicU64::new(0),
            by_code: Default::default(),
            latency: Histogram::default(),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
            stream_items: AtomicU64::new(0),
        }
    }

    /// Starts recording one call whose request was `request_bytes` long and arrived
    /// at `now` (the caller's clock reading, shared with its other uses).
    pub(crate) fn start(self: &Arc<Self>, request_bytes: usize, now: Instant) -> CallRecord {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.request_bytes
            .fetch_add(request_bytes as u64, Ordering::Relaxed);
        CallRecord {
            stats: self.clone(),
            since: now,
            done: false,
        }
    }

    /// One more item sent on a stream of this method.
    pub(crate) fn stream_item(&self) {
        self.stream_items.fetch_add(1, Ordering::Relaxed);
    }

    fn report(&self) -> MethodReport {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let (buckets, sum_us, count) = self.latency.read();
        let codes = self.by_code.each_ref().map(get);
        let finished = codes.iter().sum();
        // Relaxed reads: `started` may lag the codes; never report fewer started than finished.
        let started = get(&self.started).max(finished);
        let by_code = codes
            .iter()
            .enumerate()
            .filter_map(|(code, &n)| {
                let name = Code::try_from(code as i32).ok()?.as_str_name();
                (n > 0).then(|| (name.to_owned(), n))
            })
            .collect();
        MethodReport {
            service: self.service.to_owned(),
            method: self.method.to_owned(),
            id: self.id,
            started,
            finished,
            by_code,
            in_flight: started - finished,
            p50_us: quantile(&buckets, 0.50),
            p90_us: quantile(&buckets, 0.90),
            p99_us: quantile(&buckets, 0.99),
            latency_sum_us: sum_us,
            latency_count: count,
            latency_buckets: buckets.to_vec(),
            request_bytes: get(&self.request_bytes),
            response_bytes: get(&self.response_bytes),
            stream_items: get(&self.stream_items),
        }
    }
}

/// Records one call's end when finished, or as `CANCELLED` when dropped unfinished
/// (the call was aborted: a cancel, or its connection closed).
#[derive(Debug)]
pub(crate) struct CallRecord {
    stats: Arc<MethodStats>,
    since: Instant,
    done: bool,
}

impl CallRecord {
    /// The call ended at `now` with `code` and a response of `response_bytes`.
    pub(crate) fn finish(mut self, code: Code, response_bytes: usize, now: Instant) {
        self.end(code, response_bytes, now);
    }

    fn end(&mut self, code: Code, response_bytes: usize, now: Instant) {
        self.done = true;
        let stats = &self.stats;
        let took = now.saturating_duration_since(self.since);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        stats.latency.record(micros);
        if let Some(counter) = stats.by_code.get(code as usize) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        stats
            .response_bytes
            .fetch_add(response_bytes as u64, Ordering::Relaxed);
    }
}

impl Drop for CallRecord {
    fn drop(&mut self) {
        if !self.done {
            self.end(Code::Cancelled, 0, Instant::now());
        }
    }
}

/// The methods of the services one server serves, for per-method counters.
#[derive(Debug, Default)]
pub(crate) struct MethodTable {
    services: Vec<(&'static str, Arc<[Arc<MethodStats>]>)>,
}

impl MethodTable {
    pub(crate) fn new(descriptors: &[&'static ServiceDescriptor]) -> Self {
        let services = descriptors
            .iter()
            .map(|service| {
                let methods: Vec<Arc<MethodStats>> = service
                    .methods
                    .iter()
                    .map(|m| Arc::new(MethodStats::new(service.name, m.name, m.id)))
                    .collect();
                (service.name, Arc::from(methods))
            })
            .collect();
        Self { services }
    }

    /// Every method's report, in the order served.
    pub(crate) fn reports(&self) -> Vec<MethodReport> {
        self.services
            .iter()
            .flat_map(|(_, methods)| methods.iter().map(|stats| stats.report()))
            .collect()
    }

    /// The counters of every method of service `name` (empty when unknown).
    pub(crate) fn service(&self, name: &str) -> ServiceMethods {
        let methods = self
            .services
            .iter()
            .find(|(service, _)| *service == name)
            .map_or_else(|| Arc::from(Vec::new()), |(_, methods)| methods.clone());
        ServiceMethods(methods)
    }
}

/// One service's method counters, as a connection holds them.
#[derive(Clone, Debug)]
pub(crate) struct ServiceMethods(Arc<[Arc<MethodStats>]>);

impl ServiceMethods {
    /// The counters of method `id`; `None` for an id the service does not have.
    pub(crate) fn get(&self, id: u32) -> Option<&Arc<MethodStats>> {
        self.0.iter().find(|stats| stats.id == id)
    }
}

/// One method's figures in a [`Report`](super::Report).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodReport {
    /// Service name.
    pub service: String,
    /// Method name.
    pub method: String,
    /// Method id.
    pub id: u32,
    /// Calls started.
    pub started: u64,
    /// Calls finished (the sum of `by_code`).
    pub finished: u64,
    /// Finished calls by status code name (`"OK"`, `"DEADLINE_EXCEEDED"`, ...); codes
    /// with no call are left out. A call cancelled by its client or its connection
    /// closing counts as `CANCELLED`.
    pub by_code: BTreeMap<String, u64>,
    /// Calls running now.
    pub in_flight: u64,
    /// Median latency, in microseconds (interpolated in [`LATENCY_BUCKETS_US`]).
    pub p50_us: f64,
    /// 90th percentile latency, in microseconds.
    pub p90_us: f64,
    /// 99th percentile latency, in microseconds.
    pub p99_us: f64,
    /// Sum of all latencies, in microseconds.
    pub latency_sum_us: u64,
    /// Number of latencies recorded (= `finished`).
    pub latency_count: u64,
    /// Calls per latency bucket of [`LATENCY_BUCKETS_US`] (not cumulative), the last
    /// one past 60 s.
    pub latency_buckets: Vec<u64>,
    /// Request payload bytes received.
    pub request_bytes: u64,
    /// Response payload bytes sent (unary answers).
    pub response_bytes: u64,
    /// Stream items sent.
    pub stream_items: u64,
}
