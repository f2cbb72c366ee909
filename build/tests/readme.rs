//! The README's "Define your own service" walkthrough shows the files of
//! `examples/own-crate/` (which CI builds and tests): this keeps the two the same.

use std::{fs, path::Path};

/// The fenced blocks of the README section `heading`, as (info string, text).
fn blocks(readme: &str, heading: &str) -> Vec<(String, String)> {
    let start = readme.find(heading).expect("the section exists");
    let rest = &readme[start + heading.len()..];
    let section = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let mut text = String::new();
            for line in lines.by_ref().take_while(|l| *l != "```") {
                text.push_str(line);
                text.push('\n');
            }
            blocks.push((info.to_owned(), text));
        }
    }
    blocks
}

/// `name = ...` keys of a Cargo.toml's dependency tables, and the tokio line.
fn dependencies(toml: &str) -> (Vec<String>, String) {
    let mut table = "";
    let mut names = Vec::new();
    let mut tokio = String::new();
    for line in toml.lines() {
        if line.starts_with('[') {
            table = line;
        } else if table.ends_with("dependencies]") {
            if let Some((name, _)) = line.split_once(" = ") {
                names.push(format!("{table} {name}"));
            }
            if line.starts_with("tokio ") {
                tokio = line.to_owned();
            }
        }
    }
    (names, tokio)
}

#[test]
fn the_readme_walkthrough_is_the_template_crate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = fs::read_to_string(root.join("README.md")).unwrap();
    let template = root.join("examples/own-crate");
    let file = |path: &str| fs::read_to_string(template.join(path)).unwrap();

    let blocks = blocks(&readme, "## Define your own service\n");
    let info: Vec<&str> = blocks.iter().map(|(info, _)| info.as_str()).collect();
    assert_eq!(
        info[..5],
        [
            "toml",
            "protobuf",
            "rust,ignore",
            "rust,ignore",
            "rust,ignore"
        ]
    );
    assert_eq!(
        blocks[1].1,
        file("proto/greeter.proto"),
        "proto/greeter.proto"
    );
    assert_eq!(blocks[2].1, file("build.rs"), "build.rs");
    assert_eq!(blocks[3].1, file("src/lib.rs"), "src/lib.rs");
    assert_eq!(blocks[4].1, file("src/main.rs"), "src/main.rs");
    // Cargo.toml differs in its paths (and the template's own [workspace]); the
    // dependencies and tokio's features are the same.
    assert_eq!(
        dependencies(&blocks[0].1),
        dependencies(&file("Cargo.toml")),
        "Cargo.toml"
    );
}
