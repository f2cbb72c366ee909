//! Breaking-change detection between two [`Contract`]s, and the schema snapshot check.
//!
//! [`breaking_changes`] compares an old contract (the one deployed peers were built
//! with) with a new one and lists every change that can break a peer built from the old
//! one. Its rules are those of `buf breaking`'s `WIRE` category that apply to a
//! daemoneye-ipc contract, plus a few of `buf`'s `FILE` rules and daemoneye-ipc's own
//! where a local service has more to keep stable than protobuf's wire format (method
//! ids, the handshake's service name, the seed-era entry point). Each rule has a
//! constant in [`rules`] whose documentation says where it comes from.
//!
//! Like `buf`'s `WIRE` category, it does not care about names that never go on the
//! wire: renaming a field or an enum value passes (the `WIRE_JSON` category would
//! report it, since JSON uses names; daemoneye-ipc only speaks binary protobuf).
//!
//! Not checked, because a contract cannot express them: client streaming
//! (`RPC_SAME_CLIENT_STREAMING`: there is none), message-set wire format
//! (`MESSAGE_SAME_MESSAGE_SET_WIRE_FORMAT`: prost has none), proto2 default values
//! (`FIELD_SAME_DEFAULT`). A file's package (`FILE_SAME_PACKAGE`) is part of every full
//! name, so moving messages to another package is reported by the type rules.
//!
//! [`check_snapshot`] (or [`assert_contract_snapshot!`](crate::assert_contract_snapshot))
//! compares a contract with its checked-in JSON snapshot, from a test.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use crate::schema::{is_scalar, Contract, FieldSchema, Label, MessageSchema};

