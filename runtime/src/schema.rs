//! The contract of a service as data: its methods and the full protobuf schema of every
//! message and enum they carry, with the `.proto` file's comments.
//!
//! A [`Contract`] is built once from what the service already has: its method shapes
//! (from `#[ipc_service]`) and the encoded protobuf `FileDescriptorSet`s its messages
//! were generated from (prost-build and protox produce them; keep their source info to
//! keep the comments). Documentation ([`crate::docs`]), introspection, schema snapshots
//! and breaking-change checks ([`crate::compat`]) all read this one structure.
//!
//! Its JSON form (serde) is the snapshot and reflection format. It is deterministic:
//! methods are sorted by id, messages and enums by full name, fields and enum values by
//! number, so equal contracts serialize to equal bytes.
//!
//! Messages derived by hand (`#[derive(prost::Message)]` with no `.proto`) have no
//! schema to read: they appear with [`MessageSchema::known`] `false`, no fields, and a
//! doc saying so. To describe their fields, define them in a `.proto` file, generate
//! them with prost-build (or protox + prost-build) and pass the file descriptor set.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;

use prost_reflect::{
    Cardinality, DescriptorPool, EnumDescriptor, FieldDescriptor, FileDescriptor, Kind,
    MessageDescriptor,
};
use serde::{Deserialize, Serialize};

use crate::descriptor::message_name;

/// The request or response name of a method that takes or returns nothing.
pub const NO_MESSAGE: &str = "()";

/// A service's full contract: its methods and every message and enum they reach.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Contract {
    /// Fully qualified service name, as checked in the handshake, e.g.
    /// `"daemoneye.ProcessCollector"`.
    pub service: String,
    /// The service's doc comment, trimmed (empty when it has none).
    pub doc: String,
    /// The methods, sorted by id.
    pub methods: Vec<MethodContract>,
    /// Every message a method's request or response reaches, transitively through
    /// message fields (nested messages included; map entry messages are not listed,
    /// they are folded into [`Label::Map`] fields), sorted by full name.
    pub messages: Vec<MessageSchema>,
    /// Every enum those messages use, sorted by full name.
    pub enums: Vec<EnumSchema>,
}

/// One method of a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MethodContract {
    /// Wire id (>= 1, unique in its service, stable across releases).
    pub id: u32,
    /// The method's name as written in the trait, e.g. `"enumerate_processes"`.
    pub name: String,
    /// The request message: its protobuf full name (`"daemoneye.v1.ProcessFilter"`)
    /// when the descriptor sets describe it, else the Rust type's name (its last path
    /// segment, `"Ping"`), or [`NO_MESSAGE`] (`"()"`) when the method takes none.
    pub request: String,
    /// The response message, named as [`request`](Self::request) is; for a
    /// server-streaming method, the type of each item of the stream.
    pub response: String,
    /// Whether the server answers with a stream of `response` items.
    pub server_streaming: bool,
    /// Whether a call may safely run twice (`#[ipc(idempotent)]`); only such calls are
    /// retried by a client.
    pub idempotent: bool,
    /// Whether this method also answers seed-era bare request frames (`#[ipc(bare)]`).
    pub bare: bool,
    /// The method's doc comment, trimmed.
    pub doc: String,
}

/// One message's protobuf schema.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MessageSchema {
    /// Protobuf full name (`"daemoneye.v1.ProcessRecord"`; a nested message's includes
    /// its parents, `"pkg.Outer.Inner"`); for a message with no `.proto` schema, the
    /// Rust type's name.
    pub full_name: String,
    /// The message's leading comment in the `.proto` file (or trailing comment when it
    /// has no leading one), trimmed; for a message with no schema, a note saying so.
    pub doc: String,
    /// The fields, sorted by number.
    pub fields: Vec<FieldSchema>,
    /// Reserved field numbers, as inclusive ranges `(first, last)` (`reserved 4, 9 to
    /// 11;` is `[(4, 4), (9, 11)]`), sorted.
    pub reserved_numbers: Vec<(u32, u32)>,
    /// Reserved field names, sorted.
    pub reserved_names: Vec<String>,
    /// `true` when the schema comes from a `.proto` descriptor; `false` for a message
    /// derived by hand, whose fields are unknown (and then `fields` is empty).
    pub known: bool,
}

