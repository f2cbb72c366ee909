//! The Prometheus text exposition of a [`Report`], written by `prometheus-client`
//! through a collector over the report (so recording stays on our own atomics).

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{Report, LATENCY_BUCKETS_US};

/// `report` as Prometheus text, version 0.0.4.
pub(super) fn render(report: &Report) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(report.clone())));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry);
    text
}

#[derive(Debug)]
struct Exposition(Report);

/// One per-method series: name, help, type, unit, and how to read it from a report.
type PerMethod = (
    &'static str,
    &'static str,
    MetricType,
    Option<Unit>,
    fn(&super::MethodReport) -> u64,
);

impl Collector for Exposition {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let report = &self.0;
        let method = |m: &super::MethodReport| {
            [("service", m.service.clone()), ("method", m.method.clone())]
        };
        {
            let mut calls = encoder.encode_descriptor(
                "daemoneye_ipc_calls",
                "Calls finished, by service, method and status code",
                None,
                MetricType::Counter,
            )?;
            for m in &report.methods {
                for (code, n) in &m.by_code {
                    let labels = [
                        ("service", m.service.clone()),
                        ("method", m.method.clone()),
                        ("code", code.clone()),
                    ];
                    calls
                        .encode_family(&labels)?
                        .encode_counter::<NoLabelSet, _, u64>(n, None)?;
                }
            }
        }
        {
            let mut started = encoder.encode_descriptor(
                "daemoneye_ipc_calls_started",
                "Calls started, by service and method",
                None,
                MetricType::Counter,
            )?;
            for m in &report.methods {
                started
                    .encode_family(&method(m))?
                    .encode_counter::<NoLabelSet, _, u64>(&m.started, None)?;
            }
        }
        {
            let mut duration = encoder.encode_descriptor(
                "daemoneye_ipc_call_duration",
                "Time from a request's arrival to its answer (a stream's end)",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for m in &report.methods {
                let buckets: Vec<(f64, u64)> = m
                    .latency_buckets
                    .iter()
                    .enumerate()
                    .map(|(index, count)| {
                        let bound = LATENCY_BUCKETS_US
                            .get(index)
                            .map_or(f64::INFINITY, |us| *us as f64 / 1e6);
                        (bound, *count)
                    })
                    .collect();
                duration
                    .encode_family(&method(m))?
                    .encode_histogram::<NoLabelSet>(
                        m.latency_sum_us as f64 / 1e6,
                        m.latency_count,
                        &buckets,
                        None,
                    )?;
            }
        }
        let per_method: [PerMethod; 4] = [
            (
                "daemoneye_ipc_calls_in_flight",
                "Calls running now",
                MetricType::Gauge,
                None,
                |m| m.in_flight,
            ),
            (
                "daemoneye_ipc_request",
                "Request payload bytes received",
                MetricType::Counter,
                Some(Unit::Bytes),
                |m| m.request_bytes,
            ),
            (
                "daemoneye_ipc_response",
                "Unary response payload bytes sent",
                MetricType::Counter,
                Some(Unit::Bytes),
                |m| m.response_bytes,
            ),
            (
                "daemoneye_ipc_stream_items",
                "Stream items sent",
                MetricType::Counter,
                None,
                |m| m.stream_items,
            ),
        ];
        for (name, help, kind, unit, value) in per_method {
            let mut family = encoder.encode_descriptor(name, help, unit.as_ref(), kind)?;
            for m in &report.methods {
                let labels = method(m);
                let mut metric = family.encode_family(&labels)?;
                match kind {
                    MetricType::Gauge => metric.encode_gauge(&value(m))?,
                    _ => metric.encode_counter::<NoLabelSet, _, u64>(&value(m), None)?,
                }
            }
        }
        let server = &report.server;
        let gauges = [
            (
                "daemoneye_ipc_connections_open",
                "Connections being served",
                server.connections_open,
            ),
            (
                "daemoneye_ipc_streams_open",
                "Server streams producing now",
                server.streams_open,
            ),
        ];
        for (name, help, value) in gauges {
            encoder
                .encode_descriptor(name, help, None, MetricType::Gauge)?
                .encode_gauge(&value)?;
        }
        let counters = [
            (
                "daemoneye_ipc_connections",
                "Connections admitted",
                server.connections_total,
            ),
            (
                "daemoneye_ipc_protocol_errors",
                "Connections closed for a framing or protocol error or an idle timeout",
                server.protocol_errors,
            ),
            (
                "daemoneye_ipc_credit_stalls",
                "Times a stream producer waited for the consumer's credit",
                server.credit_stalls,
            ),
        ];
        for (name, help, value) in counters {
            encoder
                .encode_descriptor(name, help, None, MetricType::Counter)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        {
            let mut refused = encoder.encode_descriptor(
                "daemoneye_ipc_connections_refused",
                "Connections refused, by reason",
                None,
                MetricType::Counter,
            )?;
            for (reason, value) in [("busy", server.refused_busy), ("peer", server.refused_peer)] {
                refused
                    .encode_family(&[("reason", reason)])?
                    .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
            }
        }
        encoder
            .encode_descriptor(
                "daemoneye_ipc_uptime",
                "Time since the server started",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?
            .encode_gauge(&(report.uptime_ms as f64 / 1000.0))?;
        let build = [
            ("version", report.crate_version.clone()),
            ("protocol", report.protocol_version.to_string()),
        ];
        encoder
            .encode_descriptor(
                "daemoneye_ipc_build_info",
                "The daemoneye-ipc version and protocol version (always 1)",
                None,
                MetricType::Gauge,
            )?
            .encode_family(&build)?
            .encode_gauge(&1u64)?;
        Ok(())
    }
}
