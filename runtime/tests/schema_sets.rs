//! What a contract reads from its file descriptor sets beyond the widgets service:
//! nested enums, maps of enums and of nested messages, a comment on each kind of
//! element, proto2 (`required`, groups, no package), types in several files and sets,
//! the same file given twice, and the errors of sets that do not hold together.
//!
//! The whole contract is compared with a golden file
//! (`tests/golden/shop.Orders.json`; regenerate it with `UPDATE_GOLDEN=1 cargo test -p
//! daemoneye-ipc --test schema_sets` and review the diff).

mod contract_support;

use contract_support::{compile_named, method};
use daemoneye_ipc::prost::Message as _;
use daemoneye_ipc::prost_types::FileDescriptorSet;
use daemoneye_ipc::schema::{Contract, Label, SchemaError};

const GOLDEN: &str = "tests/golden/shop.Orders.json";

const ORDERS_PROTO: &str = r#"syntax = "proto3";

package shop.v1;

// An order.
message Order {
  // A line of the order.
  message Line {
    // What is bought.
    string sku = 1;
    uint32 quantity = 2; // How many.
  }

  // Where an order stands.
  enum Status {
    // Not known yet.
    STATUS_UNSPECIFIED = 0;
    STATUS_OPEN = 1; // Still open.
    STATUS_SHIPPED = 2;
    reserved 5 to 7;
  }

  // The lines, in the order they were added.
  repeated Line lines = 1;
  // Where it stands now.
  Status status = 2;
  // The status of each line, by sku.
  map<string, Status> line_status = 3;
  // The lines by id.
  map<uint64, Line> by_id = 4;
  // A note; its enum is reached only through it.
  Note note = 5;
  reserved 6 to 8;
}

message Note {
  // How loud the note is.
  enum Level {
    LEVEL_UNSPECIFIED = 0;
  }

  string text = 1;
  Level level = 2;
}
"#;

const LEGACY_PROTO: &str = r#"syntax = "proto2";

// A record of the old system.
message Record {
  required int64 id = 1;
  // Its name.
  optional string name = 2 [default = "none"];
  repeated group Part = 3 {
    // The part's size.
    optional int32 size = 1;
  }
  optional Kind kind = 4;
  extensions 100 to 199;
}

// What a record is.
enum Kind {
  KIND_A = 1;
  KIND_B = 2;
}
"#;

/// `Item` in its own file, and a file that imports it.
const ITEM_PROTO: &str = r#"syntax = "proto3";
package shop.v1;
// A thing for sale.
message Item { string sku = 1; }
"#;

const CATALOG_PROTO: &str = r#"syntax = "proto3";
package shop.v1;
import "item.proto";
// What is for sale.
message Catalog { repeated Item items = 1; }
"#;

/// The orders service's contract: one method per file, types given as Rust paths.
fn orders(sets: &[&[u8]]) -> Result<Contract, SchemaError> {
    Contract::build(
        "shop.Orders",
        "Takes orders.",
        vec![
            method(1, "get", "proto::Order", "proto::Order"),
            method(2, "legacy", "()", "legacy::Record"),
        ],
        sets,
    )
}

/// The files of `set` named `names`, as a set of their own.
fn only(set: &[u8], names: &[&str]) -> Vec<u8> {
    let mut set = FileDescriptorSet::decode(set).expect("a file descriptor set");
    set.file.retain(|f| names.contains(&f.name()));
    set.encode_to_vec()
}

#[test]
fn nested_types_maps_proto2_and_every_comment_match_the_golden_file() {
    let orders_set = compile_named("orders.proto", ORDERS_PROTO);
    let legacy_set = compile_named("legacy.proto", LEGACY_PROTO);
    let contract = orders(&[&orders_set, &legacy_set]).expect("contract");

    // The points the golden file pins, spelled out.
    let order = contract.message("shop.v1.Order").expect("Order");
    let field = |n: u32| order.fields.iter().find(|f| f.number == n).expect("field");
    assert_eq!(field(2).type_name, "shop.v1.Order.Status");
    assert_eq!(field(3).label, Label::Map);
    assert_eq!(field(3).type_name, "map<string, shop.v1.Order.Status>");
    assert_eq!(field(4).map_key.as_deref(), Some("uint64"));
    assert_eq!(field(4).map_value.as_deref(), Some("shop.v1.Order.Line"));
    let line = contract.message("shop.v1.Order.Line").expect("Line");
    assert_eq!(line.doc, "A line of the order.");
    assert_eq!(line.fields[1].doc, "How many.");
    let status = contract
        .enum_schema("shop.v1.Order.Status")
        .expect("Status");
    assert_eq!(status.doc, "Where an order stands.");
    assert_eq!(status.values[1].doc, "Still open.");
    assert!(contract.enum_schema("shop.v1.Note.Level").is_some());
    let record = contract.message("Record").expect("Record");
    assert!(record.known);
    assert_eq!(record.fields[0].label, Label::Required);
    assert_eq!(record.fields[2].type_name, "Record.Part");
    assert_eq!(
        contract.message("Record.Part").expect("Part").fields[0].doc,
        "The part's size."
    );

    contract_support::assert_golden(GOLDEN, &contract.to_json(), "schema_sets");
}

