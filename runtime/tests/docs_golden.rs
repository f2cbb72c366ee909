//! The Markdown reference of a test service, compared with a golden file
//! (`tests/golden/test.Widgets.md`; regenerate it with `UPDATE_GOLDEN=1 cargo test -p
//! daemoneye-ipc --test docs_golden`), and its links checked against its headings.

mod contract_support;

use std::collections::HashSet;

use daemoneye_ipc::docs::{anchor, render_markdown};

const GOLDEN: &str = "tests/golden/test.Widgets.md";

#[test]
fn markdown_matches_the_golden_file() {
    let rendered = render_markdown(&contract_support::widgets());
    contract_support::assert_golden(GOLDEN, &rendered, "docs_golden");
}

/// The anchors GitHub gives the document's headings, found by reading the Markdown
/// back (not from the renderer's own outline).
fn heading_anchors(markdown: &str) -> HashSet<String> {
    let mut seen: std::collections::HashMap<String, usize> = Default::default();
    let mut anchors = HashSet::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            in_code = !in_code;
        }
        let trimmed = line.trim_start_matches('#');
        if in_code || trimmed.len() == line.len() || !trimmed.starts_with(' ') {
            continue;
        }
        let text = trimmed.trim().replace('`', "");
        let base = anchor(&text);
        let mut id = base.clone();
        while seen.contains_key(&id) {
            let n = seen.get_mut(&base).expect("seen");
            *n += 1;
            id = format!("{base}-{n}");
        }
        seen.insert(id.clone(), 0);
        anchors.insert(id);
    }
    anchors
}

/// Every `](#anchor)` link target of the document.
fn links(markdown: &str) -> Vec<String> {
    markdown
        .split("](#")
        .skip(1)
        .map(|rest| rest.split(')').next().expect("closing paren").to_owned())
        .collect()
}

#[test]
fn every_link_points_at_a_heading() {
    let markdown = render_markdown(&contract_support::widgets());
    let anchors = heading_anchors(&markdown);
    let links = links(&markdown);
    assert!(
        links.len() > 10,
        "expected links between methods and messages"
    );
    for link in &links {
        assert!(
            anchors.contains(link),
            "no heading for #{link}: {anchors:?}"
        );
    }
    // Methods link to their messages, and fields to their types.
    assert!(markdown.contains("[`test.v1.WidgetQuery`](#testv1widgetquery)"));
    assert!(markdown.contains("[`test.v1.Widget.Size`](#testv1widgetsize)"));
    assert!(markdown.contains("[`watch_widgets`](#watch_widgets)"));
}

#[test]
fn sections_come_in_order_with_the_field_docs() {
    let markdown = render_markdown(&contract_support::widgets());
    let at = |needle: &str| {
        markdown
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing"))
    };
    let order = [
        "# `test.Widgets`",
        "Makes and lists widgets.",
        "| id | method | request | response | streaming | idempotent |",
        "## Methods",
        "### `list_widgets`",
        "## Messages",
        "### `test.v1.WidgetList`",
        "## Enums",
        "### `test.v1.Color`",
        "## Status codes",
        "## Wire format",
    ];
    for pair in order.windows(2) {
        assert!(
            at(pair[0]) < at(pair[1]),
            "{:?} before {:?}",
            pair[0],
            pair[1]
        );
    }
    assert!(markdown.contains(
        "| 14 | `collection_time` | `int64` | optional | When the list was taken, in \
         milliseconds since the Unix epoch. |"
    ));
    // A pipe in a doc does not split its table cell.
    assert!(markdown.contains("Free-form labels \\| with a pipe."));
    assert!(markdown.contains("| 16 | `UNAUTHENTICATED` |"));
    assert!(markdown.contains("[`daemoneye_ipc.proto`](../../runtime/proto/daemoneye_ipc.proto)"));
}

#[test]
fn the_wire_reference_names_real_envelope_fields() {
    let proto = include_str!("../proto/daemoneye_ipc.proto");
    let markdown = render_markdown(&contract_support::widgets());
    let wire = &markdown[markdown.find("## Wire format").expect("section")..];
    for line in wire
        .lines()
        .filter(|l| l.starts_with("| ") && !l.contains("---"))
    {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (number, body) = (cells[1], cells[2].trim_matches('`'));
        if number == "field" {
            continue;
        }
        let declared = format!(" {body} = {number};");
        assert!(proto.contains(&declared), "envelope has no `{declared}`");
    }
}
