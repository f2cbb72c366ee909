//! Contracts built from protobuf file descriptor sets: full message schemas with the
//! `.proto` comments, type resolution, the contract hash, the JSON form.

mod contract_support;

use contract_support::{compile, compile_named, method, widgets};
use daemoneye_ipc::schema::{
    Contract, EnumValueSchema, FieldSchema, Label, SchemaError, NO_MESSAGE,
};

#[test]
fn methods_name_protobuf_full_names_sorted_by_id() {
    let contract = widgets();
    let shapes: Vec<(u32, &str, &str, &str, bool)> = contract
        .methods
        .iter()
        .map(|m| {
            (
                m.id,
                m.name.as_str(),
                m.request.as_str(),
                m.response.as_str(),
                m.server_streaming,
            )
        })
        .collect();
    assert_eq!(
        shapes,
        [
            (
                1,
                "list_widgets",
                "test.v1.WidgetQuery",
                "test.v1.WidgetList",
                false
            ),
            (
                2,
                "watch_widgets",
                "test.v1.WidgetQuery",
                "test.v1.Widget",
                true
            ),
            (3, "ping", NO_MESSAGE, "Ping", false),
        ]
    );
}

#[test]
fn a_field_carries_its_type_and_proto_comment() {
    let contract = widgets();
    let list = contract.message("test.v1.WidgetList").expect("WidgetList");
    assert_eq!(list.doc, "The widgets found.");
    let time = list
        .fields
        .iter()
        .find(|f| f.number == 14)
        .expect("field 14");
    assert_eq!(
        time,
        &FieldSchema {
            number: 14,
            name: "collection_time".into(),
            type_name: "int64".into(),
            label: Label::Optional,
            map_key: None,
            map_value: None,
            oneof: None,
            doc: "When the list was taken, in milliseconds since the Unix epoch.".into(),
        }
    );
    // A trailing comment serves when there is no leading one.
    assert_eq!(list.fields[0].doc, "Widgets, in id order.");
    assert_eq!(list.fields[0].label, Label::Repeated);
    assert_eq!(list.fields[0].type_name, "test.v1.Widget");
}

#[test]
fn reachable_messages_and_enums_only_with_nested_types_and_no_map_entries() {
    let contract = widgets();
    let messages: Vec<&str> = contract
        .messages
        .iter()
        .map(|m| m.full_name.as_str())
        .collect();
    assert_eq!(
        messages,
        [
            "Ping",
            "test.v1.Widget",
            "test.v1.Widget.Size",
            "test.v1.WidgetList",
            "test.v1.WidgetQuery",
        ]
    );
    let enums: Vec<&str> = contract
        .enums
        .iter()
        .map(|e| e.full_name.as_str())
        .collect();
    assert_eq!(enums, ["test.v1.Color"]);
}

#[test]
fn maps_oneofs_and_proto3_optional() {
    let contract = widgets();
    let widget = contract.message("test.v1.Widget").expect("Widget");
    let field = |n: u32| widget.fields.iter().find(|f| f.number == n).expect("field");

    let labels = field(4);
    assert_eq!(labels.label, Label::Map);
    assert_eq!(labels.type_name, "map<string, string>");
    assert_eq!(labels.map_key.as_deref(), Some("string"));
    assert_eq!(labels.map_value.as_deref(), Some("string"));
    let parts = field(7);
    assert_eq!(parts.map_value.as_deref(), Some("test.v1.Widget.Size"));

    assert_eq!(field(5).oneof.as_deref(), Some("source"));
    assert_eq!(field(5).doc, "Built here, in this factory.");
    assert_eq!(field(6).oneof.as_deref(), Some("source"));
    // proto3 `optional` is a synthetic oneof: not reported as one.
    assert_eq!(field(8).oneof, None);
    assert_eq!(field(8).label, Label::Optional);
    assert_eq!(field(2).type_name, "test.v1.Color");
    assert_eq!(field(3).type_name, "test.v1.Widget.Size");
    assert_eq!(
        contract.message("test.v1.Widget.Size").expect("Size").doc,
        "A widget's dimensions, in millimetres."
    );
}

#[test]
fn reserved_numbers_and_names() {
    let contract = widgets();
    let query = contract
        .message("test.v1.WidgetQuery")
        .expect("WidgetQuery");
    assert_eq!(query.reserved_numbers, [(3, 3), (9, 11)]);
    assert_eq!(query.reserved_names, ["legacy"]);
    let color = contract.enum_schema("test.v1.Color").expect("Color");
    assert_eq!(color.reserved_numbers, [(3, 3)]);
    assert_eq!(color.reserved_names, ["COLOR_GREEN"]);
}

#[test]
fn enum_values_with_their_comments() {
    let contract = widgets();
    let color = contract.enum_schema("test.v1.Color").expect("Color");
    assert_eq!(color.doc, "A widget's colour.");
    let value = |name: &str, number: i32, doc: &str| EnumValueSchema {
        name: name.into(),
        number,
        doc: doc.into(),
    };
    assert_eq!(
        color.values,
        [
            value("COLOR_UNSPECIFIED", 0, "Not set."),
            value("COLOR_RED", 1, ""),
            value("COLOR_BLUE", 2, "Blue."),
        ]
    );
}