#[test]
fn a_file_given_again_is_skipped_and_the_first_one_given_wins() {
    let orders_set = compile_named("orders.proto", ORDERS_PROTO);
    let legacy_set = compile_named("legacy.proto", LEGACY_PROTO);
    let once = orders(&[&orders_set, &legacy_set]).expect("contract");
    let twice = orders(&[&orders_set, &legacy_set, &orders_set]).expect("contract");
    assert_eq!(twice, once);

    // Another file of the same name in a later set is skipped too, unread.
    let other = compile_named("orders.proto", "syntax = \"proto3\";\nmessage Order {}\n");
    let first_wins = orders(&[&orders_set, &other, &legacy_set]).expect("contract");
    assert_eq!(first_wins, once);
}

#[test]
fn a_set_may_import_a_file_of_an_earlier_set_but_not_of_a_later_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("item.proto"), ITEM_PROTO).expect("write");
    std::fs::write(dir.path().join("catalog.proto"), CATALOG_PROTO).expect("write");
    let set = protox::compile(["catalog.proto"], [dir.path()])
        .expect("compiles")
        .encode_to_vec();
    let item = only(&set, &["item.proto"]);
    let catalog = only(&set, &["catalog.proto"]);
    let build = |sets: &[&[u8]]| {
        Contract::build(
            "shop.Catalogs",
            "",
            vec![method(1, "get", "()", "Catalog")],
            sets,
        )
    };

    let whole = build(&[&set]).expect("one set");
    assert_eq!(build(&[&item, &catalog]).expect("two sets"), whole);
    let item_doc = &whole.message("shop.v1.Item").expect("Item").doc;
    assert_eq!(item_doc, "A thing for sale.");

    let err = build(&[&catalog, &item]).expect_err("catalog.proto's import is missing");
    assert_eq!(
        err,
        SchemaError::InvalidDescriptorSet {
            index: 0,
            message: "imported file 'item.proto' has not been added".into(),
        }
    );
}

#[test]
fn a_set_without_source_info_gives_no_docs() {
    let set = compile_named("orders.proto", ORDERS_PROTO);
    let mut bare = FileDescriptorSet::decode(&set[..]).expect("a file descriptor set");
    for file in &mut bare.file {
        file.source_code_info = None;
    }
    let bare = bare.encode_to_vec();
    let with =
        Contract::build("s", "", vec![method(1, "get", "()", "Order")], &[&set]).expect("contract");
    let without = Contract::build("s", "", vec![method(1, "get", "()", "Order")], &[&bare])
        .expect("contract");
    assert_eq!(
        with.message("shop.v1.Order").expect("Order").doc,
        "An order."
    );
    let mut undocumented = with.clone();
    for message in &mut undocumented.messages {
        message.doc.clear();
        for field in &mut message.fields {
            field.doc.clear();
        }
    }
    for schema in &mut undocumented.enums {
        schema.doc.clear();
        for value in &mut schema.values {
            value.doc.clear();
        }
    }
    assert_eq!(without, undocumented);
}

#[test]
fn sets_that_do_not_hold_together_are_errors() {
    let build = |sets: &[&[u8]]| Contract::build("s", "", vec![], sets);
    let invalid = |index: usize, message: &str| SchemaError::InvalidDescriptorSet {
        index,
        message: message.into(),
    };
    let set = compile_named("orders.proto", ORDERS_PROTO);

    assert_eq!(
        build(&[&set, b"\xff\xff not protobuf"]).unwrap_err(),
        invalid(1, "failed to decode file descriptor set")
    );

    // The same file twice in one set.
    let mut doubled = FileDescriptorSet::decode(&set[..]).expect("a file descriptor set");
    doubled.file.push(doubled.file[0].clone());
    assert_eq!(
        build(&[&doubled.encode_to_vec()]).unwrap_err(),
        invalid(
            0,
            "a different file named 'orders.proto' has already been added"
        )
    );

    // A field whose type no file defines.
    let mut dangling = FileDescriptorSet::decode(&set[..]).expect("a file descriptor set");
    dangling.file[0].message_type[1].field[0].type_name = Some(".shop.v1.Missing".into());
    assert_eq!(
        build(&[&dangling.encode_to_vec()]).unwrap_err(),
        invalid(0, "name '.shop.v1.Missing' is not defined")
    );

    // A syntax other than proto2 and proto3 (protobuf editions are not read).
    let mut editions = FileDescriptorSet::decode(&set[..]).expect("a file descriptor set");
    editions.file[0].syntax = Some("editions".into());
    assert_eq!(
        build(&[&editions.encode_to_vec()]).unwrap_err(),
        invalid(0, "unknown syntax 'editions'")
    );

    // A type defined in two files.
    let again = compile_named("again.proto", ORDERS_PROTO);
    assert_eq!(
        build(&[&set, &again]).unwrap_err(),
        invalid(
            1,
            "name 'shop.v1.Order' is already defined in file 'orders.proto'"
        )
    );
}
