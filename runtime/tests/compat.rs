//! Breaking-change detection: one test per rule, each from a real `.proto` edit where a
//! `.proto` can express it, and the changes that must pass.

mod contract_support;

use contract_support::{compile, method};
use daemoneye_ipc::compat::{breaking_changes, rules, Break};
use daemoneye_ipc::schema::{Contract, MethodContract};

/// The old contract's `.proto`; each test edits it.
const BASE: &str = r#"syntax = "proto3";
package c.v1;

// A request.
message Req {
  string name = 1;
  uint32 limit = 2;
  repeated string tags = 3;
  Kind kind = 4;
  oneof pick {
    string a = 5;
    string b = 6;
  }
  Item item = 7;
  map<string, int64> counts = 8;
  sint32 delta = 9;
  fixed32 flags = 10;
  string text = 11;
  bytes blob = 12;
  reserved 20, 30 to 39;
  reserved "old";
}

message Resp {
  repeated Item items = 1;
}

message Item {
  int64 id = 1;
}

enum Kind {
  KIND_UNSPECIFIED = 0;
  KIND_A = 1;
  KIND_B = 2;
  reserved 9;
  reserved "KIND_OLD";
}
"#;

fn methods() -> Vec<MethodContract> {
    let mut get = method(1, "get", "Req", "Resp");
    get.idempotent = true;
    let mut watch = method(2, "watch", "Req", "Item");
    watch.server_streaming = true;
    let mut seed = method(3, "seed", "Req", "Resp");
    seed.bare = true;
    vec![get, watch, seed]
}

fn build(proto: &str, methods: Vec<MethodContract>) -> Contract {
    Contract::build("c.Svc", "", methods, &[&compile(proto)]).expect("contract")
}

fn old() -> Contract {
    build(BASE, methods())
}

/// `BASE` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no {from:?}");
    BASE.replacen(from, to, 1)
}

fn breaks_of(new: &Contract) -> Vec<Break> {
    breaking_changes(&old(), new)
}

/// The rules broken by `new` (against `old()`), each once, in report order.
fn rules_of(new: &Contract) -> Vec<&'static str> {
    let mut rules: Vec<&'static str> = breaks_of(new).iter().map(|b| b.rule).collect();
    rules.dedup();
    rules
}

fn assert_breaks(new: &Contract, rule: &str, needle: &str) {
    let breaks = breaks_of(new);
    assert!(
        breaks
            .iter()
            .any(|b| b.rule == rule && b.to_string().contains(needle)),
        "expected {rule} mentioning {needle:?}, got {breaks:#?}"
    );
}

fn assert_compatible(new: &Contract) {
    let breaks = breaks_of(new);
    assert!(breaks.is_empty(), "expected no break, got {breaks:#?}");
}

// ---- compatible changes ----

#[test]
fn the_same_contract_breaks_nothing() {
    assert_compatible(&old());
}

#[test]
fn a_new_field_with_a_new_number_is_compatible() {
    assert_compatible(&build(
        &edit("message Item {\n", "message Item {\n  string label = 2;\n"),
        methods(),
    ));
}

#[test]
fn a_new_method_is_compatible() {
    let mut more = methods();
    more.push(method(4, "count", "()", "Item"));
    assert_compatible(&build(BASE, more));
}

#[test]
fn a_new_enum_value_is_compatible() {
    assert_compatible(&build(
        &edit("KIND_B = 2;", "KIND_B = 2;\n  KIND_C = 3;"),
        methods(),
    ));
}

#[test]
fn doc_changes_are_compatible() {
    let proto = edit("// A request.", "// A request, said otherwise.\n// Twice.");
    let mut methods = methods();
    methods[0].doc = "New words.".into();
    let mut new = build(&proto, methods);
    new.doc = "A service.".into();
    assert_ne!(new, old());
    assert_compatible(&new);
}

#[test]
fn a_renamed_field_or_enum_value_is_compatible_on_the_wire() {
    // buf's WIRE category allows it (names are not on the wire); WIRE_JSON would not,
    // as JSON uses names, and daemoneye-ipc speaks binary protobuf only.
    let proto = edit("string name = 1;", "string title = 1;").replace("KIND_A", "KIND_FIRST");
    assert_compatible(&build(&proto, methods()));
}