/// One field of a message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FieldSchema {
    /// Field number (tag) on the wire.
    pub number: u32,
    /// Field name as written in the `.proto` file.
    pub name: String,
    /// The type: a scalar's protobuf name (`"int64"`, `"string"`, `"bytes"`, `"bool"`,
    /// `"double"`, `"fixed32"`...) or a message's or enum's full name; for a map,
    /// `"map<K, V>"` (the key and value are also in [`map_key`](Self::map_key) and
    /// [`map_value`](Self::map_value)).
    pub type_name: String,
    /// Cardinality.
    pub label: Label,
    /// A map's key type (a scalar's name); `None` unless `label` is [`Label::Map`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_key: Option<String>,
    /// A map's value type, named as `type_name` is; `None` unless `label` is
    /// [`Label::Map`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_value: Option<String>,
    /// The oneof the field belongs to, by name; `None` when it is in none (proto3
    /// `optional` fields are in a synthetic oneof, which is not reported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oneof: Option<String>,
    /// The field's leading comment (or trailing comment when it has no leading one),
    /// trimmed.
    pub doc: String,
}

/// A field's cardinality.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Label {
    /// At most one value (proto3 fields, with or without `optional`; proto2 `optional`).
    #[default]
    Optional,
    /// Exactly one value (proto2 `required`).
    Required,
    /// Any number of values (`repeated`).
    Repeated,
    /// A map (`map<K, V>`, on the wire a repeated key/value entry message).
    Map,
}

impl Label {
    /// The label as written in a `.proto` file (`"optional"`, `"required"`,
    /// `"repeated"`, `"map"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Label::Optional => "optional",
            Label::Required => "required",
            Label::Repeated => "repeated",
            Label::Map => "map",
        }
    }
}

/// One enum's protobuf schema.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnumSchema {
    /// Protobuf full name, e.g. `"daemoneye.v1.ProcessState"`.
    pub full_name: String,
    /// The enum's comment in the `.proto` file, trimmed.
    pub doc: String,
    /// The values, sorted by number (then name, for aliases).
    pub values: Vec<EnumValueSchema>,
    /// Reserved value numbers, as inclusive ranges `(first, last)`, sorted.
    pub reserved_numbers: Vec<(i32, i32)>,
    /// Reserved value names, sorted.
    pub reserved_names: Vec<String>,
}

/// One value of an enum.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnumValueSchema {
    /// The value's name, e.g. `"PROCESS_STATE_RUNNING"`.
    pub name: String,
    /// Its number on the wire.
    pub number: i32,
    /// Its comment in the `.proto` file, trimmed.
    pub doc: String,
}

/// Why a contract could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// One of the encoded file descriptor sets could not be decoded or does not hold
    /// together (for instance it refers to a file that no set provides).
    #[error("file descriptor set #{index} is not valid: {message}")]
    InvalidDescriptorSet {
        /// Position of the set in the slice given to [`Contract::build`].
        index: usize,
        /// The decoder's explanation.
        message: String,
    },
    /// A method's type, given by its Rust name, matches several messages of the
    /// descriptor sets, and its path does not tell which.
    #[error(
        "method `{method}`: type `{type_name}` matches several protobuf messages ({}); \
         write more of its path, or its protobuf full name",
        candidates.join(", ")
    )]
    AmbiguousType {
        /// The method.
        method: String,
        /// The type as given.
        type_name: String,
        /// Full names of the messages it matches, sorted.
        candidates: Vec<String>,
    },
    /// Two methods share an id or a name.
    #[error("two methods have the {what} `{value}`")]
    DuplicateMethod {
        /// `"id"` or `"name"`.
        what: &'static str,
        /// The shared id or name.
        value: String,
    },
}

