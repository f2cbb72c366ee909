//! `health-check` and `metrics`: what the endpoint's built-in health service says.

use std::{fmt::Write as _, process::ExitCode, time::Instant};

use daemoneye_ipc::{
    envelope::pb,
    health::{HealthClient, ServingStatus},
    metrics::{MethodReport, Report},
    reflection::ReflectionClient,
};
use serde_json::{json, Value};

use crate::{
    connect::{self, Health, Settings},
    format::sanitize,
    output::Out,
    CliError,
};

/// The name a status is shown with (as in the protobuf enum, less its prefix).
pub fn status_name(status: ServingStatus) -> &'static str {
    match status {
        ServingStatus::Unknown => "UNKNOWN",
        ServingStatus::Serving => "SERVING",
        ServingStatus::NotServing => "NOT_SERVING",
        ServingStatus::ServiceUnknown => "SERVICE_UNKNOWN",
    }
}

/// `health-check`: exit status 0 serving, 1 not serving (or no such service), 2
/// unreachable. With `--wait`, checks again until serving or the time has passed.
pub async fn health_check(
    settings: &Settings,
    service: &str,
    verbose: bool,
    json: bool,
    out: &mut Out,
) -> Result<ExitCode, CliError> {
    let health = match settings.wait {
        Some(wait) => connect::wait_until_serving(settings, service, wait).await,
        None => {
            let deadline = Instant::now() + settings.connect_budget();
            connect::check(settings, service, deadline).await
        }
    };
    let (status, code) = match &health {
        Health::Answered(status) => {
            let code = if *status == ServingStatus::Serving {
                0
            } else {
                1
            };
            (status_name(*status), code)
        }
        Health::NoSuchService(_) => ("SERVICE_UNKNOWN", 1),
        Health::Unreachable(_) => ("UNREACHABLE", 2),
    };
    let endpoint = settings.endpoint();
    let details = match (&health, verbose) {
        (Health::Unreachable(_), _) | (_, false) => None,
        _ => Some(Details::gather(settings).await),
    };
    if json {
        let mut document = json!({
            "endpoint": endpoint,
            "service": service,
            "status": status,
        });
        match &health {
            Health::Unreachable(error) => document["error"] = json!(error.to_string()),
            Health::NoSuchService(reason) => document["error"] = json!(reason),
            Health::Answered(_) => {}
        }
        if let Some(details) = &details {
            details.add_to(&mut document);
        }
        let text = serde_json::to_string_pretty(&document).map_err(CliError::Json)?;
        out.write(&format!("{text}\n"))?;
        return Ok(ExitCode::from(code));
    }
    match health {
        Health::Unreachable(error) => return Err(error),
        Health::NoSuchService(reason) => {
            out.write(&format!(
                "{}: {status}: {}\n",
                sanitize(endpoint),
                sanitize(&reason)
            ))?;
        }
        Health::Answered(_) => {
            let what = if service.is_empty() {
                String::new()
            } else {
                format!(" {}", sanitize(service))
            };
            out.write(&format!("{}{what}: {status}\n", sanitize(endpoint)))?;
        }
    }
    if let Some(details) = details {
        out.write(&details.text(settings))?;
    }
    Ok(ExitCode::from(code))
}