/// The rules [`breaking_changes`] applies, by id. Each id is the one `buf` uses when the
/// rule is `buf`'s (with the `buf` categories it belongs to), or a daemoneye-ipc rule.
pub mod rules {
    /// The service's name must not change: clients name the service in their hello,
    /// and an endpoint refuses a name it does not serve, so a renamed service is a
    /// deleted one. Source: buf `SERVICE_NO_DELETE` (categories FILE), applied to the
    /// one service of a contract.
    pub const SERVICE_NO_DELETE: &str = "SERVICE_NO_DELETE";
    /// A method (by name) must not be deleted: deployed callers would get
    /// `UNIMPLEMENTED`. A renamed method is a deleted one. Source: buf `RPC_NO_DELETE`
    /// (categories FILE, PACKAGE).
    pub const RPC_NO_DELETE: &str = "RPC_NO_DELETE";
    /// A method's wire id must not change: requests carry the id, not the name.
    /// Source: daemoneye-ipc (protobuf RPCs are addressed by name).
    pub const METHOD_ID_SAME: &str = "METHOD_ID_SAME";
    /// A method's request type must stay the same message (by full name). Source: buf
    /// `RPC_SAME_REQUEST_TYPE` (categories FILE, PACKAGE, WIRE_JSON, WIRE).
    pub const RPC_SAME_REQUEST_TYPE: &str = "RPC_SAME_REQUEST_TYPE";
    /// A method's response (or stream item) type must stay the same message (by full
    /// name). Source: buf `RPC_SAME_RESPONSE_TYPE` (FILE, PACKAGE, WIRE_JSON, WIRE).
    pub const RPC_SAME_RESPONSE_TYPE: &str = "RPC_SAME_RESPONSE_TYPE";
    /// A method must not become server-streaming or stop being so. Source: buf
    /// `RPC_SAME_SERVER_STREAMING` (FILE, PACKAGE, WIRE_JSON, WIRE).
    pub const RPC_SAME_SERVER_STREAMING: &str = "RPC_SAME_SERVER_STREAMING";
    /// A method's idempotency must not change: clients retry idempotent calls, so a
    /// method that stops being idempotent would still be retried by deployed clients,
    /// and one that becomes idempotent would be retried against deployed servers that
    /// do not expect it. Source: buf `RPC_SAME_IDEMPOTENCY_LEVEL` (FILE, PACKAGE,
    /// WIRE_JSON, WIRE), applied to `#[ipc(idempotent)]`.
    pub const RPC_SAME_IDEMPOTENCY_LEVEL: &str = "RPC_SAME_IDEMPOTENCY_LEVEL";
    /// The method that answers seed-era bare frames (`#[ipc(bare)]`) must not change or
    /// go away: seed-era peers cannot be told to call another one. Adding one where
    /// there was none is compatible. Source: daemoneye-ipc.
    pub const METHOD_SAME_BARE: &str = "METHOD_SAME_BARE";
    /// A message the new contract still refers to (as a request, a response or a
    /// field's type) must still be described in it. A message that nothing refers to
    /// any more may go: what stopped referring to it is reported by its own rule.
    /// Source: buf `MESSAGE_NO_DELETE` (FILE), restricted to messages in use.
    pub const MESSAGE_NO_DELETE: &str = "MESSAGE_NO_DELETE";
    /// A message whose schema was known (from a `.proto` descriptor) must not become
    /// unknown (derived by hand, or its descriptor set no longer given): nothing about
    /// its fields could be checked any more. Source: daemoneye-ipc.
    pub const MESSAGE_SCHEMA_NO_DELETE: &str = "MESSAGE_SCHEMA_NO_DELETE";
    /// An enum the new contract still refers to must still be described in it.
    /// Source: buf `ENUM_NO_DELETE` (FILE), restricted to enums in use.
    pub const ENUM_NO_DELETE: &str = "ENUM_NO_DELETE";
    /// A field may be deleted only if its number is reserved, so that it is never
    /// reused with another meaning. Source: buf
    /// `FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED` (WIRE_JSON, WIRE).
    pub const FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED: &str =
        "FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED";
    /// A field's type may change only within a wire-compatible group (see
    /// [`wire_compatible_type`](super::wire_compatible_type)); this also catches a
    /// field number reused with another type. Source: buf `FIELD_WIRE_COMPATIBLE_TYPE`
    /// (WIRE), after the protobuf language guide's "Updating A Message Type".
    pub const FIELD_WIRE_COMPATIBLE_TYPE: &str = "FIELD_WIRE_COMPATIBLE_TYPE";
    /// A field's cardinality may change only within a wire-compatible group: singular
    /// (optional, with or without presence), required, and repeated or map. Source:
    /// buf `FIELD_WIRE_COMPATIBLE_CARDINALITY` (WIRE). The protobuf language guide
    /// notes that singular and repeated `string`, `bytes` and message fields parse
    /// each other's data, but a singular reader keeps only the last element (or merges
    /// messages), silently losing data, and packed repeated numbers do not parse as a
    /// singular field at all: like buf, every singular <-> repeated change is reported.
    pub const FIELD_WIRE_COMPATIBLE_CARDINALITY: &str = "FIELD_WIRE_COMPATIBLE_CARDINALITY";
    /// A field must not move into, out of, or between oneofs: setting one member of a
    /// oneof clears the others, so old and new readers would keep different fields.
    /// Source: buf `FIELD_SAME_ONEOF` (FILE, PACKAGE, WIRE_JSON, WIRE).
    pub const FIELD_SAME_ONEOF: &str = "FIELD_SAME_ONEOF";
    /// No proto2 `required` field may be added or deleted: a reader rejects a message
    /// missing one it requires. (A label changing to or from `required` is reported by
    /// `FIELD_WIRE_COMPATIBLE_CARDINALITY`.) Source: buf `MESSAGE_SAME_REQUIRED_FIELDS`
    /// (FILE, PACKAGE, WIRE_JSON, WIRE).
    pub const MESSAGE_SAME_REQUIRED_FIELDS: &str = "MESSAGE_SAME_REQUIRED_FIELDS";
    /// A message's reserved numbers and names must stay reserved. Source: buf
    /// `RESERVED_MESSAGE_NO_DELETE` (FILE, PACKAGE, WIRE_JSON, WIRE).
    pub const RESERVED_MESSAGE_NO_DELETE: &str = "RESERVED_MESSAGE_NO_DELETE";
    /// An enum value's number may be deleted only if it is reserved (a renumbered value
    /// deletes its old number). Source: buf
    /// `ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED` (WIRE_JSON, WIRE).
    pub const ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED: &str =
        "ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED";
    /// An enum's reserved numbers and names must stay reserved. Source: buf
    /// `RESERVED_ENUM_NO_DELETE` (FILE, PACKAGE, WIRE_JSON, WIRE).
    pub const RESERVED_ENUM_NO_DELETE: &str = "RESERVED_ENUM_NO_DELETE";

    /// Every rule, in the order [`breaking_changes`](super::breaking_changes) reports
    /// them.
    pub const ALL: [&str; 19] = [
        SERVICE_NO_DELETE,
        RPC_NO_DELETE,
        METHOD_ID_SAME,
        RPC_SAME_REQUEST_TYPE,
        RPC_SAME_RESPONSE_TYPE,
        RPC_SAME_SERVER_STREAMING,
        RPC_SAME_IDEMPOTENCY_LEVEL,
        METHOD_SAME_BARE,
        MESSAGE_NO_DELETE,
        MESSAGE_SCHEMA_NO_DELETE,
        FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED,
        FIELD_WIRE_COMPATIBLE_TYPE,
        FIELD_WIRE_COMPATIBLE_CARDINALITY,
        FIELD_SAME_ONEOF,
        MESSAGE_SAME_REQUIRED_FIELDS,
        RESERVED_MESSAGE_NO_DELETE,
        ENUM_NO_DELETE,
        ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED,
        RESERVED_ENUM_NO_DELETE,
    ];
}