impl Contract {
    /// Builds a service's contract from its methods and the encoded protobuf
    /// `FileDescriptorSet`s its messages come from.
    ///
    /// Each method's `request` and `response` may be given as a protobuf full name
    /// (`"daemoneye.v1.ProcessFilter"`), as a Rust type as written
    /// (`"ProcessFilter"`, `"proto::ProcessFilter"`), or as [`NO_MESSAGE`]. A Rust name
    /// is resolved by its last segment against the messages' names in the sets; when
    /// several messages have that name, the path's other segments must match the end
    /// of exactly one full name (`v1::ProcessFilter` for `daemoneye.v1.ProcessFilter`),
    /// else it is [`SchemaError::AmbiguousType`]. A name that matches nothing is a
    /// message derived by hand: it is kept as its last segment, with
    /// [`MessageSchema::known`] `false`. For a server-streaming method, `response` is
    /// the item type.
    ///
    /// Every message and enum reachable from the methods through fields is collected.
    /// Doc comments come from the sets' source info (absent if it was stripped).
    /// Methods are sorted by id.
    ///
    /// # Errors
    ///
    /// [`SchemaError::InvalidDescriptorSet`] when a set does not decode or does not hold
    /// together, [`SchemaError::AmbiguousType`], [`SchemaError::DuplicateMethod`].
    pub fn build(
        service: &str,
        doc: &str,
        methods: Vec<MethodContract>,
        descriptor_sets: &[&[u8]],
    ) -> Result<Contract, SchemaError> {
        let mut pool = DescriptorPool::new();
        for (index, set) in descriptor_sets.iter().enumerate() {
            pool.decode_file_descriptor_set(*set).map_err(|e| {
                SchemaError::InvalidDescriptorSet {
                    index,
                    message: e.to_string(),
                }
            })?;
        }
        check_unique(&methods)?;

        let mut roots: Vec<MessageDescriptor> = Vec::new();
        let mut unknown: BTreeSet<String> = BTreeSet::new();
        let mut resolved = Vec::with_capacity(methods.len());
        for mut method in methods {
            for name in [&mut method.request, &mut method.response] {
                match resolve(&pool, &method.name, name)? {
                    Resolved::Nothing => *name = NO_MESSAGE.to_owned(),
                    Resolved::Message(message) => {
                        *name = message.full_name().to_owned();
                        roots.push(message);
                    }
                    Resolved::Unknown(rust_name) => {
                        unknown.insert(rust_name.clone());
                        *name = rust_name;
                    }
                }
            }
            resolved.push(method);
        }

        let (messages, enums) = reachable(roots);
        let mut comments = Comments::default();
        let mut contract = Contract {
            service: service.to_owned(),
            doc: doc.trim().to_owned(),
            methods: resolved,
            messages: messages
                .values()
                .map(|m| message_schema(m, &mut comments))
                .chain(unknown.into_iter().map(unknown_message))
                .collect(),
            enums: enums
                .values()
                .map(|e| enum_schema(e, &mut comments))
                .collect(),
        };
        contract.normalize();
        Ok(contract)
    }

    /// Sorts everything into the canonical order: methods by id, messages and enums by
    /// full name, fields by number, enum values by number then name, reserved ranges
    /// and names. [`Contract::build`] returns normalized contracts; call this on one
    /// built by hand before comparing or serializing it.
    pub fn normalize(&mut self) {
        self.methods
            .sort_by(|a, b| (a.id, &a.name).cmp(&(b.id, &b.name)));
        self.messages.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        for message in &mut self.messages {
            message
                .fields
                .sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
            message.reserved_numbers.sort_unstable();
            message.reserved_names.sort();
        }
        self.enums.sort_by(|a, b| a.full_name.cmp(&b.full_name));
        for schema in &mut self.enums {
            schema
                .values
                .sort_by(|a, b| (a.number, &a.name).cmp(&(b.number, &b.name)));
            schema.reserved_numbers.sort_unstable();
            schema.reserved_names.sort();
        }
    }