/// `metrics`: the Prometheus text, or with `json` the same figures as JSON.
pub async fn metrics(settings: &Settings, json: bool, out: &mut Out) -> Result<ExitCode, CliError> {
    let health = HealthClient::from_client(settings.connect(HealthClient::DESCRIPTOR).await?);
    let report = health.metrics().await.map_err(|e| settings.ipc(e))?;
    if json {
        let value: Value = serde_json::from_str(&report.json).map_err(CliError::Json)?;
        let text = serde_json::to_string_pretty(&value).map_err(CliError::Json)?;
        out.write(&format!("{text}\n"))?;
    } else {
        out.write(&report.prometheus_text)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--verbose` adds; each part that could not be had says why.
struct Details {
    socket: Result<SocketFacts, String>,
    info: Result<pb::ServerInfo, String>,
    statuses: Vec<(String, String)>,
    report: Result<Report, String>,
}

/// Who owns the socket file, and its mode.
struct SocketFacts {
    uid: u32,
    gid: u32,
    mode: u32,
    dir_uid: u32,
    dir_mode: u32,
}

#[cfg(unix)]
fn socket_facts(endpoint: &str) -> Result<SocketFacts, String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(endpoint).map_err(|e| e.to_string())?;
    let dir = connect::directory_of(endpoint);
    let dir_meta = std::fs::metadata(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(SocketFacts {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
        dir_uid: dir_meta.uid(),
        dir_mode: dir_meta.mode() & 0o7777,
    })
}

#[cfg(not(unix))]
fn socket_facts(_endpoint: &str) -> Result<SocketFacts, String> {
    Err("a named pipe has no owner or mode to show".to_owned())
}

impl Details {
    async fn gather(settings: &Settings) -> Self {
        let deadline = Instant::now() + settings.connect_budget();
        let socket = socket_facts(settings.endpoint());
        let reflection = connect::connect(
            &settings.config,
            ReflectionClient::DESCRIPTOR,
            &settings.policy,
            deadline,
        )
        .await
        .map(ReflectionClient::from_client);
        let info = match &reflection {
            Ok(reflection) => reflection.server_info().await.map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        let health = connect::connect(
            &settings.config,
            HealthClient::DESCRIPTOR,
            &settings.policy,
            deadline,
        )
        .await
        .map(HealthClient::from_client);
        let mut statuses = Vec::new();
        let report = match &health {
            Ok(health) => {
                if let Ok(info) = &info {
                    for service in &info.services {
                        let status =
                            match connect::check_with(health, settings, &service.name).await {
                                Health::Answered(status) => status_name(status).to_owned(),
                                Health::NoSuchService(_) => "SERVICE_UNKNOWN".to_owned(),
                                Health::Unreachable(error) => format!("unknown ({error})"),
                            };
                        statuses.push((service.name.clone(), status));
                    }
                }
                match health.metrics().await {
                    Ok(report) => serde_json::from_str::<Report>(&report.json)
                        .map_err(|e| format!("not a metrics report: {e}")),
                    Err(error) => Err(error.to_string()),
                }
            }
            Err(error) => Err(error.to_string()),
        };
        Self {
            socket,
            info,
            statuses,
            report,
        }
    }

    fn add_to(&self, document: &mut Value) {
        document["socket"] = match &self.socket {
            Ok(s) => json!({
                "uid": s.uid,
                "gid": s.gid,
                "mode": format!("{:04o}", s.mode),
                "directory_uid": s.dir_uid,
                "directory_mode": format!("{:04o}", s.dir_mode),
            }),
            Err(error) => json!({ "error": error }),
        };
        document["server"] = match &self.info {
            Ok(info) => {
                let limits = info.limits.clone().unwrap_or_default();
                json!({
                    "protocol_version": info.protocol_version,
                    "crate_version": info.crate_version,
                    "crc32_variant": limits.crc32_variant,
                    "limits": {
                        "max_frame_bytes": limits.max_frame_bytes,
                        "max_in_flight": limits.max_in_flight,
                        "max_connections": limits.max_connections,
                        "read_timeout_ms": limits.read_timeout_ms,
                        "write_timeout_ms": limits.write_timeout_ms,
                        "handler_timeout_ms": limits.handler_timeout_ms,
                    },
                    "services": info.services.iter().map(|service| {
                        let status = self
                            .statuses
                            .iter()
                            .find(|(name, _)| *name == service.name)
                            .map(|(_, status)| status.as_str());
                        json!({
                            "name": service.name,
                            "schema_hash": format!("{:016x}", service.schema_hash),
                            "methods": service.methods,
                            "status": status,
                        })
                    }).collect::<Vec<_>>(),
                })
            }
            Err(error) => json!({ "error": error }),
        };
        document["metrics"] = match &self.report {
            Ok(report) => serde_json::to_value(report).unwrap_or(Value::Null),
            Err(error) => json!({ "error": error }),
        };
    }

    fn text(&self, settings: &Settings) -> String {
        let mut text = String::new();
        let mut line = |label: &str, value: String| {
            let _ = writeln!(text, "  {label:<12} {value}");
        };
        line("endpoint", sanitize(settings.endpoint()).into_owned());
        line(
            "socket",
            match &self.socket {
                Ok(s) => format!(
                    "owner uid {} gid {}, mode {:04o}; directory owner uid {}, mode {:04o} \
                     (you are uid {})",
                    s.uid,
                    s.gid,
                    s.mode,
                    s.dir_uid,
                    s.dir_mode,
                    own_uid()
                ),
                Err(error) => format!("cannot inspect: {}", sanitize(error)),
            },
        );
        match &self.info {
            Ok(info) => {
                let limits = info.limits.clone().unwrap_or_default();
                line(
                    "versions",
                    format!(
                        "daemoneye-ipc {}, protocol {} (this cli: {}, protocol {})",
                        sanitize(&info.crate_version),
                        info.protocol_version,
                        env!("CARGO_PKG_VERSION"),
                        daemoneye_ipc::envelope::PROTOCOL_VERSION
                    ),
                );
                line(
                    "crc32",
                    format!(
                        "{} (this cli: {})",
                        sanitize(&limits.crc32_variant),
                        settings.config.crc32_variant.as_str()
                    ),
                );
                line(
                    "limits",
                    format!(
                        "frames up to {} bytes, {} connections, {} calls per connection; \
                         timeouts: read {} ms, write {} ms, handler {} ms",
                        limits.max_frame_bytes,
                        limits.max_connections,
                        limits.max_in_flight,
                        limits.read_timeout_ms,
                        limits.write_timeout_ms,
                        limits.handler_timeout_ms
                    ),
                );
            }
            Err(error) => line("server", format!("no server info: {}", sanitize(error))),
        }
        if let Ok(report) = &self.report {
            let s = &report.server;
            line("uptime", duration(report.uptime_ms));
            line(
                "connections",
                format!(
                    "{} open, {} since start; refused: {} busy, {} by peer policy; {} \
                     protocol errors",
                    s.connections_open,
                    s.connections_total,
                    s.refused_busy,
                    s.refused_peer,
                    s.protocol_errors
                ),
            );
        }
        for (index, (name, status)) in self.statuses.iter().enumerate() {
            let label = if index == 0 { "services" } else { "" };
            line(label, format!("{} {status}", sanitize(name)));
        }
        match &self.report {
            Ok(report) => text.push_str(&method_table(&report.methods)),
            Err(error) => {
                let _ = writeln!(text, "  {:<12} unavailable: {}", "metrics", sanitize(error));
            }
        }
        text
    }
}

/// One row per method: calls, errors (finished other than OK), in flight, p50, p99.
fn method_table(methods: &[MethodReport]) -> String {
    let headers = [
        "service",
        "method",
        "calls",
        "errors",
        "in flight",
        "p50",
        "p99",
    ];
    let rows: Vec<[String; 7]> = methods
        .iter()
        .map(|m| {
            let ok = m.by_code.get("OK").copied().unwrap_or(0);
            let timed = m.finished > 0;
            [
                sanitize(&m.service).into_owned(),
                sanitize(&m.method).into_owned(),
                m.started.to_string(),
                m.finished.saturating_sub(ok).to_string(),
                m.in_flight.to_string(),
                if timed {
                    latency(m.p50_us)
                } else {
                    "-".to_owned()
                },
                if timed {
                    latency(m.p99_us)
                } else {
                    "-".to_owned()
                },
            ]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::from("\n");
    let mut push = |cells: [&str; 7]| {
        let mut line = String::new();
        for (column, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if column < 2 {
                let _ = write!(line, "{cell:<width$}  ");
            } else {
                let _ = write!(line, "{cell:>width$}  ");
            }
        }
        text.push_str(line.trim_end());
        text.push('\n');
    };
    push(headers);
    for row in &rows {
        push(row.each_ref().map(String::as_str));
    }
    text
}

/// A latency in microseconds, in a readable unit.
fn latency(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.0} us")
    } else if us < 1_000_000.0 {
        format!("{:.1} ms", us / 1_000.0)
    } else {
        format!("{:.2} s", us / 1_000_000.0)
    }
}

/// `ms` as `1d 2h 03m 04s` (leading zero units left out).
fn duration(ms: u64) -> String {
    let secs = ms / 1_000;
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d {hours}h {minutes:02}m {seconds:02}s")
    } else if hours > 0 {
        format!("{hours}h {minutes:02}m {seconds:02}s")
    } else if minutes > 0 {
        format!("{minutes}m {seconds:02}s")
    } else {
        format!("{}.{:03}s", seconds, ms % 1_000)
    }
}

fn own_uid() -> String {
    #[cfg(unix)]
    {
        // SAFETY: geteuid has no preconditions and cannot fail.
        unsafe { libc::geteuid() }.to_string()
    }
    #[cfg(not(unix))]
    {
        "?".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn durations_and_latencies_read_well() {
        assert_eq!(duration(1_234), "1.234s");
        assert_eq!(duration(61_000), "1m 01s");
        assert_eq!(duration(3_723_000), "1h 02m 03s");
        assert_eq!(duration(90_061_000), "1d 1h 01m 01s");
        assert_eq!(latency(45.2), "45 us");
        assert_eq!(latency(1_234.0), "1.2 ms");
        assert_eq!(latency(2_500_000.0), "2.50 s");
    }

    #[test]
    fn the_method_table_counts_errors_as_calls_not_ok() {
        let method = MethodReport {
            service: "s.S".to_owned(),
            method: "m".to_owned(),
            started: 7,
            finished: 6,
            by_code: BTreeMap::from([("OK".to_owned(), 4), ("NOT_FOUND".to_owned(), 2)]),
            in_flight: 1,
            p50_us: 40.0,
            p99_us: 2_000.0,
            ..MethodReport::default()
        };
        let idle = MethodReport {
            service: "s.S".to_owned(),
            method: "idle".to_owned(),
            ..MethodReport::default()
        };
        let table = method_table(&[method, idle]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "");
        assert_eq!(
            lines[1],
            "service  method  calls  errors  in flight    p50     p99"
        );
        assert_eq!(
            lines[2],
            "s.S      m           7       2          1  40 us  2.0 ms"
        );
        assert_eq!(
            lines[3],
            "s.S      idle        0       0          0      -       -"
        );
    }
}
