//! Text rendering for the terminal: the process table, memory sizes, the service
//! descriptor. Pure functions of their input, so their exact output is unit-tested.
//!
//! Every string that comes from the collector (process names, paths, user ids, error
//! messages) goes through [`sanitize`] before it is printed: a process may name itself
//! with terminal escape sequences or newlines, and must not be able to repaint or forge
//! lines of an operator's terminal.

use std::borrow::Cow;
use std::fmt::Write as _;

use daemoneye_ipc::ServiceDescriptor;
use daemoneye_proto::ProcessRecord;

/// Shown in a table cell whose value the collector did not report.
pub const MISSING: &str = "-";

/// `text` with every control character (ESC, newline, tab, DEL, C1 controls, ...)
/// replaced by its Rust escape (`\u{1b}`, `\n`, ...), so it prints as one inert line.
/// Borrows when there is nothing to replace.
pub fn sanitize(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut clean = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            clean.extend(c.escape_default());
        } else {
            clean.push(c);
        }
    }
    Cow::Owned(clean)
}

/// A byte count in binary units with one decimal: `"512 B"`, `"1.5 KiB"`, `"12.3 MiB"`,
/// up to EiB. Values are rounded to the nearest tenth; one that would round up to
/// `1024.0` of a unit is shown in the next unit instead (`"1.0 MiB"`, not
/// `"1024.0 KiB"`).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // f64 is exact to 2^53 bytes (8 PiB), and one decimal hides any error above that.
    #[allow(clippy::cast_precision_loss)]
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && (value * 10.0).round() >= 10240.0 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A CPU percentage with one decimal (`"3.5"`); [`MISSING`] when absent or not finite.
fn cpu_cell(cpu: Option<f64>) -> String {
    match cpu {
        Some(cpu) if cpu.is_finite() => format!("{cpu:.1}"),
        _ => MISSING.to_owned(),
    }
}

fn text_cell(text: Option<&str>) -> String {
    match text {
        Some(text) if !text.is_empty() => sanitize(text).into_owned(),
        _ => MISSING.to_owned(),
    }
}

/// How a column's cells line up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

const COLUMNS: [(&str, Align); 7] = [
    ("PID", Align::Right),
    ("PPID", Align::Right),
    ("USER", Align::Left),
    ("MEMORY", Align::Right),
    ("CPU%", Align::Right),
    ("NAME", Align::Left),
    ("EXECUTABLE", Align::Left),
];

fn row(record: &ProcessRecord) -> [String; 7] {
    [
        record.pid.to_string(),
        record
            .ppid
            .map_or_else(|| MISSING.to_owned(), |p| p.to_string()),
        text_cell(record.user_id.as_deref()),
        record
            .memory_usage
            .map_or_else(|| MISSING.to_owned(), human_bytes),
        cpu_cell(record.cpu_usage),
        text_cell(Some(&record.name)),
        text_cell(record.executable_path.as_deref()),
    ]
}