    /// Fingerprint of the contract's method shapes: the first 8 bytes (big-endian) of
    /// the SHA-256 of `service=<name>\n` followed by, for each method in id order,
    /// `method=<id>:<name>:<request>:<response>\n` (`:stream` before the newline for a
    /// server-streaming method). Request and response are message names: the last
    /// segment of the protobuf full name or Rust path, so spelling a path differently
    /// does not change it. This is the same value as the compiled-in
    /// [`ServiceDescriptor::schema_hash`](crate::ServiceDescriptor::schema_hash) that the
    /// handshake compares. Packages, field layouts, docs and the `idempotent`/`bare`
    /// flags are not part of it: those are [`crate::compat`]'s job (a request moved to
    /// another package is `RPC_SAME_REQUEST_TYPE` there).
    pub fn hash(&self) -> u64 {
        let mut methods: Vec<&MethodContract> = self.methods.iter().collect();
        methods.sort_by_key(|m| m.id);
        let mut text = format!("service={}\n", self.service);
        for m in methods {
            let stream = if m.server_streaming { ":stream" } else { "" };
            let _ = writeln!(
                text,
                "method={}:{}:{}:{}{stream}",
                m.id,
                m.name,
                message_name(&m.request),
                message_name(&m.response)
            );
        }
        let digest = hmac_sha256::Hash::hash(text.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        u64::from_be_bytes(first)
    }

    /// The method with wire id `id`.
    pub fn method(&self, id: u32) -> Option<&MethodContract> {
        self.methods.iter().find(|m| m.id == id)
    }

    /// The message named `full_name`.
    pub fn message(&self, full_name: &str) -> Option<&MessageSchema> {
        self.messages.iter().find(|m| m.full_name == full_name)
    }

    /// The enum named `full_name`.
    pub fn enum_schema(&self, full_name: &str) -> Option<&EnumSchema> {
        self.enums.iter().find(|e| e.full_name == full_name)
    }

    /// The contract as pretty-printed JSON with a final newline: the snapshot format.
    pub fn to_json(&self) -> String {
        let mut json =
            serde_json::to_string_pretty(self).expect("a contract always serializes to JSON");
        json.push('\n');
        json
    }

    /// Reads a contract from its JSON form ([`Contract::to_json`]).
    ///
    /// # Errors
    ///
    /// The JSON parser's error when `json` is not a contract.
    pub fn from_json(json: &str) -> Result<Contract, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// The protobuf names of the scalar types, as [`FieldSchema::type_name`] spells them.
pub const SCALAR_TYPES: [&str; 15] = [
    "double", "float", "int32", "int64", "uint32", "uint64", "sint32", "sint64", "fixed32",
    "fixed64", "sfixed32", "sfixed64", "bool", "string", "bytes",
];

/// Whether `type_name` is a protobuf scalar type (`"int64"`, `"string"`...) rather than a
/// message, enum or map.
pub fn is_scalar(type_name: &str) -> bool {
    SCALAR_TYPES.contains(&type_name)
}

fn check_unique(methods: &[MethodContract]) -> Result<(), SchemaError> {
    let mut ids = BTreeSet::new();
    let mut names = BTreeSet::new();
    for m in methods {
        if !ids.insert(m.id) {
            return Err(SchemaError::DuplicateMethod {
                what: "id",
                value: m.id.to_string(),
            });
        }
        if !names.insert(m.name.as_str()) {
            return Err(SchemaError::DuplicateMethod {
                what: "name",
                value: m.name.clone(),
            });
        }
    }
    Ok(())
}

enum Resolved {
    Nothing,
    Message(MessageDescriptor),
    Unknown(String),
}

/// Finds the message a method names (see [`Contract::build`]).
fn resolve(pool: &DescriptorPool, method: &str, name: &str) -> Result<Resolved, SchemaError> {
    let name = name.trim();
    if name.is_empty() || name == NO_MESSAGE {
        return Ok(Resolved::Nothing);
    }
    let dotted = name.trim_start_matches('.');
    if let Some(message) = pool.get_message_by_name(dotted) {
        return Ok(Resolved::Message(message));
    }
    // A Rust path: `a::b::Msg`, maybe with a leading `::`, `crate::`, `self::`.
    let segments: Vec<&str> = name
        .split("::")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let Some(&last) = segments.last() else {
        return Ok(Resolved::Unknown(name.to_owned()));
    };
    if name.contains('.') {
        // A protobuf full name that the sets do not describe.
        return Ok(Resolved::Unknown(dotted.to_owned()));
    }
    let candidates: Vec<MessageDescriptor> = pool
        .all_messages()
        .filter(|m| !m.is_map_entry() && m.name() == last)
        .collect();
    match candidates.len() {
        0 => Ok(Resolved::Unknown(last.to_owned())),
        1 => Ok(Resolved::Message(
            candidates.into_iter().next().expect("one"),
        )),
        _ => {
            // prost maps package `a.b` to modules `a::b` and a message `Outer`'s nested
            // types to module `outer`: the candidate whose full name ends with the most
            // of the path's segments (compared lowercased, without `_`) wins, if only one
            // does.
            let norm = |s: &str| s.to_lowercase().replace('_', "");
            let path: Vec<String> = segments.iter().map(|s| norm(s)).collect();
            let score = |m: &MessageDescriptor| {
                m.full_name()
                    .split('.')
                    .rev()
                    .zip(path.iter().rev())
                    .take_while(|(f, p)| norm(f) == **p)
                    .count()
            };
            let best = candidates.iter().map(score).max().unwrap_or(0);
            let mut winners = candidates.iter().filter(|m| score(m) == best);
            if let (Some(only), None) = (winners.next(), winners.next()) {
                return Ok(Resolved::Message(only.clone()));
            }
            let mut names: Vec<String> = candidates
                .iter()
                .map(|m| m.full_name().to_owned())
                .collect();
            names.sort();
            Err(SchemaError::AmbiguousType {
                method: method.to_owned(),
                type_name: name.to_owned(),
                candidates: names,
            })
        }
    }
}

/// Every message and enum reachable from `roots` through fields, by full name.
fn reachable(
    roots: Vec<MessageDescriptor>,
) -> (
    BTreeMap<String, MessageDescriptor>,
    BTreeMap<String, EnumDescriptor>,
) {
    let mut messages = BTreeMap::new();
    let mut enums = BTreeMap::new();
    let mut queue: VecDeque<MessageDescriptor> = roots.into();
    while let Some(message) = queue.pop_front() {
        if messages.contains_key(message.full_name()) {
            continue;
        }
        for field in message.fields() {
            let kind = if field.is_map() {
                match field.kind() {
                    Kind::Message(entry) => entry.map_entry_value_field().kind(),
                    other => other,
                }
            } else {
                field.kind()
            };
            match kind {
                Kind::Message(m) => queue.push_back(m),
                Kind::Enum(e) => {
                    enums.entry(e.full_name().to_owned()).or_insert(e);
                }
                _ => {}
            }
        }
        messages.insert(message.full_name().to_owned(), message);
    }
    (messages, enums)
}

fn unknown_message(name: String) -> MessageSchema {
    MessageSchema {
        doc: format!(
            "no .proto schema: `{name}` is derived by hand (`#[derive(prost::Message)]`) or \
             missing from the file descriptor sets given, so its fields are not described. \
             Generate it from a .proto file and pass that file descriptor set to see them."
        ),
        full_name: name,
        fields: Vec::new(),
        reserved_numbers: Vec::new(),
        reserved_names: Vec::new(),
        known: false,
    }
}

fn message_schema(message: &MessageDescriptor, comments: &mut Comments) -> MessageSchema {
    let fields = message
        .fields()
        .map(|f| field_schema(&f, comments))
        .collect();
    MessageSchema {
        full_name: message.full_name().to_owned(),
        doc: comments.get(&message.parent_file(), message.path()),
        fields,
        reserved_numbers: message
            .reserved_ranges()
            .filter(|r| r.end > r.start)
            .map(|r| (r.start, r.end - 1))
            .collect(),
        reserved_names: message.reserved_names().map(str::to_owned).collect(),
        known: true,
    }
}

fn field_schema(field: &FieldDescriptor, comments: &mut Comments) -> FieldSchema {
    let (label, type_name, map_key, map_value) = if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            unreachable!("a map field's kind is its entry message")
        };
        let key = kind_name(&entry.map_entry_key_field().kind());
        let value = kind_name(&entry.map_entry_value_field().kind());
        (
            Label::Map,
            format!("map<{key}, {value}>"),
            Some(key),
            Some(value),
        )
    } else {
        let label = match field.cardinality() {
            Cardinality::Optional => Label::Optional,
            Cardinality::Required => Label::Required,
            Cardinality::Repeated => Label::Repeated,
        };
        (label, kind_name(&field.kind()), None, None)
    };
    FieldSchema {
        number: field.number(),
        name: field.name().to_owned(),
        type_name,
        label,
        map_key,
        map_value,
        oneof: field
            .containing_oneof()
            .filter(|o| !o.is_synthetic())
            .map(|o| o.name().to_owned()),
        doc: comments.get(&field.parent_file(), field.path()),
    }
}