#[test]
fn a_deleted_field_whose_number_is_reserved_is_compatible() {
    assert_compatible(&build(&edit("uint32 limit = 2;", "reserved 2;"), methods()));
}

#[test]
fn wire_compatible_type_changes_pass() {
    for (from, to) in [
        ("uint32 limit = 2;", "uint64 limit = 2;"),
        ("uint32 limit = 2;", "int32 limit = 2;"),
        ("uint32 limit = 2;", "bool limit = 2;"),
        ("sint32 delta = 9;", "sint64 delta = 9;"),
        ("fixed32 flags = 10;", "sfixed32 flags = 10;"),
        ("string text = 11;", "bytes text = 11;"),
        (
            "map<string, int64> counts = 8;",
            "map<string, uint64> counts = 8;",
        ),
        ("string name = 1;", "optional string name = 1;"),
    ] {
        let new = build(&edit(from, to), methods());
        assert!(
            breaks_of(&new).is_empty(),
            "{from} -> {to}: {:#?}",
            breaks_of(&new)
        );
    }
}

#[test]
fn an_enum_moved_to_another_package_with_all_its_values_is_compatible() {
    // buf: an enum of the same short name that keeps every value is the same enum.
    let mut new = old();
    for e in &mut new.enums {
        e.full_name = "c.v2.Kind".into();
    }
    for m in &mut new.messages {
        for f in &mut m.fields {
            if f.type_name == "c.v1.Kind" {
                f.type_name = "c.v2.Kind".into();
            }
        }
    }
    assert_compatible(&new);
}

#[test]
fn adding_a_bare_entry_point_is_compatible() {
    let mut methods = methods();
    methods[2].bare = false;
    let before = build(BASE, methods.clone());
    methods[0].bare = true;
    assert!(breaking_changes(&before, &build(BASE, methods)).is_empty());
}

// ---- one test per rule ----

#[test]
fn service_renamed_breaks_service_no_delete() {
    let mut new = old();
    new.service = "c.Other".into();
    assert_eq!(rules_of(&new), [rules::SERVICE_NO_DELETE]);
    assert_breaks(&new, rules::SERVICE_NO_DELETE, "`c.Svc` is gone");
}

#[test]
fn method_deleted_breaks_rpc_no_delete() {
    let mut methods = methods();
    methods.remove(0);
    let new = build(BASE, methods);
    assert_eq!(rules_of(&new), [rules::RPC_NO_DELETE]);
    assert_breaks(
        &new,
        rules::RPC_NO_DELETE,
        "method `get` (id 1) was deleted",
    );
}

#[test]
fn method_renamed_breaks_rpc_no_delete() {
    let mut methods = methods();
    methods[0].name = "fetch".into();
    assert_breaks(&build(BASE, methods), rules::RPC_NO_DELETE, "`get`");
}

#[test]
fn method_id_changed_breaks_method_id_same() {
    let mut methods = methods();
    methods[0].id = 7;
    let new = build(BASE, methods);
    assert_eq!(rules_of(&new), [rules::METHOD_ID_SAME]);
    assert_breaks(&new, rules::METHOD_ID_SAME, "`get` changed id from 1 to 7");
}

#[test]
fn request_type_changed_breaks_rpc_same_request_type() {
    let mut methods = methods();
    methods[0].request = "Item".into();
    let new = build(BASE, methods);
    assert_eq!(rules_of(&new), [rules::RPC_SAME_REQUEST_TYPE]);
    assert_breaks(
        &new,
        rules::RPC_SAME_REQUEST_TYPE,
        "from `c.v1.Req` to `c.v1.Item`",
    );
}

#[test]
fn response_type_changed_breaks_rpc_same_response_type() {
    let mut methods = methods();
    methods[1].response = "Resp".into();
    let new = build(BASE, methods);
    assert_eq!(rules_of(&new), [rules::RPC_SAME_RESPONSE_TYPE]);
    assert_breaks(&new, rules::RPC_SAME_RESPONSE_TYPE, "`watch`");
}

