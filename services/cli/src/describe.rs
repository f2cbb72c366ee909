//! `describe` and `docs`: a service's contract, from a running endpoint's reflection
//! service or, without one, the contract compiled into this binary. Both read the one
//! `daemoneye_ipc::Contract` structure; nothing here re-derives it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use daemoneye_collector::ProcessCollectorClient;
use daemoneye_ipc::{
    docs, envelope::pb, reflection::ReflectionClient, schema::Label, Client, Contract, IpcConfig,
    IpcError, PeerPolicy,
};
use serde::Serialize;

/// Where the contracts came from.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    /// A running server's reflection service.
    Endpoint {
        /// The endpoint asked.
        endpoint: String,
        /// Its protocol version.
        protocol_version: u32,
        /// The daemoneye-ipc version it was built with.
        crate_version: String,
    },
    /// The contract compiled into this cli (no server was asked, or none answered).
    BuiltIn {
        /// Why no server was asked, when one was meant to be.
        reason: Option<String>,
    },
}

/// Contracts and where they came from.
#[derive(Debug, Serialize)]
pub struct Described {
    /// Where the contracts came from.
    pub source: Source,
    /// One per service.
    pub services: Vec<Contract>,
}

/// The services served at `config`'s endpoint, through its reflection service, from a
/// server `server_policy` trusts.
///
/// # Errors
/// Connecting, or a reflection call, failed; `Decode` when a contract is not valid JSON.
pub async fn from_endpoint(
    config: &IpcConfig,
    server_policy: PeerPolicy,
) -> Result<Described, IpcError> {
    let client =
        Client::connect_with_server_policy(config, ReflectionClient::DESCRIPTOR, server_policy)
            .await?;
    let reflection = ReflectionClient::from_client(client);
    let info = reflection.server_info().await?;
    let mut services = Vec::with_capacity(info.services.len());
    for service in &info.services {
        let contract = reflection
            .describe(pb::DescribeRequest {
                service: service.name.clone(),
            })
            .await?;
        let contract = Contract::from_json(&contract.contract_json).map_err(|error| {
            IpcError::InvalidMessage {
                reason: format!(
                    "the contract of {} is not valid JSON: {error}",
                    service.name
                ),
            }
        })?;
        services.push(contract);
    }
    Ok(Described {
        source: Source::Endpoint {
            endpoint: config.endpoint_path.clone(),
            protocol_version: info.protocol_version,
            crate_version: info.crate_version,
        },
        services,
    })
}

/// The collector's contract as compiled into this binary.
///
/// # Errors
/// A message when the compiled-in descriptor set does not build (a build defect).
pub fn built_in(reason: Option<String>) -> Result<Described, String> {
    let contract = ProcessCollectorClient::DESCRIPTOR
        .contract()
        .map_err(|error| format!("the built-in contract does not build: {error}"))?;
    Ok(Described {
        source: Source::BuiltIn { reason },
        services: vec![contract],
    })
}