/// One breaking change: the rule it breaks and what changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Break {
    /// The rule's id, one of [`rules`] (e.g. `"FIELD_WIRE_COMPATIBLE_TYPE"`).
    pub rule: &'static str,
    /// What changed, naming the service, method, message, field or value.
    pub message: String,
}

impl fmt::Display for Break {
    /// `RULE: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.message)
    }
}

/// Every change from `old` to `new` that can break a peer built from `old`, in rule
/// order (service, methods, messages, enums), each object in name or number order.
/// Empty when `new` is compatible with `old`: new fields with new numbers, new methods,
/// new messages, enums and enum values, renamed fields and values, doc changes.
pub fn breaking_changes(old: &Contract, new: &Contract) -> Vec<Break> {
    let mut out = Breaks::default();
    if old.service != new.service {
        out.add(
            rules::SERVICE_NO_DELETE,
            format!(
                "service `{}` is gone: the contract now names `{}` (clients name the \
                 service in their hello)",
                old.service, new.service
            ),
        );
    }
    check_methods(old, new, &mut out);
    check_messages(old, new, &mut out);
    check_enums(old, new, &mut out);
    out.0
}

#[derive(Default)]
struct Breaks(Vec<Break>);

impl Breaks {
    fn add(&mut self, rule: &'static str, message: String) {
        self.0.push(Break { rule, message });
    }
}

fn check_methods(old: &Contract, new: &Contract, out: &mut Breaks) {
    let mut olds: Vec<_> = old.methods.iter().collect();
    olds.sort_by_key(|m| m.id);
    for was in olds {
        let Some(now) = new.methods.iter().find(|m| m.name == was.name) else {
            out.add(
                rules::RPC_NO_DELETE,
                format!("method `{}` (id {}) was deleted", was.name, was.id),
            );
            continue;
        };
        let name = &was.name;
        if was.id != now.id {
            out.add(
                rules::METHOD_ID_SAME,
                format!("method `{name}` changed id from {} to {}", was.id, now.id),
            );
        }
        if was.request != now.request {
            out.add(
                rules::RPC_SAME_REQUEST_TYPE,
                format!(
                    "method `{name}` changed request type from `{}` to `{}`",
                    was.request, now.request
                ),
            );
        }
        if was.response != now.response {
            out.add(
                rules::RPC_SAME_RESPONSE_TYPE,
                format!(
                    "method `{name}` changed response type from `{}` to `{}`",
                    was.response, now.response
                ),
            );
        }
        if was.server_streaming != now.server_streaming {
            let (from, to) = if was.server_streaming {
                ("server-streaming", "unary")
            } else {
                ("unary", "server-streaming")
            };
            out.add(
                rules::RPC_SAME_SERVER_STREAMING,
                format!("method `{name}` changed from {from} to {to}"),
            );
        }
        if was.idempotent != now.idempotent {
            let (from, to) = if was.idempotent {
                ("idempotent", "not idempotent")
            } else {
                ("not idempotent", "idempotent")
            };
            out.add(
                rules::RPC_SAME_IDEMPOTENCY_LEVEL,
                format!("method `{name}` changed from {from} to {to}"),
            );
        }
    }
    if let Some(was) = old.methods.iter().find(|m| m.bare) {
        let now = new.methods.iter().find(|m| m.bare);
        if now.map(|m| &m.name) != Some(&was.name) {
            let what = match now {
                Some(m) => format!("method `{}` does now", m.name),
                None => "no method does now".to_owned(),
            };
            out.add(
                rules::METHOD_SAME_BARE,
                format!(
                    "method `{}` answered seed-era bare frames; {what}",
                    was.name
                ),
            );
        }
    }
}

/// Every message and enum name the contract refers to (requests, responses, field and
/// map value types).
fn referenced(contract: &Contract) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    for m in &contract.methods {
        names.insert(m.request.as_str());
        names.insert(m.response.as_str());
    }
    for message in &contract.messages {
        for field in &message.fields {
            match field.label {
                Label::Map => {
                    if let Some(value) = &field.map_value {
                        names.insert(value.as_str());
                    }
                }
                _ => {
                    names.insert(field.type_name.as_str());
                }
            }
        }
    }
    names.retain(|n| !is_scalar(n) && *n != crate::schema::NO_MESSAGE);
    names
}