fn enum_schema(schema: &EnumDescriptor, comments: &mut Comments) -> EnumSchema {
    EnumSchema {
        full_name: schema.full_name().to_owned(),
        doc: comments.get(&schema.parent_file(), schema.path()),
        values: schema
            .values()
            .map(|v| EnumValueSchema {
                name: v.name().to_owned(),
                number: v.number(),
                doc: comments.get(&v.parent_file(), v.path()),
            })
            .collect(),
        reserved_numbers: schema
            .reserved_ranges()
            .map(|r| (*r.start(), *r.end()))
            .collect(),
        reserved_names: schema.reserved_names().map(str::to_owned).collect(),
    }
}

/// A type's name as [`FieldSchema::type_name`] spells it.
fn kind_name(kind: &Kind) -> String {
    match kind {
        Kind::Double => "double".into(),
        Kind::Float => "float".into(),
        Kind::Int32 => "int32".into(),
        Kind::Int64 => "int64".into(),
        Kind::Uint32 => "uint32".into(),
        Kind::Uint64 => "uint64".into(),
        Kind::Sint32 => "sint32".into(),
        Kind::Sint64 => "sint64".into(),
        Kind::Fixed32 => "fixed32".into(),
        Kind::Fixed64 => "fixed64".into(),
        Kind::Sfixed32 => "sfixed32".into(),
        Kind::Sfixed64 => "sfixed64".into(),
        Kind::Bool => "bool".into(),
        Kind::String => "string".into(),
        Kind::Bytes => "bytes".into(),
        Kind::Message(m) => m.full_name().to_owned(),
        Kind::Enum(e) => e.full_name().to_owned(),
    }
}