#[test]
fn streaming_changed_breaks_rpc_same_server_streaming() {
    let mut methods = methods();
    methods[1].server_streaming = false;
    let new = build(BASE, methods);
    assert_eq!(rules_of(&new), [rules::RPC_SAME_SERVER_STREAMING]);
    assert_breaks(
        &new,
        rules::RPC_SAME_SERVER_STREAMING,
        "from server-streaming to unary",
    );
}

#[test]
fn idempotency_changed_breaks_rpc_same_idempotency_level() {
    let mut methods = methods();
    methods[0].idempotent = false;
    let new = build(BASE, methods);
    assert_eq!(rules_of(&new), [rules::RPC_SAME_IDEMPOTENCY_LEVEL]);
    assert_breaks(
        &new,
        rules::RPC_SAME_IDEMPOTENCY_LEVEL,
        "from idempotent to not idempotent",
    );
}

#[test]
fn bare_entry_point_moved_or_removed_breaks_method_same_bare() {
    let mut moved = methods();
    moved[2].bare = false;
    moved[0].bare = true;
    assert_breaks(
        &build(BASE, moved),
        rules::METHOD_SAME_BARE,
        "`seed` answered seed-era bare frames; method `get` does now",
    );
    let mut removed = methods();
    removed[2].bare = false;
    let new = build(BASE, removed);
    assert_eq!(rules_of(&new), [rules::METHOD_SAME_BARE]);
}

#[test]
fn message_deleted_while_still_used_breaks_message_no_delete() {
    let mut new = old();
    new.messages.retain(|m| m.full_name != "c.v1.Item");
    assert_eq!(rules_of(&new), [rules::MESSAGE_NO_DELETE]);
    assert_breaks(&new, rules::MESSAGE_NO_DELETE, "`c.v1.Item` was deleted");
}

#[test]
fn message_no_longer_used_may_go() {
    // `Req.item` deleted (number reserved) and `Resp.items` retyped... keep it simple:
    // a message only a deleted, reserved field used leaves the contract silently.
    let proto = BASE
        .replace("Item item = 7;", "reserved 7;")
        .replace("repeated Item items = 1;", "reserved 1;");
    let mut methods = methods();
    methods[1].response = "Resp".into();
    let new = build(&proto, methods);
    assert!(new.message("c.v1.Item").is_none());
    // Only the response change of `watch` is reported, not the message's absence.
    assert_eq!(rules_of(&new), [rules::RPC_SAME_RESPONSE_TYPE]);
}

#[test]
fn message_schema_lost_breaks_message_schema_no_delete() {
    let mut new = old();
    let item = new
        .messages
        .iter_mut()
        .find(|m| m.full_name == "c.v1.Item")
        .expect("Item");
    item.known = false;
    item.fields.clear();
    assert_eq!(rules_of(&new), [rules::MESSAGE_SCHEMA_NO_DELETE]);
}

#[test]
fn field_deleted_without_reserving_breaks_field_no_delete_unless_number_reserved() {
    let new = build(&edit("uint32 limit = 2;\n", ""), methods());
    assert_eq!(
        rules_of(&new),
        [rules::FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED]
    );
    assert_breaks(
        &new,
        rules::FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED,
        "field 2 `limit` of message `c.v1.Req` was deleted without reserving its number \
         (add `reserved 2;`)",
    );
    // Reserving the name only is not enough on the wire.
    let named = build(&edit("uint32 limit = 2;", "reserved \"limit\";"), methods());
    assert_eq!(
        rules_of(&named),
        [rules::FIELD_NO_DELETE_UNLESS_NUMBER_RESERVED]
    );
}

#[test]
fn field_type_changed_breaks_field_wire_compatible_type() {
    for (from, to) in [
        ("uint32 limit = 2;", "string limit = 2;"),
        ("uint32 limit = 2;", "sint32 limit = 2;"),
        ("uint32 limit = 2;", "fixed32 limit = 2;"),
        ("sint32 delta = 9;", "int32 delta = 9;"),
        ("fixed32 flags = 10;", "fixed64 flags = 10;"),
        ("fixed32 flags = 10;", "float flags = 10;"),
        ("bytes blob = 12;", "string blob = 12;"),
        ("Kind kind = 4;", "int32 kind = 4;"),
        ("Item item = 7;", "Resp item = 7;"),
        (
            "map<string, int64> counts = 8;",
            "map<string, string> counts = 8;",
        ),
        (
            "map<string, int64> counts = 8;",
            "map<int32, int64> counts = 8;",
        ),
    ] {
        let new = build(&edit(from, to), methods());
        assert_eq!(
            rules_of(&new),
            [rules::FIELD_WIRE_COMPATIBLE_TYPE],
            "{from} -> {to}"
        );
    }
    assert_breaks(
        &build(&edit("bytes blob = 12;", "string blob = 12;"), methods()),
        rules::FIELD_WIRE_COMPATIBLE_TYPE,
        "field 12 `blob` of message `c.v1.Req` changed type from `bytes` to `string`",
    );
}