#[test]
fn a_hand_derived_message_is_marked_unknown() {
    let contract = widgets();
    let ping = contract.message("Ping").expect("Ping");
    assert!(!ping.known);
    assert!(ping.fields.is_empty());
    assert!(ping.doc.starts_with("no .proto schema"), "{}", ping.doc);
    let widget = contract.message("test.v1.Widget").expect("Widget");
    assert!(widget.known);
}

#[test]
fn spelling_a_path_differently_changes_nothing() {
    let set = compile(contract_support::WIDGETS_PROTO);
    let build = |request: &str| {
        Contract::build(
            "test.Widgets",
            "",
            vec![method(1, "list", request, "WidgetList")],
            &[&set],
        )
        .expect("contract")
    };
    let short = build("WidgetQuery");
    for spelling in [
        "crate::proto::WidgetQuery",
        "::test::v1::WidgetQuery",
        "test.v1.WidgetQuery",
        ".test.v1.WidgetQuery",
    ] {
        let other = build(spelling);
        assert_eq!(other, short, "{spelling}");
        assert_eq!(other.hash(), short.hash(), "{spelling}");
    }
    // A hand-derived type is named by its last segment, whatever its path.
    let a = Contract::build("s", "", vec![method(1, "m", "a::b::Ping", "()")], &[]).unwrap();
    let b = Contract::build("s", "", vec![method(1, "m", "Ping", "()")], &[]).unwrap();
    assert_eq!(a.hash(), b.hash());
    assert_eq!(a.methods[0].request, "Ping");
}

const TWO_PACKAGES_A: &str = r#"syntax = "proto3";
package demo.v1;
// Version one.
message Item { string name = 1; }
"#;

const TWO_PACKAGES_B: &str = r#"syntax = "proto3";
package demo.v2;
// Version two.
message Item { string name = 1; int64 size = 2; }
"#;

#[test]
fn a_name_in_two_packages_is_resolved_by_its_path_or_refused() {
    let a = compile_named("a.proto", TWO_PACKAGES_A);
    let b = compile_named("b.proto", TWO_PACKAGES_B);
    let build = |ty: &str| Contract::build("s", "", vec![method(1, "get", "()", ty)], &[&a, &b]);
    let err = build("Item").expect_err("ambiguous");
    assert_eq!(
        err,
        SchemaError::AmbiguousType {
            method: "get".into(),
            type_name: "Item".into(),
            candidates: vec!["demo.v1.Item".into(), "demo.v2.Item".into()],
        }
    );
    assert!(
        err.to_string().contains("demo.v1.Item, demo.v2.Item"),
        "{err}"
    );
    let v2 = build("generated::demo::v2::Item").expect("by path");
    assert_eq!(v2.methods[0].response, "demo.v2.Item");
    assert_eq!(v2.messages[0].doc, "Version two.");
    let v1 = build("demo.v1.Item").expect("by full name");
    assert_eq!(v1.methods[0].response, "demo.v1.Item");
}

#[test]
fn a_nested_message_resolves_through_its_parents_module() {
    let set = compile(contract_support::WIDGETS_PROTO);
    let contract = Contract::build(
        "s",
        "",
        vec![method(1, "size", "()", "widget::Size")],
        &[&set],
    )
    .expect("contract");
    assert_eq!(contract.methods[0].response, "test.v1.Widget.Size");
}

#[test]
fn bad_descriptor_sets_and_duplicate_methods_are_errors() {
    let err = Contract::build("s", "", vec![], &[b"\xff\xff not protobuf"]).unwrap_err();
    assert!(
        matches!(err, SchemaError::InvalidDescriptorSet { index: 0, .. }),
        "{err}"
    );
    let err = Contract::build(
        "s",
        "",
        vec![method(1, "a", "()", "()"), method(1, "b", "()", "()")],
        &[],
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "two methods have the id `1`");
    let err = Contract::build(
        "s",
        "",
        vec![method(1, "a", "()", "()"), method(2, "a", "()", "()")],
        &[],
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "two methods have the name `a`");
}

#[test]
fn json_is_deterministic_and_round_trips() {
    let one = widgets();
    let two = widgets();
    assert_eq!(one.to_json(), two.to_json());
    let back = Contract::from_json(&one.to_json()).expect("parse");
    assert_eq!(back, one);
    // Absent options are left out; labels are lowercase words.
    let json = one.to_json();
    assert!(json.contains("\"label\": \"map\""), "{json}");
    assert!(!json.contains("\"oneof\": null"), "{json}");
    // A snapshot written before a field existed still reads (missing fields default).
    let old = r#"{"service": "s", "methods": [{"id": 1, "name": "m"}]}"#;
    let parsed = Contract::from_json(old).expect("parse");
    assert_eq!(parsed.methods[0].request, "");
    assert!(parsed.messages.is_empty());
}

#[test]
fn hash_depends_on_method_shapes_only() {
    let contract = widgets();
    let mut docs = contract.clone();
    docs.doc = "Other words.".into();
    docs.methods[0].doc = "Other words.".into();
    docs.messages[1].fields.pop();
    assert_eq!(docs.hash(), contract.hash());
    let mut renamed = contract.clone();
    renamed.methods[0].name = "list".into();
    assert_ne!(renamed.hash(), contract.hash());
    let mut service = contract.clone();
    service.service = "test.Other".into();
    assert_ne!(service.hash(), contract.hash());
}
