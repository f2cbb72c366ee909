//! The `ProcessCollector` contract as data: full schemas from `daemoneye.proto` (with
//! its comments), the checked-in snapshot that catches breaking changes, and the
//! generated reference in `docs/services/` that must not go stale.

use std::path::PathBuf;

use daemoneye_collector::ProcessCollectorClient;
use daemoneye_ipc::{docs, schema::Label, Contract};

fn contract() -> Contract {
    ProcessCollectorClient::DESCRIPTOR
        .contract()
        .expect("the collector's contract builds")
}

fn repository() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn process_record_field_14_is_collection_time_with_its_proto_comment() {
    let contract = contract();
    let record = contract
        .message("daemoneye.v1.ProcessRecord")
        .expect("ProcessRecord is reachable from the methods");
    assert!(record.known, "it comes from daemoneye.proto");
    let field = record
        .fields
        .iter()
        .find(|field| field.number == 14)
        .expect("field 14");
    assert_eq!(field.name, "collection_time");
    assert_eq!(field.type_name, "int64");
    assert_eq!(field.label, Label::Optional);
    assert_eq!(
        field.doc,
        "Time this record was collected, as Unix time in milliseconds."
    );
    let enumerate = contract
        .methods
        .iter()
        .find(|method| method.name == "enumerate_processes")
        .expect("enumerate_processes");
    assert_eq!(enumerate.request, "daemoneye.v1.ProcessFilter");
    assert_eq!(enumerate.response, "daemoneye.v1.ProcessList");
}

/// Breaking changes to the contract fail here, one line per break naming the rule;
/// compatible ones pass and say how to refresh the snapshot.
#[test]
fn the_contract_is_compatible_with_its_snapshot() {
    daemoneye_ipc::assert_contract_snapshot!(
        contract(),
        "../../schema/daemoneye.ProcessCollector.json"
    );
}

/// The reference in `docs/services/` is generated from the contract; regenerate it
/// with `DAEMONEYE_UPDATE_DOCS=1 cargo test -p daemoneye-collector --test contract`
/// (or `daemoneye-cli docs --out docs/services`).
#[test]
fn the_generated_reference_is_up_to_date() {
    let path = repository().join("docs/services/daemoneye.ProcessCollector.md");
    let fresh = docs::render_markdown(&contract());
    if std::env::var_os("DAEMONEYE_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &fresh).expect("write the reference");
        return;
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is out of date with the ProcessCollector contract; regenerate it with\n    \
         DAEMONEYE_UPDATE_DOCS=1 cargo test -p daemoneye-collector --test contract",
        path.display()
    );
}

#[test]
fn the_contract_hash_is_the_handshake_schema_hash() {
    assert_eq!(
        contract().hash(),
        ProcessCollectorClient::DESCRIPTOR.schema_hash
    );
}