fn check_messages(old: &Contract, new: &Contract, out: &mut Breaks) {
    let in_use = referenced(new);
    let news: BTreeMap<&str, &MessageSchema> = new
        .messages
        .iter()
        .map(|m| (m.full_name.as_str(), m))
        .collect();
    let mut olds: Vec<&MessageSchema> = old.messages.iter().collect();
    olds.sort_by(|a, b| a.full_name.cmp(&b.full_name));
    for was in olds {
        let name = &was.full_name;
        let Some(now) = news.get(name.as_str()) else {
            if in_use.contains(name.as_str()) {
                out.add(
                    rules::MESSAGE_NO_DELETE,
                    format!("message `{name}` was deleted, but the contract still uses it"),
                );
            }
            continue;
        };
        if !was.known {
            continue; // nothing was known to compare with
        }
        if !now.known {
            out.add(
                rules::MESSAGE_SCHEMA_NO_DELETE,
                format!(
                    "message `{name}` no longer has a .proto schema (derived by hand, or its \
                     file descriptor set is no longer given): its fields cannot be checked"
                ),
            );
            continue;
        }
        check_fields(old, new, was, now, out);
        let lost = reserved_lost(&was.reserved_numbers, &now.reserved_numbers);
        let lost_names: Vec<&String> = was
            .reserved_names
            .iter()
            .filter(|n| !now.reserved_names.contains(n))
            .collect();
        if !lost.is_empty() || !lost_names.is_empty() {
            out.add(
                rules::RESERVED_MESSAGE_NO_DELETE,
                format!(
                    "message `{name}` no longer reserves {}",
                    describe_reserved(&lost, &lost_names)
                ),
            );
        }
    }
}

fn check_fields(
    old: &Contract,
    new: &Contract,
    was: &MessageSchema,
    now: &MessageSchema,
    out: &mut Breaks,
) {
    let message = &was.full_name;
    let news: BTreeMap<u32, &FieldSchema> = now.fields.iter().map(|f| (f.number, f)).collect();
    let olds: BTreeMap<u32, &FieldSchema> = was.fields.iter().map(|f| (f.number, f)).collect();
    for (&number, &field) in &olds {
        let Some(&current) = news.get(&number) else {
            if !reserved(&now.reserved_numbers, number) {
                out.add(
                    rules::FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED,
                    format!(
                        "field {number} `{}` of message `{message}` was deleted without \
                         reserving its number (add `reserved {number};`)",
                        field.name
                    ),
                );
            }
            continue;
        };
        let what = if field.name == current.name {
            format!("field {number} `{}` of message `{message}`", field.name)
        } else {
            format!(
                "field {number} `{}` (was `{}`) of message `{message}`",
                current.name, field.name
            )
        };
        if cardinality_group(field.label) != cardinality_group(current.label) {
            out.add(
                rules::FIELD_WIRE_COMPATIBLE_CARDINALITY,
                format!(
                    "{what} changed cardinality from {} to {}",
                    field.label.as_str(),
                    current.label.as_str()
                ),
            );
        } else if let Some(why) = type_change(old, new, field, current) {
            out.add(rules::FIELD_WIRE_COMPATIBLE_TYPE, format!("{what} {why}"));
        }
        if field.oneof != current.oneof {
            let place = |oneof: &Option<String>| match oneof {
                Some(name) => format!("oneof `{name}`"),
                None => "no oneof".to_owned(),
            };
            out.add(
                rules::FIELD_SAME_ONEOF,
                format!(
                    "{what} moved from {} to {}",
                    place(&field.oneof),
                    place(&current.oneof)
                ),
            );
        }
    }
    let required = |fields: &BTreeMap<u32, &FieldSchema>, number: u32| {
        fields
            .get(&number)
            .is_some_and(|f| f.label == Label::Required)
    };
    for (&number, field) in &news {
        if field.label == Label::Required && !olds.contains_key(&number) {
            out.add(
                rules::MESSAGE_SAME_REQUIRED_FIELDS,
                format!(
                    "message `{message}` has a new required field {number} `{}`",
                    field.name
                ),
            );
        }
    }
    for (&number, field) in &olds {
        if required(&olds, number) && !news.contains_key(&number) {
            out.add(
                rules::MESSAGE_SAME_REQUIRED_FIELDS,
                format!(
                    "message `{message}` lost its required field {number} `{}`",
                    field.name
                ),
            );
        }
    }
}

/// buf's cardinality groups for `FIELD_WIRE_COMPATIBLE_CARDINALITY`.
fn cardinality_group(label: Label) -> u8 {
    match label {
        Label::Optional => 1,
        Label::Required => 2,
        Label::Repeated | Label::Map => 3,
    }
}

