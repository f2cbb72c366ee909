//! Markdown reference documentation of a service, generated from its [`Contract`].
//!
//! [`render_markdown`] writes, in order: the service's name and doc; a table of its
//! methods (id, name, request, response, streaming, idempotent); a section per method
//! with its doc and its request and response; a section per message with a table of
//! fields (number, name, type, label, doc) and per enum with a table of values; the
//! status codes; and a short reference of the wire format.
//!
//! Links between a method and its messages, and from a field to its message or enum
//! type, are anchors computed as GitHub computes a heading's id (see [`anchor`]), so
//! they work when the file is viewed on GitHub (or any renderer using the same rule).
//! The output is deterministic: the same contract gives the same bytes.

use std::collections::HashMap;
use std::fmt::Write as _;

use crate::schema::{Contract, FieldSchema, Label, MessageSchema, NO_MESSAGE};
use crate::Code;

/// Options of [`render_markdown_with`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MarkdownOptions {
    /// Link target of the wire envelope's `.proto` file in the "Wire format" section.
    /// Default: `../../runtime/proto/daemoneye_ipc.proto`, right for a file in
    /// `docs/services/` of the daemoneye-ipc repository; set a URL for documents kept
    /// elsewhere.
    pub envelope_proto_link: String,
}

impl Default for MarkdownOptions {
    fn default() -> Self {
        Self {
            envelope_proto_link: "../../runtime/proto/daemoneye_ipc.proto".to_owned(),
        }
    }
}

/// The service's reference documentation as GitHub-flavoured Markdown, with the default
/// [`MarkdownOptions`].
pub fn render_markdown(contract: &Contract) -> String {
    render_markdown_with(contract, &MarkdownOptions::default())
}

/// [`render_markdown`] with explicit options.
pub fn render_markdown_with(contract: &Contract, options: &MarkdownOptions) -> String {
    let mut contract = contract.clone();
    contract.normalize();
    let outline = Outline::new(&contract);
    let mut out = String::new();
    let r = Renderer {
        contract: &contract,
        outline: &outline,
    };
    r.title(&mut out);
    r.methods(&mut out);
    r.messages(&mut out);
    r.enums(&mut out);
    r.status_codes(&mut out);
    r.wire_format(&mut out, options);
    // One newline at the end, none doubled.
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

/// The id GitHub gives a heading whose text (as rendered, code spans' backticks
/// removed) is `text`: lowercased; letters, digits, `-` and `_` kept; spaces turned
/// into `-`; everything else removed. A document's repeated ids get `-1`, `-2`... in
/// order of appearance ([`render_markdown`] takes care of that).
pub fn anchor(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect()
}

/// Headings of a document, by what they are about, with their unique anchors.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Heading {
    Title,
    Methods,
    Method(String),
    Messages,
    Message(String),
    Enums,
    Enum(String),
    StatusCodes,
    WireFormat,
}

/// The document's headings in order, with the anchors GitHub gives them.
struct Outline {
    anchors: HashMap<Heading, String>,
}

impl Outline {
    fn new(contract: &Contract) -> Self {
        let mut order = vec![Heading::Title];
        if !contract.methods.is_empty() {
            order.push(Heading::Methods);
            order.extend(
                contract
                    .methods
                    .iter()
                    .map(|m| Heading::Method(m.name.clone())),
            );
        }
        if !contract.messages.is_empty() {
            order.push(Heading::Messages);
            order.extend(
                contract
                    .messages
                    .iter()
                    .map(|m| Heading::Message(m.full_name.clone())),
            );
        }
        if !contract.enums.is_empty() {
            order.push(Heading::Enums);
            order.extend(
                contract
                    .enums
                    .iter()
                    .map(|e| Heading::Enum(e.full_name.clone())),
            );
        }
        order.push(Heading::StatusCodes);
        order.push(Heading::WireFormat);

        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut anchors = HashMap::new();
        for heading in order {
            let base = anchor(&heading_text(contract, &heading));
            let mut id = base.clone();
            // GitHub: a repeated id gets -1, -2...; skip ones already taken.
            while seen.contains_key(&id) {
                let n = seen.get_mut(&base).expect("base seen");
                *n += 1;
                id = format!("{base}-{n}");
            }
            seen.insert(id.clone(), 0);
            anchors.insert(heading, id);
        }
        Self { anchors }
    }