#[test]
fn field_number_reused_with_another_type_breaks_field_wire_compatible_type() {
    let proto = edit("string name = 1;", "Item owner = 1;");
    assert_breaks(
        &build(&proto, methods()),
        rules::FIELD_WIRE_COMPATIBLE_TYPE,
        "field 1 `owner` (was `name`) of message `c.v1.Req` changed type from `string` to \
         `c.v1.Item`",
    );
}

#[test]
fn cardinality_changed_breaks_field_wire_compatible_cardinality() {
    for (from, to) in [
        // A packable scalar: packed repeated data does not parse as a singular field.
        ("uint32 limit = 2;", "repeated uint32 limit = 2;"),
        // Length-delimited: parses, but a singular reader keeps only the last element.
        ("repeated string tags = 3;", "string tags = 3;"),
        ("Item item = 7;", "repeated Item item = 7;"),
        ("map<string, int64> counts = 8;", "int64 counts = 8;"),
    ] {
        let new = build(&edit(from, to), methods());
        assert_eq!(
            rules_of(&new),
            [rules::FIELD_WIRE_COMPATIBLE_CARDINALITY],
            "{from} -> {to}"
        );
    }
    assert_breaks(
        &build(
            &edit("uint32 limit = 2;", "repeated uint32 limit = 2;"),
            methods(),
        ),
        rules::FIELD_WIRE_COMPATIBLE_CARDINALITY,
        "changed cardinality from optional to repeated",
    );
}

#[test]
fn oneof_membership_changed_breaks_field_same_oneof() {
    let out = edit("    string b = 6;\n  }\n", "  }\n  string b = 6;\n");
    let new = build(&out, methods());
    assert_eq!(rules_of(&new), [rules::FIELD_SAME_ONEOF]);
    assert_breaks(
        &new,
        rules::FIELD_SAME_ONEOF,
        "moved from oneof `pick` to no oneof",
    );
    let into = edit("  string name = 1;\n", "")
        .replace("oneof pick {\n", "oneof pick {\n    string name = 1;\n");
    assert_breaks(
        &build(&into, methods()),
        rules::FIELD_SAME_ONEOF,
        "moved from no oneof to oneof `pick`",
    );
    let renamed = edit("oneof pick {", "oneof choice {");
    assert_breaks(
        &build(&renamed, methods()),
        rules::FIELD_SAME_ONEOF,
        "from oneof `pick` to oneof `choice`",
    );
}

const PROTO2: &str = r#"syntax = "proto2";
package p.v1;
message R {
  optional string a = 1;
  required int32 b = 2;
}
"#;

#[test]
fn required_fields_added_or_removed_break_message_same_required_fields() {
    let build2 = |proto: &str| {
        Contract::build(
            "p.Svc",
            "",
            vec![method(1, "get", "R", "R")],
            &[&compile(proto)],
        )
        .expect("contract")
    };
    let old = build2(PROTO2);
    let added = build2(&PROTO2.replace("}\n", "  required int64 c = 3;\n}\n"));
    let breaks = breaking_changes(&old, &added);
    assert_eq!(breaks.len(), 1, "{breaks:#?}");
    assert_eq!(breaks[0].rule, rules::MESSAGE_SAME_REQUIRED_FIELDS);
    assert!(breaks[0].message.contains("new required field 3 `c`"));
    let removed = build2(&PROTO2.replace("required int32 b = 2;", "reserved 2;"));
    let breaks = breaking_changes(&old, &removed);
    assert_eq!(breaks.len(), 1, "{breaks:#?}");
    assert_eq!(breaks[0].rule, rules::MESSAGE_SAME_REQUIRED_FIELDS);
    // optional -> required is a cardinality change.
    let label = build2(&PROTO2.replace("optional string a", "required string a"));
    assert_eq!(
        breaking_changes(&old, &label)[0].rule,
        rules::FIELD_WIRE_COMPATIBLE_CARDINALITY
    );
}