/// Why `was` -> `now` is not a wire-compatible type change, if it is not.
fn type_change(
    old: &Contract,
    new: &Contract,
    was: &FieldSchema,
    now: &FieldSchema,
) -> Option<String> {
    match (was.label == Label::Map, now.label == Label::Map) {
        (true, true) => {
            let key = |f: &FieldSchema| f.map_key.clone().unwrap_or_default();
            let value = |f: &FieldSchema| f.map_value.clone().unwrap_or_default();
            let bad = |a: &str, b: &str| wire_compatible_type(old, new, a, b).err();
            let why = bad(&key(was), &key(now)).or_else(|| bad(&value(was), &value(now)));
            why.map(|why| {
                format!(
                    "changed type from `{}` to `{}` ({why})",
                    was.type_name, now.type_name
                )
            })
        }
        (false, false) => wire_compatible_type(old, new, &was.type_name, &now.type_name)
            .err()
            .map(|why| {
                format!(
                    "changed type from `{}` to `{}` ({why})",
                    was.type_name, now.type_name
                )
            }),
        _ => Some(format!(
            "changed type from `{}` to `{}` (a map's entries are not checked against a \
             repeated message)",
            was.type_name, now.type_name
        )),
    }
}

/// The wire-compatibility group of a scalar type, after buf's
/// `FIELD_WIRE_COMPATIBLE_TYPE` (itself after the protobuf language guide): varints
/// without zigzag, zigzag varints, 32-bit fixed, 64-bit fixed, double, float; string and
/// bytes are apart (see [`wire_compatible_type`]).
fn scalar_group(type_name: &str) -> Option<&'static str> {
    Some(match type_name {
        "int32" | "int64" | "uint32" | "uint64" | "bool" => "varint",
        "sint32" | "sint64" => "zigzag",
        "fixed32" | "sfixed32" => "fixed32",
        "fixed64" | "sfixed64" => "fixed64",
        "double" => "double",
        "float" => "float",
        "string" => "string",
        "bytes" => "bytes",
        _ => return None,
    })
}

/// Whether a field of type `was` (in contract `old`) may become `now` (in `new`) without
/// breaking the wire, after buf's `FIELD_WIRE_COMPATIBLE_TYPE`:
///
/// - `int32`, `int64`, `uint32`, `uint64`, `bool` are compatible with one another
///   (values out of a type's range are truncated, as in C++);
/// - `sint32` with `sint64`; `fixed32` with `sfixed32`; `fixed64` with `sfixed64`;
/// - `string` may become `bytes`, not the reverse (bytes need not be valid UTF-8);
/// - a message only with the same message (by full name);
/// - an enum with the same enum, or with one of the same short name (moved to another
///   package) that has every (name, number) of the old one;
/// - nothing else (an enum is not an `int32` here, as in buf: values might not match).
///
/// # Errors
///
/// A short explanation when the change is not compatible.
pub fn wire_compatible_type(
    old: &Contract,
    new: &Contract,
    was: &str,
    now: &str,
) -> Result<(), String> {
    if was == now {
        return Ok(());
    }
    match (scalar_group(was), scalar_group(now)) {
        (Some("string"), Some("bytes")) => Ok(()),
        (Some("bytes"), Some("string")) => {
            Err("bytes need not be valid UTF-8, so they may not become a string".into())
        }
        (Some(a), Some(b)) if a == b => Ok(()),
        (Some(_), Some(_)) => Err("different wire encodings".into()),
        (Some(_), None) | (None, Some(_)) => {
            Err("a scalar and a message or enum do not share an encoding".into())
        }
        (None, None) => match (old.enum_schema(was), new.enum_schema(now)) {
            (Some(a), Some(b)) => {
                let short = |n: &str| n.rsplit('.').next().unwrap_or(n).to_owned();
                let subset = a.values.iter().all(|v| {
                    b.values
                        .iter()
                        .any(|w| w.name == v.name && w.number == v.number)
                });
                if short(was) == short(now) && subset {
                    Ok(())
                } else {
                    Err("another enum".into())
                }
            }
            (Some(_), None) | (None, Some(_)) => {
                Err("a message and an enum do not share an encoding".into())
            }
            (None, None) => Err("another message".into()),
        },
    }
}

