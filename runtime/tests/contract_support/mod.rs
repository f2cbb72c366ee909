//! Shared by the contract tests (`schema`, `compat`, `docs_golden`): compiles `.proto`
//! text with protox (pure Rust, no `protoc`) and builds contracts from it.
#![allow(dead_code)] // each test file uses its own part

use daemoneye_ipc::schema::{Contract, MethodContract};
use prost::Message as _;

/// The encoded `FileDescriptorSet`, with source info (comments), of one `.proto` file
/// named `name` whose text is `source`.
pub fn compile_named(name: &str, source: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join(name), source).expect("write proto");
    protox::compile([name], [dir.path()])
        .unwrap_or_else(|e| panic!("{name} does not compile: {e:?}"))
        .encode_to_vec()
}

/// Compares `actual` with the golden file `golden` (relative to the runtime crate), or
/// rewrites it when `UPDATE_GOLDEN` is set; `test` names the test target to rerun.
pub fn assert_golden(golden: &str, actual: &str, test: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(golden);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{golden} is out of date; regenerate it with \
         `UPDATE_GOLDEN=1 cargo test -p daemoneye-ipc --test {test}` and review the \
         diff.\n--- now ---\n{actual}"
    );
}

/// [`compile_named`] as `test.proto`.
pub fn compile(source: &str) -> Vec<u8> {
    compile_named("test.proto", source)
}

/// A method; `request` and `response` as the macro would give them.
pub fn method(id: u32, name: &str, request: &str, response: &str) -> MethodContract {
    MethodContract {
        id,
        name: name.to_owned(),
        request: request.to_owned(),
        response: response.to_owned(),
        ..MethodContract::default()
    }
}

/// The test service of the schema, docs and snapshot tests.
pub const WIDGETS_PROTO: &str = r#"syntax = "proto3";

package test.v1;

// A query for widgets.
message WidgetQuery {
  // Name substring; empty matches every widget.
  string name = 1;
  // Largest number of widgets to return (0: no limit).
  uint32 limit = 2;
  reserved 3, 9 to 11;
  reserved "legacy";
}

// The widgets found.
message WidgetList {
  repeated Widget widgets = 1; // Widgets, in id order.
  // When the list was taken, in milliseconds since the Unix epoch.
  int64 collection_time = 14;
}

// One widget.
message Widget {
  // A widget's dimensions, in millimetres.
  message Size {
    uint32 width = 1;
    uint32 height = 2;
  }

  // Unique id.
  uint64 id = 1;
  Color color = 2;
  Size size = 3;
  // Free-form labels | with a pipe.
  map<string, string> labels = 4;
  // Where it comes from.
  oneof source {
    // Built here, in this factory.
    string factory = 5;
    // Bought from a vendor, by id.
    uint64 vendor_id = 6;
  }
  // Spare parts by name.
  map<string, Size> parts = 7;
  // Whether it was sealed; absent when unknown.
  optional bool sealed = 8;
}

// A widget's colour.
enum Color {
  // Not set.
  COLOR_UNSPECIFIED = 0;
  COLOR_RED = 1;
  // Blue.
  COLOR_BLUE = 2;
  reserved 3;
  reserved "COLOR_GREEN";
}

// Not used by the service: not part of its contract.
message Unrelated {
  string x = 1;
}
"#;

/// The widgets service's contract: types given as a macro would (Rust paths, a
/// hand-derived `Ping`).
pub fn widgets() -> Contract {
    let mut list = method(1, "list_widgets", "proto::WidgetQuery", "proto::WidgetList");
    list.idempotent = true;
    list.doc = "Lists the widgets that match the query.".into();
    let mut watch = method(2, "watch_widgets", "WidgetQuery", "Widget");
    watch.server_streaming = true;
    watch.doc =
        "Streams widgets as they are made.\n\nThe stream ends when the server stops.".into();
    let mut ping = method(3, "ping", "()", "Ping");
    ping.bare = true;
    ping.doc = "Answers at once.".into();
    let set = compile(WIDGETS_PROTO);
    Contract::build(
        "test.Widgets",
        "Makes and lists widgets.",
        vec![ping, watch, list],
        &[&set],
    )
    .expect("widgets contract")
}