    fn anchor(&self, heading: &Heading) -> &str {
        &self.anchors[heading]
    }
}

/// A heading's text as rendered (no Markdown).
fn heading_text(contract: &Contract, heading: &Heading) -> String {
    match heading {
        Heading::Title => contract.service.clone(),
        Heading::Methods => "Methods".into(),
        Heading::Method(name) | Heading::Message(name) | Heading::Enum(name) => name.clone(),
        Heading::Messages => "Messages".into(),
        Heading::Enums => "Enums".into(),
        Heading::StatusCodes => "Status codes".into(),
        Heading::WireFormat => "Wire format".into(),
    }
}

struct Renderer<'a> {
    contract: &'a Contract,
    outline: &'a Outline,
}

impl Renderer<'_> {
    fn link_to(&self, heading: &Heading, text: &str) -> String {
        format!("[`{text}`](#{})", self.outline.anchor(heading))
    }

    /// A type name, linked to its section when the contract describes it.
    fn type_link(&self, name: &str) -> String {
        if name == NO_MESSAGE {
            return "none".into();
        }
        if self.contract.message(name).is_some() {
            self.link_to(&Heading::Message(name.to_owned()), name)
        } else if self.contract.enum_schema(name).is_some() {
            self.link_to(&Heading::Enum(name.to_owned()), name)
        } else {
            format!("`{name}`")
        }
    }

    fn field_type(&self, field: &FieldSchema) -> String {
        match (&field.label, &field.map_key, &field.map_value) {
            (Label::Map, Some(key), Some(value)) => format!(
                "map&lt;{}, {}&gt;",
                self.type_link(key),
                self.type_link(value)
            ),
            _ => self.type_link(&field.type_name),
        }
    }

    fn title(&self, out: &mut String) {
        let c = self.contract;
        let _ = writeln!(out, "# `{}`\n", c.service);
        push_doc(out, &c.doc);
        let _ = writeln!(
            out,
            "Contract hash: `{:016x}`. Generated by daemoneye-ipc from the service's \
             definition; do not edit.\n",
            c.hash()
        );
        if c.methods.is_empty() {
            return;
        }
        out.push_str("| id | method | request | response | streaming | idempotent |\n");
        out.push_str("| ---: | --- | --- | --- | --- | --- |\n");
        for m in &c.methods {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                m.id,
                self.link_to(&Heading::Method(m.name.clone()), &m.name),
                self.type_link(&m.request),
                self.type_link(&m.response),
                yes_no(m.server_streaming),
                yes_no(m.idempotent)
            );
        }
        out.push('\n');
    }

    fn methods(&self, out: &mut String) {
        let c = self.contract;
        if c.methods.is_empty() {
            return;
        }
        out.push_str("## Methods\n\n");
        for m in &c.methods {
            let _ = writeln!(out, "### `{}`\n", m.name);
            push_doc(out, &m.doc);
            let _ = writeln!(out, "- Id: {}", m.id);
            let _ = writeln!(out, "- Request: {}", self.type_link(&m.request));
            if m.server_streaming {
                let _ = writeln!(
                    out,
                    "- Response: a stream of {} items",
                    self.type_link(&m.response)
                );
            } else {
                let _ = writeln!(out, "- Response: {}", self.type_link(&m.response));
            }
            let _ = writeln!(
                out,
                "- Idempotent: {}",
                if m.idempotent {
                    "yes (a client may retry it)"
                } else {
                    "no (a client retries it only if the request provably never left)"
                }
            );
            if m.bare {
                out.push_str(
                    "- Also answers seed-era bare request frames (no envelope, no handshake)\n",
                );
            }
            out.push('\n');
        }
    }

    fn messages(&self, out: &mut String) {
        let c = self.contract;
        if c.messages.is_empty() {
            return;
        }
        out.push_str("## Messages\n\n");
        for m in &c.messages {
            let _ = writeln!(out, "### `{}`\n", m.full_name);
            self.message_body(out, m);
        }
    }

    fn message_body(&self, out: &mut String, m: &MessageSchema) {
        if !m.known {
            let _ = writeln!(out, "_{}_\n", cell(&m.doc));
            return;
        }
        push_doc(out, &m.doc);
        if m.fields.is_empty() {
            out.push_str("No fields.\n\n");
        } else {
            out.push_str("| number | name | type | label | doc |\n");
            out.push_str("| ---: | --- | --- | --- | --- |\n");
            for f in &m.fields {
                let label = match &f.oneof {
                    Some(oneof) => format!("{} (oneof `{oneof}`)", f.label.as_str()),
                    None => f.label.as_str().to_owned(),
                };
                let _ = writeln!(
                    out,
                    "| {} | `{}` | {} | {} | {} |",
                    f.number,
                    f.name,
                    self.field_type(f),
                    label,
                    cell(&f.doc)
                );
            }
            out.push('\n');
        }
        push_reserved(out, &m.reserved_numbers, &m.reserved_names);
    }

    fn enums(&self, out: &mut String) {
        let c = self.contract;
        if c.enums.is_empty() {
            return;
        }
        out.push_str("## Enums\n\n");
        for e in &c.enums {
            let _ = writeln!(out, "### `{}`\n", e.full_name);
            push_doc(out, &e.doc);
            out.push_str("| number | name | doc |\n");
            out.push_str("| ---: | --- | --- |\n");
            for v in &e.values {
                let _ = writeln!(out, "| {} | `{}` | {} |", v.number, v.name, cell(&v.doc));
            }
            out.push('\n');
            push_reserved(out, &e.reserved_numbers, &e.reserved_names);
        }
    }

    fn status_codes(&self, out: &mut String) {
        out.push_str("## Status codes\n\n");
        out.push_str(
            "A call that fails answers a status: a code, numbered as in gRPC, and a message.\n\n",
        );
        out.push_str("| code | name | meaning |\n| ---: | --- | --- |\n");
        for number in 0..=16 {
            if let Ok(code) = Code::try_from(number) {
                let _ = writeln!(
                    out,
                    "| {number} | `{}` | {} |",
                    code.as_str_name(),
                    code_meaning(code)
                );
            }
        }
        out.push('\n');
    }

    fn wire_format(&self, out: &mut String, options: &MarkdownOptions) {
        let _ = write!(
            out,
            "## Wire format\n\n\
             Every frame, in both directions, is \
             `[u32 LE length N][u32 LE CRC32C of the N bytes][N bytes: protobuf Envelope]` \
             (CRC-32/IEEE instead when both ends are configured so). A frame longer than \
             the receiver's limit, of length 0, or with a wrong CRC closes the connection.\n\n\
             The envelope carries a correlation id and one of:\n\n\
             | field | body | direction | meaning |\n\
             | ---: | --- | --- | --- |\n\
             | 15 | `hello` | client to server | first frame: protocol version, service \
             name, contract hash, limits |\n\
             | 14 | `hello_ack` | server to client | the connection is accepted |\n\
             | 2 | `request` | client to server | a call: method id (the table above), \
             time left until its deadline, the encoded request |\n\
             | 3 | `response` | server to client | the call's encoded response |\n\
             | 4 | `status` | server to client | the call failed (see [Status codes](#{})); \
             with correlation id 0, the connection did |\n\
             | 5 | `cancel` | client to server | the caller gave up on the call |\n\
             | 6 | `stream_item` | server to client | one item of a server-streaming call |\n\
             | 7 | `stream_end` | server to client | the stream is over, with an optional \
             status |\n\
             | 8 | `credit` | client to server | the stream's consumer takes more items |\n\
             | 9 | `go_away` | server to client | the server is shutting down |\n\n\
             Every call is answered exactly once (one `response` or `status`, or a stream's \
             items and one `stream_end`) with its correlation id. The envelope is defined, \
             field by field, in [`daemoneye_ipc.proto`]({}); it is enough to write a client \
             in another language.\n",
            self.outline.anchor(&Heading::StatusCodes),
            options.envelope_proto_link
        );
    }
}

fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// A doc comment as a Markdown block, followed by a blank line; nothing when empty.
/// Lines that Markdown would read as headings (`# ...`, or `---`/`===` under a line) are
/// escaped, so that a comment cannot add headings (and shift anchors).
fn push_doc(out: &mut String, doc: &str) {
    let doc = doc.trim();
    if doc.is_empty() {
        return;
    }
    for line in doc.lines() {
        let trimmed = line.trim_start();
        let underline = !trimmed.is_empty()
            && (trimmed.trim_end().chars().all(|c| c == '-')
                || trimmed.trim_end().chars().all(|c| c == '='));
        if trimmed.starts_with('#') || underline {
            out.push('\\');
            out.push_str(trimmed);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.push('\n');
}

fn push_reserved<T: std::fmt::Display + PartialEq>(
    out: &mut String,
    numbers: &[(T, T)],
    names: &[String],
) {
    if numbers.is_empty() && names.is_empty() {
        return;
    }
    let mut parts: Vec<String> = numbers
        .iter()
        .map(|(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a} to {b}")
            }
        })
        .collect();
    parts.extend(names.iter().map(|n| format!("`{n}`")));
    let _ = writeln!(out, "Reserved: {}.\n", parts.join(", "));
}

/// Text fit for one table cell: on one line, with `|` escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// One line on what a status code means in daemoneye-ipc.
fn code_meaning(code: Code) -> &'static str {
    match code {
        Code::Ok => "Success; never sent as a failure.",
        Code::Cancelled => "The caller gave up on the call (it dropped the call's future).",
        Code::Unknown => "An error with no better code (also an unknown code from a newer peer).",
        Code::InvalidArgument => "The request is malformed or has a bad value.",
        Code::DeadlineExceeded => "The call's deadline passed before it finished.",
        Code::NotFound => "Something the request names does not exist.",
        Code::AlreadyExists => "Something the request would create exists already.",
        Code::PermissionDenied => "The caller may not do this (e.g. its peer credentials).",
        Code::ResourceExhausted => "A limit was hit: connections, calls in flight, sizes.",
        Code::FailedPrecondition => {
            "The system is not in a state that allows the call (e.g. a handshake refused)."
        }
        Code::Aborted => "The call was aborted, typically by a conflict.",
        Code::OutOfRange => "A value is past a valid range.",
        Code::Unimplemented => "The method id is not served by this endpoint.",
        Code::Internal => "An invariant broke on the serving side (e.g. a handler panicked).",
        Code::Unavailable => "The service cannot answer now; retrying later may work.",
        Code::DataLoss => "Unrecoverable loss or corruption of data.",
        Code::Unauthenticated => "The caller's identity could not be established.",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anchors_follow_github() {
        assert_eq!(
            anchor("daemoneye.v1.ProcessRecord"),
            "daemoneyev1processrecord"
        );
        assert_eq!(anchor("Status codes"), "status-codes");
        assert_eq!(anchor("enumerate_processes"), "enumerate_processes");
        assert_eq!(anchor("a-b (c)"), "a-b-c");
    }

    #[test]
    fn repeated_headings_get_numbered_anchors() {
        // A method named like a section heading.
        let contract = Contract {
            service: "x.Methods".into(),
            methods: vec![crate::schema::MethodContract {
                id: 1,
                name: "methods".into(),
                request: NO_MESSAGE.into(),
                response: NO_MESSAGE.into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let outline = Outline::new(&contract);
        assert_eq!(outline.anchor(&Heading::Title), "xmethods");
        assert_eq!(outline.anchor(&Heading::Methods), "methods");
        assert_eq!(
            outline.anchor(&Heading::Method("methods".into())),
            "methods-1"
        );
    }

    #[test]
    fn docs_cannot_add_headings() {
        let mut out = String::new();
        push_doc(&mut out, "Intro\n# Not a heading\n---");
        assert_eq!(out, "Intro\n\\# Not a heading\n\\---\n\n");
    }
}