fn check_enums(old: &Contract, new: &Contract, out: &mut Breaks) {
    let in_use = referenced(new);
    let mut olds: Vec<_> = old.enums.iter().collect();
    olds.sort_by(|a, b| a.full_name.cmp(&b.full_name));
    for was in olds {
        let name = &was.full_name;
        let Some(now) = new.enum_schema(name) else {
            if in_use.contains(name.as_str()) {
                out.add(
                    rules::ENUM_NO_DELETE,
                    format!("enum `{name}` was deleted, but the contract still uses it"),
                );
            }
            continue;
        };
        let numbers: BTreeSet<i32> = now.values.iter().map(|v| v.number).collect();
        let mut reported = BTreeSet::new();
        for value in &was.values {
            let n = value.number;
            if !numbers.contains(&n) && !reserved(&now.reserved_numbers, n) && reported.insert(n) {
                let moved = now
                    .values
                    .iter()
                    .find(|v| v.name == value.name)
                    .map(|v| format!(", now numbered {}", v.number))
                    .unwrap_or_default();
                out.add(
                    rules::ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED,
                    format!(
                        "value {n} `{}` of enum `{name}` was deleted without reserving its \
                         number{moved} (add `reserved {n};`)",
                        value.name
                    ),
                );
            }
        }
        let lost = reserved_lost(&was.reserved_numbers, &now.reserved_numbers);
        let lost_names: Vec<&String> = was
            .reserved_names
            .iter()
            .filter(|n| !now.reserved_names.contains(n))
            .collect();
        if !lost.is_empty() || !lost_names.is_empty() {
            out.add(
                rules::RESERVED_ENUM_NO_DELETE,
                format!(
                    "enum `{name}` no longer reserves {}",
                    describe_reserved(&lost, &lost_names)
                ),
            );
        }
    }
}

/// Whether `number` is in one of the inclusive `ranges`.
fn reserved<T: PartialOrd + Copy>(ranges: &[(T, T)], number: T) -> bool {
    ranges.iter().any(|&(a, b)| a <= number && number <= b)
}

/// The parts of the inclusive ranges `was` that `now` does not cover, as inclusive
/// ranges.
fn reserved_lost<T>(was: &[(T, T)], now: &[(T, T)]) -> Vec<(i64, i64)>
where
    T: Copy + Into<i64>,
{
    let mut cover: Vec<(i64, i64)> = now.iter().map(|&(a, b)| (a.into(), b.into())).collect();
    cover.sort_unstable();
    let mut lost = Vec::new();
    for &(a, b) in was {
        let (mut start, end): (i64, i64) = (a.into(), b.into());
        for &(c, d) in &cover {
            if start > end {
                break;
            }
            if d < start {
                continue;
            }
            if c > start {
                lost.push((start, end.min(c - 1)));
            }
            start = start.max(d.saturating_add(1));
        }
        if start <= end {
            lost.push((start, end));
        }
    }
    lost
}

fn describe_reserved(numbers: &[(i64, i64)], names: &[&String]) -> String {
    let mut parts: Vec<String> = numbers
        .iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a} to {b}")
            }
        })
        .collect();
    parts.extend(names.iter().map(|n| format!("\"{n}\"")));
    parts.join(", ")
}

/// The environment variable that lets [`check_snapshot`] write snapshots: `1` (or
/// `true`, `yes`) writes missing and stale ones, `force` also overwrites one the
/// contract breaks. Unset, empty or `0`: only check.
pub const UPDATE_SNAPSHOTS_ENV: &str = "DAEMONEYE_UPDATE_SNAPSHOTS";

/// What [`check_snapshot_with`] may write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotMode {
    /// Compare only. A missing snapshot is still written, and the check fails once,
    /// so that a new service's snapshot gets created and reviewed.
    Check,
    /// Also rewrite a stale snapshot (compatible differences) and create a missing one
    /// without failing. A snapshot the contract breaks is left alone and fails.
    Update,
    /// Write the snapshot whatever the differences, breaking ones included: for a break
    /// that is intended (no deployed peer relies on the old contract).
    Force,
}

impl SnapshotMode {
    /// The mode [`UPDATE_SNAPSHOTS_ENV`] asks for: `None`, `""` or `"0"` is
    /// [`Check`](Self::Check); `"1"`, `"true"` or `"yes"` is [`Update`](Self::Update);
    /// `"force"` is [`Force`](Self::Force).
    ///
    /// # Errors
    ///
    /// Any other value, so that a typo does not silently check nothing.
    pub fn from_env_value(value: Option<&str>) -> Result<Self, String> {
        match value.map(str::trim) {
            None | Some("" | "0" | "false" | "no") => Ok(SnapshotMode::Check),
            Some("1" | "true" | "yes") => Ok(SnapshotMode::Update),
            Some("force") => Ok(SnapshotMode::Force),
            Some(other) => Err(format!(
                "{UPDATE_SNAPSHOTS_ENV}={other:?} is not understood: use 1 to write new and \
                 stale snapshots, force to also accept breaking changes, or leave it unset"
            )),
        }
    }