/// The process table: a header line, one line per record in the order given, then a
/// count line (`"2 processes"`, `"1 process"`). Columns are PID, PPID, USER (the
/// collector's user id), MEMORY (resident, [`human_bytes`]), CPU% (one decimal), NAME,
/// EXECUTABLE; absent values show as [`MISSING`]. Columns are separated by two spaces,
/// numbers right-aligned, text left-aligned; lines carry no trailing spaces. Every line
/// ends with `\n`.
pub fn process_table(records: &[ProcessRecord]) -> String {
    let rows: Vec<[String; 7]> = records.iter().map(row).collect();
    let mut widths = COLUMNS.map(|(title, _)| title.chars().count());
    for cells in &rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }

    let mut out = String::new();
    let header = COLUMNS.map(|(title, _)| title.to_owned());
    for cells in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, (cell, ((_, align), width))) in
            cells.iter().zip(COLUMNS.iter().zip(widths)).enumerate()
        {
            if i > 0 {
                line.push_str("  ");
            }
            let pad = width.saturating_sub(cell.chars().count());
            if *align == Align::Right {
                line.extend(std::iter::repeat_n(' ', pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.push_str(&count_line(records.len()));
    out.push('\n');
    out
}

/// `"1 process"` or `"<n> processes"`.
pub fn count_line(count: usize) -> String {
    if count == 1 {
        "1 process".to_owned()
    } else {
        format!("{count} processes")
    }
}

/// The descriptor as text: service name, schema hash (16 hex digits), description, then
/// each method as `<id>  <name>(<Request>) -> <Response>` (`<name>()` when it takes no
/// request), followed by its flags in brackets when it has any (streaming, idempotent,
/// answers bare seed frames), with its doc comment indented below.
pub fn describe(descriptor: &ServiceDescriptor) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "service:     {}", descriptor.name);
    let _ = writeln!(out, "schema hash: {:016x}", descriptor.schema_hash);
    if !descriptor.doc.is_empty() {
        indented(&mut out, descriptor.doc, "  ");
    }
    let _ = writeln!(out, "\nmethods:");
    for method in descriptor.methods {
        let request = if method.request == "()" {
            ""
        } else {
            method.request
        };
        let _ = write!(
            out,
            "  {}  {}({request}) -> {}",
            method.id, method.name, method.response
        );
        let flags: Vec<&str> = [
            (method.client_streaming, "client streaming"),
            (method.server_streaming, "server streaming"),
            (method.idempotent, "idempotent"),
            (method.bare, "answers bare seed frames"),
        ]
        .into_iter()
        .filter_map(|(set, flag)| set.then_some(flag))
        .collect();
        if !flags.is_empty() {
            let _ = write!(out, "  [{}]", flags.join(", "));
        }
        out.push('\n');
        if !method.doc.is_empty() {
            indented(&mut out, method.doc, "       ");
        }
    }
    out
}

fn indented(out: &mut String, text: &str, prefix: &str) {
    for line in text.lines() {
        let line = line.trim_end();
        if line.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{prefix}{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use daemoneye_collector::ProcessCollectorClient;
    use daemoneye_ipc::MethodDescriptor;

    fn systemd() -> ProcessRecord {
        ProcessRecord {
            pid: 1,
            ppid: None,
            name: "systemd".into(),
            executable_path: Some("/usr/lib/systemd/systemd".into()),
            cpu_usage: Some(0.04),
            memory_usage: Some(12_900_000),
            user_id: Some("0".into()),
            accessible: true,
            file_exists: true,
            ..ProcessRecord::default()
        }
    }

    fn firefox() -> ProcessRecord {
        ProcessRecord {
            pid: 31337,
            ppid: Some(2048),
            name: "firefox".into(),
            executable_path: None,
            cpu_usage: Some(112.26),
            memory_usage: Some(1_288_490_189),
            user_id: Some("1000".into()),
            ..ProcessRecord::default()
        }
    }

    #[test]
    fn table_aligns_columns_and_shows_missing_values() {
        // (No `\` line continuation here: it would eat the header's leading spaces.)
        let expected = "  PID  PPID  USER    MEMORY   CPU%  NAME     EXECUTABLE
    1     -  0     12.3 MiB    0.0  systemd  /usr/lib/systemd/systemd
31337  2048  1000   1.2 GiB  112.3  firefox  -
2 processes
";
        assert_eq!(process_table(&[systemd(), firefox()]), expected);
    }

    #[test]
    fn table_of_one_bare_record() {
        let bare = ProcessRecord {
            pid: 7,
            name: String::new(),
            ..ProcessRecord::default()
        };
        let expected = "\
PID  PPID  USER  MEMORY  CPU%  NAME  EXECUTABLE
  7     -  -          -     -  -     -
1 process
";
        assert_eq!(process_table(&[bare]), expected);
    }

    #[test]
    fn empty_table_has_header_and_count() {
        assert_eq!(
            process_table(&[]),
            "PID  PPID  USER  MEMORY  CPU%  NAME  EXECUTABLE\n0 processes\n"
        );
    }

    #[test]
    fn hostile_names_cannot_inject_terminal_controls() {
        let mut evil = systemd();
        evil.name = "\u{1b}[2Jevil\nroot".into();
        let table = process_table(&[evil]);
        assert!(!table.contains('\u{1b}'));
        assert!(table.contains(r"\u{1b}[2Jevil\nroot"));
        assert_eq!(table.lines().count(), 3, "header, one row, count: {table}");
    }

    #[test]
    fn sanitize_borrows_clean_text() {
        assert!(matches!(sanitize("/usr/bin/ls"), Cow::Borrowed(_)));
        assert_eq!(sanitize("a\tb\u{7f}"), r"a\tb\u{7f}");
    }

    #[test]
    fn human_units() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1024), "1.0 KiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(12_900_000), "12.3 MiB");
        assert_eq!(human_bytes(1024 * 1024 - 1), "1.0 MiB");
        assert_eq!(human_bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn cpu_cells() {
        assert_eq!(cpu_cell(Some(7.06)), "7.1");
        assert_eq!(cpu_cell(None), "-");
        assert_eq!(cpu_cell(Some(f64::NAN)), "-");
    }

    #[test]
    fn counts() {
        assert_eq!(count_line(0), "0 processes");
        assert_eq!(count_line(1), "1 process");
        assert_eq!(count_line(2), "2 processes");
    }

    #[test]
    fn describe_lists_every_method() {
        // Fields other than the ones set here come from a real descriptor, so this test
        // keeps compiling when the descriptor grows (hence the allowance).
        const BASE: MethodDescriptor = ProcessCollectorClient::DESCRIPTOR.methods[0];
        #[allow(clippy::needless_update)]
        static DESCRIPTOR: ServiceDescriptor = ServiceDescriptor {
            name: "test.Svc",
            doc: "A test service.",
            methods: &[
                MethodDescriptor {
                    id: 1,
                    name: "lookup",
                    request: "Query",
                    response: "Answer",
                    doc: "Finds things.\nSecond line.",
                    client_streaming: false,
                    server_streaming: false,
                    idempotent: false,
                    bare: false,
                    ..BASE
                },
                MethodDescriptor {
                    id: 2,
                    name: "ping",
                    request: "()",
                    response: "Pong",
                    doc: "",
                    client_streaming: false,
                    server_streaming: true,
                    idempotent: true,
                    bare: false,
                    ..BASE
                },
            ],
            schema_hash: 0x00ab_cdef_0123_4567,
            ..*ProcessCollectorClient::DESCRIPTOR
        };
        let expected = "\
service:     test.Svc
schema hash: 00abcdef01234567
  A test service.

methods:
  1  lookup(Query) -> Answer
       Finds things.
       Second line.
  2  ping() -> Pong  [server streaming, idempotent]
";
        assert_eq!(describe(&DESCRIPTOR), expected);
    }
}