/// The comments of each file's source info, by descriptor path.
#[derive(Default)]
struct Comments {
    by_file: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    /// The comment of the element at `path` in `file`: its leading comment, else its
    /// trailing one, cleaned; empty when there is none.
    fn get(&mut self, file: &FileDescriptor, path: &[i32]) -> String {
        let by_path = self
            .by_file
            .entry(file.name().to_owned())
            .or_insert_with(|| {
                let mut by_path = HashMap::new();
                if let Some(info) = &file.file_descriptor_proto().source_code_info {
                    for location in &info.location {
                        let text = location
                            .leading_comments
                            .as_deref()
                            .map(clean_comment)
                            .filter(|c| !c.is_empty())
                            .or_else(|| {
                                location
                                    .trailing_comments
                                    .as_deref()
                                    .map(clean_comment)
                                    .filter(|c| !c.is_empty())
                            });
                        if let Some(text) = text {
                            by_path.entry(location.path.clone()).or_insert(text);
                        }
                    }
                }
                by_path
            });
        by_path.get(path).cloned().unwrap_or_default()
    }
}

/// A comment as protobuf keeps it (`" Foo.\n Bar.\n"`), with the one space after each
/// `//` removed, trailing spaces removed, and blank lines at either end dropped.
fn clean_comment(raw: &str) -> String {
    let lines: Vec<&str> = raw
        .lines()
        .map(|line| line.strip_prefix(' ').unwrap_or(line).trim_end())
        .collect();
    let start = lines
        .iter()
        .position(|l| !l.is_empty())
        .unwrap_or(lines.len());
    let end = lines
        .iter()
        .rposition(|l| !l.is_empty())
        .map_or(start, |e| e + 1);
    lines[start..end].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_lose_the_space_after_slashes_and_blank_ends() {
        assert_eq!(clean_comment(" Foo.\n  Indented.\n\n"), "Foo.\n Indented.");
        assert_eq!(clean_comment("\n\n"), "");
    }

    #[test]
    fn hash_ignores_method_order_and_docs_but_not_types() {
        let method = |id: u32, name: &str, response: &str| MethodContract {
            id,
            name: name.into(),
            request: "a.Req".into(),
            response: response.into(),
            ..MethodContract::default()
        };
        let contract = |methods: Vec<MethodContract>| Contract {
            service: "a.Svc".into(),
            methods,
            ..Contract::default()
        };
        let one = contract(vec![method(1, "x", "a.R"), method(2, "y", "a.R")]);
        let mut reordered = contract(vec![method(2, "y", "a.R"), method(1, "x", "a.R")]);
        reordered.doc = "changed".into();
        assert_eq!(one.hash(), reordered.hash());
        // The first 8 bytes of SHA-256("service=a.Svc\nmethod=1:x:Req:R\nmethod=2:y:Req:R\n"),
        // big-endian: pinned, so that a change of hashing crate cannot move fingerprints.
        assert_eq!(one.hash(), 0xd83b_71bd_d8f3_b232);
        let other = contract(vec![method(1, "x", "a.Other"), method(2, "y", "a.R")]);
        assert_ne!(one.hash(), other.hash());
        let mut streaming = one.clone();
        streaming.methods[0].server_streaming = true;
        assert_ne!(one.hash(), streaming.hash());
    }
}