#[test]
fn message_reservation_removed_breaks_reserved_message_no_delete() {
    let new = build(
        &edit("  reserved 20, 30 to 39;\n", "  reserved 30 to 34;\n"),
        methods(),
    );
    assert_eq!(rules_of(&new), [rules::RESERVED_MESSAGE_NO_DELETE]);
    assert_breaks(
        &new,
        rules::RESERVED_MESSAGE_NO_DELETE,
        "message `c.v1.Req` no longer reserves 20, 35 to 39",
    );
    let names = build(&edit("  reserved \"old\";\n", ""), methods());
    assert_breaks(&names, rules::RESERVED_MESSAGE_NO_DELETE, "\"old\"");
    // Reserving the same numbers differently split is fine.
    let split = build(
        &edit("reserved 20, 30 to 39;", "reserved 20, 30 to 35, 36 to 40;"),
        methods(),
    );
    assert_compatible(&split);
}

#[test]
fn enum_deleted_while_still_used_breaks_enum_no_delete() {
    let mut new = old();
    new.enums.clear();
    assert_eq!(rules_of(&new), [rules::ENUM_NO_DELETE]);
    assert_breaks(&new, rules::ENUM_NO_DELETE, "`c.v1.Kind` was deleted");
}

#[test]
fn enum_value_deleted_breaks_enum_value_no_delete_unless_number_reserved() {
    let new = build(&edit("  KIND_B = 2;\n", ""), methods());
    assert_eq!(
        rules_of(&new),
        [rules::ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED]
    );
    assert_breaks(
        &new,
        rules::ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED,
        "value 2 `KIND_B` of enum `c.v1.Kind` was deleted without reserving its number",
    );
    let reserved = build(&edit("  KIND_B = 2;\n", "  reserved 2;\n"), methods());
    assert_compatible(&reserved);
}

#[test]
fn enum_value_renumbered_breaks_enum_value_no_delete_unless_number_reserved() {
    let new = build(&edit("KIND_B = 2;", "KIND_B = 3;"), methods());
    assert_breaks(
        &new,
        rules::ENUM_VALUE_NO_DELETE_UNLESS_NUMBER_RESERVED,
        "value 2 `KIND_B` of enum `c.v1.Kind` was deleted without reserving its number, \
         now numbered 3",
    );
}

#[test]
fn enum_reservation_removed_breaks_reserved_enum_no_delete() {
    let new = build(
        &edit("  reserved 9;\n  reserved \"KIND_OLD\";\n", ""),
        methods(),
    );
    assert_eq!(rules_of(&new), [rules::RESERVED_ENUM_NO_DELETE]);
    assert_breaks(
        &new,
        rules::RESERVED_ENUM_NO_DELETE,
        "enum `c.v1.Kind` no longer reserves 9, \"KIND_OLD\"",
    );
}

#[test]
fn an_enum_swapped_for_another_breaks_field_wire_compatible_type() {
    let proto = format!("{BASE}\nenum Other {{\n  OTHER_UNSPECIFIED = 0;\n}}\n")
        .replace("Kind kind = 4;", "Other kind = 4;");
    assert_breaks(
        &build(&proto, methods()),
        rules::FIELD_WIRE_COMPATIBLE_TYPE,
        "from `c.v1.Kind` to `c.v1.Other` (another enum)",
    );
}

#[test]
fn every_rule_has_a_test_and_breaks_display_as_rule_colon_message() {
    let source = include_str!("compat.rs");
    for rule in rules::ALL {
        let constant = format!("rules::{rule}");
        assert!(source.contains(&constant), "no test uses {constant}");
    }
    let b = Break {
        rule: rules::RPC_NO_DELETE,
        message: "method `x` (id 1) was deleted".into(),
    };
    assert_eq!(
        b.to_string(),
        "RPC_NO_DELETE: method `x` (id 1) was deleted"
    );
}
