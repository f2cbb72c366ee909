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

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::iter;

use prost::Message as _;
use prost_types::field_descriptor_proto::{Label as ProtoLabel, Type};
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorProto,
    FileDescriptorSet,
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
        // All decoded first, as the pool borrows them; then added in order, so that the
        // first set that does not decode or does not hold together is the one reported.
        let decoded: Vec<Option<FileDescriptorSet>> = descriptor_sets
            .iter()
            .map(|set| FileDescriptorSet::decode(*set).ok())
            .collect();
        let mut pool = Pool::default();
        for (index, set) in decoded.iter().enumerate() {
            let invalid = |message: String| SchemaError::InvalidDescriptorSet { index, message };
            let set = set
                .as_ref()
                .ok_or_else(|| invalid("failed to decode file descriptor set".to_owned()))?;
            pool.add_set(set).map_err(invalid)?;
        }
        check_unique(&methods)?;

        let mut roots: Vec<usize> = Vec::new();
        let mut unknown: BTreeSet<String> = BTreeSet::new();
        let mut resolved = Vec::with_capacity(methods.len());
        for mut method in methods {
            for name in [&mut method.request, &mut method.response] {
                match resolve(&pool, &method.name, name)? {
                    Resolved::Nothing => *name = NO_MESSAGE.to_owned(),
                    Resolved::Message(message) => {
                        *name = pool.messages[message].full_name.clone();
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

        let (messages, enums) = reachable(&pool, roots);
        let mut comments = Comments::default();
        let mut contract = Contract {
            service: service.to_owned(),
            doc: doc.trim().to_owned(),
            methods: resolved,
            messages: messages
                .values()
                .map(|&m| message_schema(&pool, &pool.messages[m], &mut comments))
                .chain(unknown.into_iter().map(unknown_message))
                .collect(),
            enums: enums
                .values()
                .map(|&e| enum_schema(&pool, &pool.enums[e], &mut comments))
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
    /// Index in [`Pool::messages`].
    Message(usize),
    Unknown(String),
}

/// Finds the message a method names (see [`Contract::build`]).
fn resolve(pool: &Pool, method: &str, name: &str) -> Result<Resolved, SchemaError> {
    let name = name.trim();
    if name.is_empty() || name == NO_MESSAGE {
        return Ok(Resolved::Nothing);
    }
    let dotted = name.trim_start_matches('.');
    if let Some(message) = pool.message_named(dotted) {
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
    let candidates: Vec<usize> = (0..pool.messages.len())
        .filter(|&m| !pool.messages[m].is_map_entry() && pool.messages[m].proto.name() == last)
        .collect();
    match candidates[..] {
        [] => Ok(Resolved::Unknown(last.to_owned())),
        [only] => Ok(Resolved::Message(only)),
        _ => {
            // prost maps package `a.b` to modules `a::b` and a message `Outer`'s nested
            // types to module `outer`: the candidate whose full name ends with the most
            // of the path's segments (compared lowercased, without `_`) wins, if only one
            // does.
            let norm = |s: &str| s.to_lowercase().replace('_', "");
            let path: Vec<String> = segments.iter().map(|s| norm(s)).collect();
            let score = |&m: &usize| {
                pool.messages[m]
                    .full_name
                    .split('.')
                    .rev()
                    .zip(path.iter().rev())
                    .take_while(|(f, p)| norm(f) == **p)
                    .count()
            };
            let best = candidates.iter().map(score).max().unwrap_or(0);
            let mut winners = candidates.iter().filter(|m| score(m) == best);
            if let (Some(&only), None) = (winners.next(), winners.next()) {
                return Ok(Resolved::Message(only));
            }
            let mut names: Vec<String> = candidates
                .iter()
                .map(|&m| pool.messages[m].full_name.clone())
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

/// Every message and enum reachable from `roots` through fields: their indices in
/// [`Pool::messages`] and [`Pool::enums`], by full name.
fn reachable(pool: &Pool, roots: Vec<usize>) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let mut messages = BTreeMap::new();
    let mut enums = BTreeMap::new();
    let mut queue: VecDeque<usize> = roots.into();
    while let Some(index) = queue.pop_front() {
        let message = &pool.messages[index];
        if messages.contains_key(&message.full_name) {
            continue;
        }
        for (field, &field_type) in message.fields() {
            let field_type = match pool.map_types(field, field_type) {
                Some((_, value)) => value,
                None => field_type,
            };
            match field_type {
                FieldType::Message(m) => queue.push_back(m),
                FieldType::Enum(e) => {
                    enums.entry(pool.enums[e].full_name.clone()).or_insert(e);
                }
                FieldType::Scalar(_) => {}
            }
        }
        messages.insert(message.full_name.clone(), index);
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

fn message_schema(pool: &Pool, message: &MessageDef, comments: &mut Comments) -> MessageSchema {
    let file = pool.files[message.file];
    let fields = message
        .fields()
        .enumerate()
        .map(|(k, (field, &field_type))| {
            let doc = comments.get(file, &child_path(&message.path, 2, k));
            field_schema(pool, message.proto, field, field_type, doc)
        })
        .collect();
    MessageSchema {
        full_name: message.full_name.clone(),
        doc: comments.get(file, &message.path),
        fields,
        // The end is exclusive; an empty range is left out. (Bounds are positive in a
        // valid descriptor: a negative one would wrap.)
        reserved_numbers: message
            .proto
            .reserved_range
            .iter()
            .map(|r| (r.start() as u32, r.end() as u32))
            .filter(|(start, end)| end > start)
            .map(|(start, end)| (start, end - 1))
            .collect(),
        reserved_names: message.proto.reserved_name.clone(),
        known: true,
    }
}

/// A field of `message`, of type `field_type`, documented by `doc`.
fn field_schema(
    pool: &Pool,
    message: &DescriptorProto,
    field: &FieldDescriptorProto,
    field_type: FieldType,
    doc: String,
) -> FieldSchema {
    let (label, type_name, map_key, map_value) = match pool.map_types(field, field_type) {
        Some((key, value)) => {
            let key = pool.type_name(key);
            let value = pool.type_name(value);
            (
                Label::Map,
                format!("map<{key}, {value}>"),
                Some(key),
                Some(value),
            )
        }
        None => {
            let label = match field.label() {
                ProtoLabel::Optional => Label::Optional,
                ProtoLabel::Required => Label::Required,
                ProtoLabel::Repeated => Label::Repeated,
            };
            (label, pool.type_name(field_type), None, None)
        }
    };
    FieldSchema {
        // Positive in a valid descriptor (a negative one would wrap).
        number: field.number() as u32,
        name: field.name().to_owned(),
        type_name,
        label,
        map_key,
        map_value,
        oneof: reported_oneof(message, field),
        doc,
    }
}

/// The name of the oneof `field` is in, if it is in one that is not synthetic. A
/// synthetic oneof is the one protobuf gives a proto3 `optional` field: its only field
/// has `proto3_optional`.
fn reported_oneof(message: &DescriptorProto, field: &FieldDescriptorProto) -> Option<String> {
    let oneof = message
        .oneof_decl
        .get(usize::try_from(field.oneof_index?).ok()?)?;
    let mut members = message
        .field
        .iter()
        .filter(|f| f.oneof_index == field.oneof_index);
    let synthetic = matches!(
        (members.next(), members.next()),
        (Some(only), None) if only.proto3_optional()
    );
    (!synthetic).then(|| oneof.name().to_owned())
}

fn enum_schema(pool: &Pool, schema: &EnumDef, comments: &mut Comments) -> EnumSchema {
    let file = pool.files[schema.file];
    EnumSchema {
        full_name: schema.full_name.clone(),
        doc: comments.get(file, &schema.path),
        values: schema
            .proto
            .value
            .iter()
            .enumerate()
            .map(|(k, v)| EnumValueSchema {
                name: v.name().to_owned(),
                number: v.number(),
                doc: comments.get(file, &child_path(&schema.path, 2, k)),
            })
            .collect(),
        reserved_numbers: schema
            .proto
            .reserved_range
            .iter()
            .map(|r| (r.start(), r.end()))
            .collect(),
        reserved_names: schema.proto.reserved_name.clone(),
    }
}

/// The messages and enums of the descriptor sets given to [`Contract::build`], by full
/// name, with each field's type resolved: what a contract reads of the sets. It borrows
/// the decoded sets.
///
/// Full names are protobuf's without the leading `.`: the package, the enclosing
/// messages, the name (`pkg.Outer.Inner`). A file given again (by name) in a later set
/// is skipped unread, even if it differs; the same file name twice in one set is an
/// error.
#[derive(Default)]
struct Pool<'a> {
    /// The files, in the order they were added.
    files: Vec<&'a FileDescriptorProto>,
    /// The index in `files` of each file name.
    file_names: HashMap<&'a str, usize>,
    /// What each full name defines.
    names: HashMap<String, Definition>,
    /// Every message, nested ones and map entries included, in the order they were added.
    messages: Vec<MessageDef<'a>>,
    /// Every enum, nested ones included.
    enums: Vec<EnumDef<'a>>,
}

/// What a full name defines, and in which file (its index in [`Pool::files`]).
struct Definition {
    file: usize,
    kind: DefinitionKind,
}

/// The kinds of names a field's type name may run into. (Fields, oneofs, enum values
/// and methods have full names too, but none is a type or contains one.)
#[derive(Clone, Copy)]
enum DefinitionKind {
    Package,
    Service,
    /// Index in [`Pool::messages`].
    Message(usize),
    /// Index in [`Pool::enums`].
    Enum(usize),
}

/// A message of the pool.
struct MessageDef<'a> {
    full_name: String,
    /// The index in [`Pool::files`] of the file that defines it.
    file: usize,
    /// Its path in the file's source info: `[4, i]`, nested `[4, i, 3, j]`...
    path: Vec<i32>,
    proto: &'a DescriptorProto,
    /// The type of each of `proto.field`, in that order (set when its set is added).
    field_types: Vec<FieldType>,
}

impl MessageDef<'_> {
    /// Its fields with their types, in the order of the descriptor.
    fn fields(&self) -> impl Iterator<Item = (&FieldDescriptorProto, &FieldType)> {
        self.proto.field.iter().zip(&self.field_types)
    }

    /// Whether it is the entry message protobuf generates for a map field.
    fn is_map_entry(&self) -> bool {
        self.proto
            .options
            .as_ref()
            .is_some_and(|options| options.map_entry())
    }

    /// The type of its field numbered `number`.
    fn field_type(&self, number: i32) -> Option<FieldType> {
        self.fields()
            .find(|(field, _)| field.number() == number)
            .map(|(_, &field_type)| field_type)
    }
}

/// An enum of the pool.
struct EnumDef<'a> {
    full_name: String,
    /// The index in [`Pool::files`] of the file that defines it.
    file: usize,
    /// Its path in the file's source info: `[5, i]`, nested `[4, i, 4, j]`...
    path: Vec<i32>,
    proto: &'a EnumDescriptorProto,
}

/// A field's type: a scalar (by its protobuf name), or a message or an enum of the pool
/// (by index).
#[derive(Clone, Copy)]
enum FieldType {
    Scalar(&'static str),
    Message(usize),
    Enum(usize),
}

impl<'a> Pool<'a> {
    /// Adds the files of `set` that the pool does not have yet, and checks that they hold
    /// together: a known syntax, each file and type name defined once, every import
    /// present (in this set or an earlier one), every field's type found. What a
    /// protobuf compiler checks and a contract does not depend on is not checked again:
    /// field numbers and names, enum values, defaults, options, methods' types, whether
    /// a file imports the file of each type it uses.
    ///
    /// # Errors
    ///
    /// The first problem found, in the words of `prost-reflect` (whose `DescriptorPool`
    /// did this before).
    fn add_set(&mut self, set: &'a FileDescriptorSet) -> Result<(), String> {
        let new_files: Vec<&'a FileDescriptorProto> = set
            .file
            .iter()
            .filter(|file| !self.file_names.contains_key(file.name()))
            .collect();
        let (first_file, first_message) = (self.files.len(), self.messages.len());
        // Every name of the set first: a file may use the types of a file after it.
        for file in new_files {
            self.add_file(file)?;
        }
        for file in first_file..self.files.len() {
            self.check_imports(file)?;
            for message in first_message..self.messages.len() {
                if self.messages[message].file == file {
                    self.resolve_fields(message)?;
                }
            }
        }
        Ok(())
    }

    /// Names a file, its package, messages, enums and services.
    fn add_file(&mut self, file: &'a FileDescriptorProto) -> Result<(), String> {
        if let Some(syntax) = file.syntax.as_deref() {
            if syntax != "proto2" && syntax != "proto3" {
                return Err(format!("unknown syntax '{syntax}'"));
            }
        }
        let index = self.files.len();
        if self.file_names.insert(file.name(), index).is_some() {
            return Err(format!(
                "a different file named '{}' has already been added",
                file.name()
            ));
        }
        self.files.push(file);
        let package = file.package();
        if !package.is_empty() {
            // `a.b.c` defines the packages `a`, `a.b` and `a.b.c`.
            let ends = package.match_indices('.').map(|(end, _)| end);
            for end in ends.chain(iter::once(package.len())) {
                self.define(&package[..end], index, DefinitionKind::Package)?;
            }
        }
        for (i, message) in file.message_type.iter().enumerate() {
            self.add_message(index, package, child_path(&[], 4, i), message)?;
        }
        for (i, enum_type) in file.enum_type.iter().enumerate() {
            self.add_enum(index, package, child_path(&[], 5, i), enum_type)?;
        }
        for service in &file.service {
            let full_name = qualify(package, service.name());
            self.define(&full_name, index, DefinitionKind::Service)?;
        }
        Ok(())
    }

    /// Names a message of `file` in `scope`, then its nested messages and enums.
    fn add_message(
        &mut self,
        file: usize,
        scope: &str,
        path: Vec<i32>,
        proto: &'a DescriptorProto,
    ) -> Result<(), String> {
        let full_name = qualify(scope, proto.name());
        self.define(
            &full_name,
            file,
            DefinitionKind::Message(self.messages.len()),
        )?;
        self.messages.push(MessageDef {
            full_name: full_name.clone(),
            file,
            path: path.clone(),
            proto,
            field_types: Vec::new(),
        });
        for (j, nested) in proto.nested_type.iter().enumerate() {
            self.add_message(file, &full_name, child_path(&path, 3, j), nested)?;
        }
        for (j, nested) in proto.enum_type.iter().enumerate() {
            self.add_enum(file, &full_name, child_path(&path, 4, j), nested)?;
        }
        Ok(())
    }

    /// Names an enum of `file` in `scope`.
    fn add_enum(
        &mut self,
        file: usize,
        scope: &str,
        path: Vec<i32>,
        proto: &'a EnumDescriptorProto,
    ) -> Result<(), String> {
        let full_name = qualify(scope, proto.name());
        self.define(&full_name, file, DefinitionKind::Enum(self.enums.len()))?;
        self.enums.push(EnumDef {
            full_name,
            file,
            path,
            proto,
        });
        Ok(())
    }

    /// Records that `full_name` is defined in `file`: an error if something else already
    /// is (several files may share a package).
    fn define(&mut self, full_name: &str, file: usize, kind: DefinitionKind) -> Result<(), String> {
        let first = match self.names.entry(full_name.to_owned()) {
            Entry::Vacant(entry) => {
                entry.insert(Definition { file, kind });
                return Ok(());
            }
            Entry::Occupied(entry) => entry.into_mut(),
        };
        if matches!(
            (first.kind, kind),
            (DefinitionKind::Package, DefinitionKind::Package)
        ) {
            Ok(())
        } else if first.file == file {
            Err(format!("name '{full_name}' is defined twice"))
        } else {
            Err(format!(
                "name '{full_name}' is already defined in file '{}'",
                self.files[first.file].name()
            ))
        }
    }

    /// Checks that every file `file` imports has been added.
    fn check_imports(&self, file: usize) -> Result<(), String> {
        match self.files[file]
            .dependency
            .iter()
            .find(|name| !self.file_names.contains_key(name.as_str()))
        {
            Some(missing) => Err(format!("imported file '{missing}' has not been added")),
            None => Ok(()),
        }
    }

    /// Finds the type of each field of `message`, and checks its oneof.
    fn resolve_fields(&mut self, message: usize) -> Result<(), String> {
        let MessageDef {
            full_name,
            path,
            proto,
            ..
        } = &self.messages[message];
        let mut field_types = Vec::with_capacity(proto.field.len());
        for (k, field) in proto.field.iter().enumerate() {
            let field_type = match field.type_name() {
                "" => scalar_name(field.r#type())
                    .map(FieldType::Scalar)
                    .ok_or_else(|| {
                        // `type_name` (field 6) is required for a message or enum field.
                        let mut type_name_path = child_path(path, 2, k);
                        type_name_path.push(6);
                        format!("missing required field at {type_name_path:?}")
                    })?,
                type_name => {
                    self.resolve_type_name(&qualify(full_name, field.name()), type_name)?
                }
            };
            field_types.push(field_type);
            let oneofs = proto.oneof_decl.len();
            if field
                .oneof_index
                .is_some_and(|i| usize::try_from(i).map_or(true, |i| i >= oneofs))
            {
                return Err("invalid oneof index".to_owned());
            }
        }
        self.messages[message].field_types = field_types;
        Ok(())
    }

    /// The message or enum that a field's `type_name` names, found as protobuf finds it:
    /// a name with a leading `.` is a full name; another is relative to `scope` (the
    /// field's full name) and is looked up from there outwards, in the innermost scope
    /// that defines its first segment.
    fn resolve_type_name(&self, scope: &str, type_name: &str) -> Result<FieldType, String> {
        let not_defined = || format!("name '{type_name}' is not defined");
        if let Some(full_name) = type_name.strip_prefix('.') {
            return self
                .type_named(full_name)
                .unwrap_or_else(|| Err(not_defined()));
        }
        let first_segment = type_name.split('.').next().unwrap_or(type_name);
        let mut first_error = None;
        let scopes = iter::once(scope)
            .chain(scope.rmatch_indices('.').map(|(end, _)| &scope[..end]))
            .chain(iter::once(""));
        for parent in scopes {
            if first_segment == type_name {
                match self.type_named(&qualify(parent, type_name)) {
                    Some(Ok(found)) => return Ok(found),
                    Some(Err(error)) => first_error = first_error.or(Some(error)),
                    None => {}
                }
            } else if self.names.contains_key(&qualify(parent, first_segment)) {
                let full_name = qualify(parent, type_name);
                return self.type_named(&full_name).unwrap_or_else(|| {
                    Err(format!(
                        "'{type_name}' resolves to '{full_name}', which is not defined"
                    ))
                });
            }
        }
        Err(first_error.unwrap_or_else(not_defined))
    }

    /// The type named `full_name`: `None` when nothing has that name, an error when what
    /// has it is not a message or an enum.
    fn type_named(&self, full_name: &str) -> Option<Result<FieldType, String>> {
        Some(match self.names.get(full_name)?.kind {
            DefinitionKind::Message(m) => Ok(FieldType::Message(m)),
            DefinitionKind::Enum(e) => Ok(FieldType::Enum(e)),
            DefinitionKind::Package | DefinitionKind::Service => {
                Err(format!("'{full_name}' is not a message or enum type"))
            }
        })
    }

    /// The index of the message named `full_name` (map entries included).
    fn message_named(&self, full_name: &str) -> Option<usize> {
        match self.names.get(full_name)?.kind {
            DefinitionKind::Message(m) => Some(m),
            _ => None,
        }
    }

    /// A map field's key and value types; `None` unless `field` is a repeated field of a
    /// map entry message (whose key is field 1, its value field 2).
    fn map_types(
        &self,
        field: &FieldDescriptorProto,
        field_type: FieldType,
    ) -> Option<(FieldType, FieldType)> {
        let FieldType::Message(entry) = field_type else {
            return None;
        };
        let entry = &self.messages[entry];
        if field.label() != ProtoLabel::Repeated || !entry.is_map_entry() {
            return None;
        }
        Some((entry.field_type(1)?, entry.field_type(2)?))
    }

    /// A type's name as [`FieldSchema::type_name`] spells it.
    fn type_name(&self, field_type: FieldType) -> String {
        match field_type {
            FieldType::Scalar(name) => name.to_owned(),
            FieldType::Message(m) => self.messages[m].full_name.clone(),
            FieldType::Enum(e) => self.enums[e].full_name.clone(),
        }
    }
}

/// The protobuf name of a scalar type; `None` for a message, group or enum.
fn scalar_name(scalar: Type) -> Option<&'static str> {
    Some(match scalar {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int32 => "int32",
        Type::Int64 => "int64",
        Type::Uint32 => "uint32",
        Type::Uint64 => "uint64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Fixed32 => "fixed32",
        Type::Fixed64 => "fixed64",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Group | Type::Message | Type::Enum => return None,
    })
}

/// `name` in `scope`: `scope.name`, or `name` in the root scope (`""`).
fn qualify(scope: &str, name: &str) -> String {
    if scope.is_empty() {
        name.to_owned()
    } else {
        format!("{scope}.{name}")
    }
}

/// The source-info path of the `index`th element of the repeated field numbered `field`
/// of the element at `parent`.
fn child_path(parent: &[i32], field: i32, index: usize) -> Vec<i32> {
    let mut path = parent.to_vec();
    // Source-info paths are `i32`s: no descriptor holds 2^31 elements of one kind.
    path.extend([field, index as i32]);
    path
}

/// The comments of each file's source info, by descriptor path.
#[derive(Default)]
struct Comments {
    by_file: HashMap<String, HashMap<Vec<i32>, String>>,
}

impl Comments {
    /// The comment of the element at `path` in `file`: its leading comment, else its
    /// trailing one, cleaned; empty when there is none.
    fn get(&mut self, file: &FileDescriptorProto, path: &[i32]) -> String {
        let by_path = self
            .by_file
            .entry(file.name().to_owned())
            .or_insert_with(|| {
                let mut by_path = HashMap::new();
                if let Some(info) = &file.source_code_info {
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