    /// The mode the environment asks for (see [`from_env_value`](Self::from_env_value)).
    ///
    /// # Errors
    ///
    /// An unknown value of [`UPDATE_SNAPSHOTS_ENV`].
    pub fn from_env() -> Result<Self, String> {
        let value = std::env::var(UPDATE_SNAPSHOTS_ENV).ok();
        Self::from_env_value(value.as_deref())
    }
}

/// What a snapshot check found (and did), when it passed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SnapshotOutcome {
    /// The snapshot describes the contract exactly.
    Unchanged,
    /// There was no snapshot; it was written ([`SnapshotMode::Update`] or `Force`).
    Created,
    /// The contract differs compatibly from the snapshot, which was left as it is
    /// ([`SnapshotMode::Check`]). The strings say what differs.
    Stale(Vec<String>),
    /// The contract differs compatibly; the snapshot was rewritten.
    Updated(Vec<String>),
    /// The contract breaks the snapshot and [`SnapshotMode::Force`] rewrote it: these
    /// breaks were accepted.
    Forced(Vec<Break>),
}

/// Checks `contract` against its JSON snapshot at `path`, in the mode
/// [`UPDATE_SNAPSHOTS_ENV`] asks for, and says on stderr what a caller should know (a
/// stale or rewritten snapshot, accepted breaks), even from a passing test whose output
/// the harness captures. Call it from a test:
///
/// ```no_run
/// use daemoneye_ipc::reflection::ReflectionClient;
/// let contract = ReflectionClient::DESCRIPTOR.contract().expect("the contract builds");
/// daemoneye_ipc::compat::check_snapshot(&contract, "schema/daemoneye.ipc.Reflection.json")
///     .expect("compatible with the snapshot");
/// ```
///
/// A relative `path` is relative to the current directory, which `cargo test` sets to
/// the package's directory; or use
/// [`assert_contract_snapshot!`](crate::assert_contract_snapshot), which resolves the
/// path against the calling crate's directory whatever the current one.
///
/// - no snapshot: it is written; the check fails once saying so (passes with
///   `DAEMONEYE_UPDATE_SNAPSHOTS=1`);
/// - equal: passes;
/// - compatible differences: passes, and says that the snapshot is stale and how to
///   refresh it (`DAEMONEYE_UPDATE_SNAPSHOTS=1 cargo test`), which rewrites it;
/// - breaking differences: fails with one line per break, `RULE: what changed`; the
///   snapshot is only overwritten with `DAEMONEYE_UPDATE_SNAPSHOTS=force`.
///
/// # Errors
///
/// The failure's explanation, ready to print: breaks, a created snapshot, an unreadable
/// or unparsable snapshot, a file that could not be written, a bad environment value.
pub fn check_snapshot(contract: &Contract, path: impl AsRef<Path>) -> Result<(), String> {
    let path = path.as_ref();
    let mode = SnapshotMode::from_env()?;
    let shown = path.display();
    let text = match check_snapshot_with(contract, path, mode)? {
        SnapshotOutcome::Unchanged => return Ok(()),
        SnapshotOutcome::Created => format!("contract snapshot {shown} created\n"),
        SnapshotOutcome::Stale(changes) => format!(
            "contract snapshot {shown} is stale (compatible changes: {}); refresh it with \
             `{UPDATE_SNAPSHOTS_ENV}=1 cargo test`\n",
            changes.join("; ")
        ),
        SnapshotOutcome::Updated(changes) => {
            format!(
                "contract snapshot {shown} updated ({})\n",
                changes.join("; ")
            )
        }
        SnapshotOutcome::Forced(breaks) => {
            let mut text = format!(
                "contract snapshot {shown} overwritten, accepting {} breaking change(s):\n",
                breaks.len()
            );
            for b in breaks {
                text.push_str(&format!("  {b}\n"));
            }
            text
        }
    };
    // Straight to the process's stderr, not through `eprintln!`: the test harness
    // captures `eprintln!` in a passing test, and a stale snapshot passes.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
    Ok(())
}