/// `described` for a person: where it came from, then each service's methods (id,
/// name, request, response, flags, doc) and, with `messages`, every message's fields
/// and every enum's values.
pub fn text(described: &Described, messages: bool) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    match &described.source {
        Source::Endpoint {
            endpoint,
            protocol_version,
            crate_version,
        } => {
            let _ = writeln!(
                out,
                "endpoint {endpoint}: protocol {protocol_version}, daemoneye-ipc {crate_version}"
            );
        }
        Source::BuiltIn { reason } => {
            let _ = write!(out, "built-in contract of this cli");
            if let Some(reason) = reason {
                let _ = write!(out, " ({reason})");
            }
            out.push('\n');
        }
    }
    for contract in &described.services {
        let _ = writeln!(
            out,
            "\nservice {}  (schema hash {:016x})",
            contract.service,
            contract.hash()
        );
        indented(&mut out, &contract.doc, "  ");
        for method in &contract.methods {
            let request = if method.request == daemoneye_ipc::schema::NO_MESSAGE {
                ""
            } else {
                &method.request
            };
            let stream = if method.server_streaming {
                "stream "
            } else {
                ""
            };
            let _ = write!(
                out,
                "  {:>3}  {}({request}) -> {stream}{}",
                method.id, method.name, method.response
            );
            let flags: Vec<&str> = [
                (method.idempotent, "idempotent"),
                (method.bare, "answers bare seed frames"),
            ]
            .into_iter()
            .filter_map(|(set, flag)| set.then_some(flag))
            .collect();
            if !flags.is_empty() {
                let _ = write!(out, "  [{}]", flags.join(", "));
            }
            out.push('\n');
            indented(&mut out, &method.doc, "       ");
        }
        if messages {
            for message in &contract.messages {
                let _ = writeln!(out, "\n  message {}", message.full_name);
                if !message.known {
                    let _ = writeln!(out, "    (no .proto schema: derived by hand)");
                }
                indented(&mut out, &message.doc, "    ");
                for field in &message.fields {
                    let label = match field.label {
                        Label::Repeated => "repeated ",
                        _ => "",
                    };
                    let _ = write!(
                        out,
                        "    {:>3}  {}: {label}{}",
                        field.number, field.name, field.type_name
                    );
                    if let Some(oneof) = &field.oneof {
                        let _ = write!(out, "  (oneof {oneof})");
                    }
                    out.push('\n');
                    indented(&mut out, &field.doc, "           ");
                }
            }
            for schema in &contract.enums {
                let _ = writeln!(out, "\n  enum {}", schema.full_name);
                indented(&mut out, &schema.doc, "    ");
                for value in &schema.values {
                    let _ = writeln!(out, "    {:>3}  {}", value.number, value.name);
                    indented(&mut out, &value.doc, "           ");
                }
            }
        }
    }
    out
}

/// `described` as one JSON document: `{"source": {...}, "services": [Contract...]}`.
pub fn json(described: &Described) -> String {
    serde_json::to_string_pretty(described).unwrap_or_else(|error| {
        // Serialising plain data cannot fail; say so if it ever does.
        format!("{{\"error\": \"cannot encode: {error}\"}}")
    })
}

/// Writes one Markdown reference per service into `dir` (`<service>.md`), creating it.
///
/// # Errors
/// The OS error, naming the path.
pub fn write_docs(described: &Described, dir: &Path) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("cannot create {}: {error}", dir.display()))?;
    let mut written = Vec::new();
    for contract in &described.services {
        let path = dir.join(format!("{}.md", contract.service));
        std::fs::write(&path, docs::render_markdown(contract))
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

fn indented(out: &mut String, text: &str, prefix: &str) {
    for line in text.lines() {
        let _ = writeln!(out, "{prefix}{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_contract_lists_methods_and_with_messages_their_fields() {
        let described = built_in(Some("no server at /nowhere".into())).expect("builds");
        let plain = text(&described, false);
        assert!(plain.starts_with("built-in contract of this cli (no server at /nowhere)"));
        assert!(plain.contains("service daemoneye.ProcessCollector"));
        assert!(plain.contains(
            "enumerate_processes(daemoneye.v1.ProcessFilter) -> daemoneye.v1.ProcessList"
        ));
        assert!(plain.contains("-> stream daemoneye.v1.ProcessList"));
        assert!(!plain.contains("collection_time"));
        let full = text(&described, true);
        assert!(full.contains("message daemoneye.v1.ProcessRecord"));
        assert!(full.contains(" 14  collection_time: int64"));
        assert!(full.contains("Time this record was collected"));
        let json: serde_json::Value = serde_json::from_str(&json(&described)).expect("JSON");
        assert_eq!(json["source"]["kind"], "built_in");
        assert_eq!(json["services"][0]["service"], "daemoneye.ProcessCollector");
    }

    #[test]
    fn docs_are_written_one_file_per_service() {
        let dir = tempfile::tempdir().expect("tempdir");
        let described = built_in(None).expect("builds");
        let written = write_docs(&described, &dir.path().join("out")).expect("written");
        assert_eq!(written.len(), 1);
        let text = std::fs::read_to_string(&written[0]).expect("readable");
        assert!(text.starts_with("# `daemoneye.ProcessCollector`"));
    }
}