/// [`check_snapshot`] in an explicit mode, printing nothing: returns what it found and
/// did.
///
/// # Errors
///
/// As [`check_snapshot`]: the explanation of a failed check.
pub fn check_snapshot_with(
    contract: &Contract,
    path: &Path,
    mode: SnapshotMode,
) -> Result<SnapshotOutcome, String> {
    let mut current = contract.clone();
    current.normalize();
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            write_snapshot(&current, path)?;
            return match mode {
                SnapshotMode::Check => Err(format!(
                    "contract snapshot {} did not exist; it has been written. Review it, add \
                     it to version control, and run the tests again.",
                    path.display()
                )),
                SnapshotMode::Update | SnapshotMode::Force => Ok(SnapshotOutcome::Created),
            };
        }
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let mut snapshot = match Contract::from_json(&text) {
        Ok(snapshot) => snapshot,
        Err(_) if mode == SnapshotMode::Force => {
            write_snapshot(&current, path)?;
            return Ok(SnapshotOutcome::Updated(vec![
                "replaced an unreadable snapshot".into(),
            ]));
        }
        Err(e) => {
            return Err(format!(
                "{} is not a contract snapshot ({e}); to replace it, run \
                 `{UPDATE_SNAPSHOTS_ENV}=force cargo test`",
                path.display()
            ))
        }
    };
    snapshot.normalize();
    if snapshot == current {
        if text != current.to_json() && mode != SnapshotMode::Check {
            write_snapshot(&current, path)?; // same contract, other formatting
        }
        return Ok(SnapshotOutcome::Unchanged);
    }
    let breaks = breaking_changes(&snapshot, &current);
    if breaks.is_empty() {
        let changes = compatible_changes(&snapshot, &current);
        return match mode {
            SnapshotMode::Check => Ok(SnapshotOutcome::Stale(changes)),
            SnapshotMode::Update | SnapshotMode::Force => {
                write_snapshot(&current, path)?;
                Ok(SnapshotOutcome::Updated(changes))
            }
        };
    }
    if mode == SnapshotMode::Force {
        write_snapshot(&current, path)?;
        return Ok(SnapshotOutcome::Forced(breaks));
    }
    let mut message = format!(
        "the contract of `{}` breaks its snapshot {} ({} breaking change{}):\n",
        current.service,
        path.display(),
        breaks.len(),
        if breaks.len() == 1 { "" } else { "s" }
    );
    for b in &breaks {
        message.push_str(&format!("  {b}\n"));
    }
    message.push_str(&format!(
        "Deployed peers built from the snapshot may fail against this build. If the break \
         is intended, accept it with `{UPDATE_SNAPSHOTS_ENV}=force cargo test`."
    ));
    Err(message)
}

/// Writes `contract`'s JSON to `path` (creating its directory), through a temporary
/// file renamed into place, so that a reader never sees half a snapshot.
fn write_snapshot(contract: &Contract, path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, contract.to_json())
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// A short description of each difference between two contracts that break nothing.
fn compatible_changes(old: &Contract, new: &Contract) -> Vec<String> {
    let mut out = Vec::new();
    for m in &new.methods {
        if !old.methods.iter().any(|o| o.name == m.name) {
            out.push(format!("new method `{}`", m.name));
        }
    }
    for m in &new.messages {
        match old.message(&m.full_name) {
            None => out.push(format!("new message `{}`", m.full_name)),
            Some(o) => {
                for f in &m.fields {
                    match o.fields.iter().find(|g| g.number == f.number) {
                        None => out.push(format!(
                            "new field {} `{}` in `{}`",
                            f.number, f.name, m.full_name
                        )),
                        Some(g) if g.name != f.name => out.push(format!(
                            "field {} of `{}` renamed from `{}` to `{}`",
                            f.number, m.full_name, g.name, f.name
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    for e in &new.enums {
        match old.enum_schema(&e.full_name) {
            None => out.push(format!("new enum `{}`", e.full_name)),
            Some(o) => {
                for v in &e.values {
                    if !o.values.iter().any(|w| w.number == v.number) {
                        out.push(format!(
                            "new value {} `{}` in `{}`",
                            v.number, v.name, e.full_name
                        ));
                    }
                }
            }
        }
    }
    if out.is_empty() {
        out.push("docs, reserved ranges or unused types".into());
    }
    out
}

/// Checks a contract against its JSON snapshot from a test, in one line; panics with
/// the explanation when the check fails. The path is relative to the calling crate's
/// directory (`CARGO_MANIFEST_DIR`). See [`check_snapshot`](crate::compat::check_snapshot)
/// for what passes, what fails and the `DAEMONEYE_UPDATE_SNAPSHOTS` variable.
///
/// ```no_run
/// #[test]
/// fn contract_is_compatible() {
///     use daemoneye_ipc::reflection::ReflectionClient;
///     let contract = ReflectionClient::DESCRIPTOR.contract().expect("the contract builds");
///     daemoneye_ipc::assert_contract_snapshot!(contract, "schema/daemoneye.ipc.Reflection.json");
/// }
/// ```
#[macro_export]
macro_rules! assert_contract_snapshot {
    ($contract:expr, $path:expr $(,)?) => {
        if let ::std::result::Result::Err(message) = $crate::compat::check_snapshot(
            &$contract,
            ::std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join($path),
        ) {
            panic!("{}", message);
        }
    };
}
