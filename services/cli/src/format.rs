//! Text rendering for the terminal: the process table (printed batch by batch), the
//! JSON array of records (likewise), watch events, verify results, memory sizes, the
//! service descriptor. Pure functions of their input, so their exact output is
//! unit-tested.
//!
//! Every string that comes from the collector (process names, paths, user ids, error
//! messages) goes through [`sanitize`] before it is printed: a process may name itself
//! with terminal escape sequences or newlines, and must not be able to repaint or forge
//! lines of an operator's terminal.

use std::borrow::Cow;

use daemoneye_proto::{
    ExecutableState, ProcessEvent, ProcessEventKind, ProcessRecord, VerifyResult,
};
use serde::Serialize;

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

/// The whole table for `records` at once (what [`TableWriter`] prints for a listing
/// that arrives in one batch).
#[cfg(test)]
pub fn process_table(records: &[ProcessRecord]) -> String {
    let mut table = TableWriter::new();
    let mut out = table.batch(records);
    out.push_str(&table.finish());
    out
}

/// The process table, printed batch by batch as a stream delivers records: a header
/// line, one line per record in the order given, then a count line (`"2 processes"`,
/// `"1 process"`). Columns are PID, PPID, USER (the collector's user id), MEMORY
/// (resident, [`human_bytes`]), CPU% (one decimal), NAME, EXECUTABLE; absent values
/// show as [`MISSING`]. Columns are separated by two spaces, numbers right-aligned,
/// text left-aligned; lines carry no trailing spaces. Every line ends with `\n`.
///
/// Column widths are those of the header and the first batch; a later cell that is
/// wider widens its column from then on (earlier lines are already printed), so a
/// listing that arrives in one batch is perfectly aligned.
#[derive(Debug)]
pub struct TableWriter {
    widths: Option<[usize; 7]>,
    count: usize,
}

impl TableWriter {
    /// A table with nothing printed yet.
    pub fn new() -> Self {
        Self {
            widths: None,
            count: 0,
        }
    }

    /// The lines for `records` (preceded by the header the first time).
    pub fn batch(&mut self, records: &[ProcessRecord]) -> String {
        let rows: Vec<[String; 7]> = records.iter().map(row).collect();
        let header = COLUMNS.map(|(title, _)| title.to_owned());
        let mut out = String::new();
        let widths = match &mut self.widths {
            Some(widths) => widths,
            None => {
                let widths = self
                    .widths
                    .insert(COLUMNS.map(|(title, _)| title.chars().count()));
                grow(widths, &rows);
                push_line(&mut out, &header, widths);
                widths
            }
        };
        grow(widths, &rows);
        for cells in &rows {
            push_line(&mut out, cells, widths);
        }
        self.count += records.len();
        out
    }

    /// The count line (preceded by the header when no batch came).
    pub fn finish(&mut self) -> String {
        let mut out = if self.widths.is_none() {
            self.batch(&[])
        } else {
            String::new()
        };
        out.push_str(&count_line(self.count));
        out.push('\n');
        out
    }
}

impl Default for TableWriter {
    fn default() -> Self {
        Self::new()
    }
}

fn grow(widths: &mut [usize; 7], rows: &[[String; 7]]) {
    for cells in rows {
        for (width, cell) in widths.iter_mut().zip(cells) {
            *width = (*width).max(cell.chars().count());
        }
    }
}

fn push_line(out: &mut String, cells: &[String; 7], widths: &[usize; 7]) {
    let mut line = String::new();
    for (i, (cell, ((_, align), width))) in cells.iter().zip(COLUMNS.iter().zip(widths)).enumerate()
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

/// The records as one pretty-printed JSON array, printed batch by batch: the
/// concatenation of every [`batch`](Self::batch) and [`finish`](Self::finish) is
/// exactly `serde_json::to_string_pretty(&all_records)` and a newline (`[]` when there
/// are none), whatever the batches.
#[derive(Debug, Default)]
pub struct JsonArrayWriter {
    count: usize,
}

impl JsonArrayWriter {
    /// An array with nothing printed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The text for `records`: the array's opening bracket the first time, each record
    /// indented as an element, separated by commas.
    ///
    /// # Errors
    /// When a record cannot be encoded as JSON.
    pub fn batch(&mut self, records: &[ProcessRecord]) -> Result<String, serde_json::Error> {
        let mut out = String::new();
        for record in records {
            out.push_str(if self.count == 0 { "[\n" } else { ",\n" });
            let element = serde_json::to_string_pretty(record)?;
            // JSON strings hold no raw newline, so every line break is the printer's.
            for (i, line) in element.lines().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str("  ");
                out.push_str(line);
            }
            self.count += 1;
        }
        Ok(out)
    }

    /// The closing bracket (the whole `[]` when no record came) and a newline.
    pub fn finish(&mut self) -> String {
        if self.count == 0 {
            "[]\n".to_owned()
        } else {
            "\n]\n".to_owned()
        }
    }
}

/// `event`'s name: `"started"`, `"exited"`, `"existing"`, or `"unknown"` for a kind
/// this build does not know.
pub fn event_name(event: &ProcessEvent) -> &'static str {
    match ProcessEventKind::try_from(event.kind) {
        Ok(ProcessEventKind::Started) => "started",
        Ok(ProcessEventKind::Exited) => "exited",
        Ok(ProcessEventKind::Existing) => "existing",
        Ok(ProcessEventKind::Unspecified) | Err(_) => "unknown",
    }
}

/// One watch event as a line: the time it was observed (UTC), the event, pid, parent
/// pid, name and command line (arguments joined by spaces, or the executable path
/// when the command line is empty), e.g.
/// `2026-12-03T20:07:32.123Z  started    4242    77  sleep  sleep 30`.
pub fn event_line(event: &ProcessEvent) -> String {
    let record = event.process.clone().unwrap_or_default();
    let command = if record.command_line.is_empty() {
        text_cell(record.executable_path.as_deref())
    } else {
        sanitize(&record.command_line.join(" ")).into_owned()
    };
    format!(
        "{}  {:<8}  {:>7}  {:>7}  {}  {}\n",
        utc_millis(event.observed_at),
        event_name(event),
        record.pid,
        record
            .ppid
            .map_or_else(|| MISSING.to_owned(), |p| p.to_string()),
        text_cell(Some(&record.name)),
        command
    )
}

/// One watch event as a JSON Lines line: `event`, `observed_at` (Unix ms), then the
/// process record's fields as `processes --json` prints them (`pid`, `ppid`, `name`,
/// `command_line`, ...).
///
/// # Errors
/// When the record cannot be encoded as JSON.
pub fn event_json_line(event: &ProcessEvent) -> Result<String, serde_json::Error> {
    #[derive(Serialize)]
    struct Line<'a> {
        event: &'a str,
        observed_at: i64,
        #[serde(flatten)]
        process: &'a ProcessRecord,
    }
    let record = event.process.clone().unwrap_or_default();
    let mut line = serde_json::to_string(&Line {
        event: event_name(event),
        observed_at: event.observed_at,
        process: &record,
    })?;
    line.push('\n');
    Ok(line)
}

/// `result`'s state in lowercase: `"unchanged"`, `"replaced"`, `"deleted"`, `"error"`.
pub fn state_name(result: &VerifyResult) -> &'static str {
    match result.state() {
        ExecutableState::Unchanged => "unchanged",
        ExecutableState::Replaced => "replaced",
        ExecutableState::Deleted => "deleted",
        ExecutableState::Error | ExecutableState::Unspecified => "error",
    }
}

/// A verify result as one line: pid, state, path, then the hashes, e.g.
/// `4242  replaced  /usr/bin/app  running sha256:ab12...  on disk sha256:cd34...`
/// (`on disk -` when the file there could not be hashed; only the running hash when
/// unchanged or deleted).
pub fn verify_line(result: &VerifyResult) -> String {
    let algorithm = sanitize(&result.algorithm);
    let running = format!("{algorithm}:{}", sanitize(&result.running_hash));
    let path = text_cell(Some(&result.executable_path));
    let hashes = match result.state() {
        ExecutableState::Replaced => format!(
            "running {running}  on disk {}",
            result.disk_hash.as_deref().map_or_else(
                || MISSING.to_owned(),
                |disk| format!("{algorithm}:{}", sanitize(disk))
            )
        ),
        ExecutableState::Deleted => format!("running {running}"),
        _ => running,
    };
    format!("{}  {}  {path}  {hashes}\n", result.pid, state_name(result))
}

/// A verify result as one JSON object (and a newline): `pid`, `state` (as
/// [`state_name`]), `executable_path`, `running_hash`, `disk_hash` (or null),
/// `algorithm`, `same_file`, `message` (or null).
///
/// # Errors
/// When the result cannot be encoded as JSON.
pub fn verify_json(result: &VerifyResult) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string(&serde_json::json!({
        "pid": result.pid,
        "state": state_name(result),
        "executable_path": result.executable_path,
        "running_hash": result.running_hash,
        "disk_hash": result.disk_hash,
        "algorithm": result.algorithm,
        "same_file": result.same_file,
        "message": result.error_message,
    }))?;
    text.push('\n');
    Ok(text)
}

/// Unix milliseconds as an RFC 3339 UTC time with milliseconds,
/// `1970-01-01T00:00:00.000Z`.
pub fn utc_millis(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    // Days to civil date (H. Hinnant's algorithm), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// `"1 process"` or `"<n> processes"`.
pub fn count_line(count: usize) -> String {
    if count == 1 {
        "1 process".to_owned()
    } else {
        format!("{count} processes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn table_in_batches_keeps_the_first_widths_and_widens_later() {
        let mut table = TableWriter::new();
        let mut out = table.batch(&[systemd()]);
        out.push_str(&table.batch(&[firefox()]));
        out.push_str(&table.finish());
        let expected = "\
PID  PPID  USER    MEMORY  CPU%  NAME     EXECUTABLE
  1     -  0     12.3 MiB   0.0  systemd  /usr/lib/systemd/systemd
31337  2048  1000   1.2 GiB  112.3  firefox  -
2 processes
";
        assert_eq!(out, expected);
        let mut one = TableWriter::new();
        let mut whole = one.batch(&[systemd(), firefox()]);
        whole.push_str(&one.finish());
        assert_eq!(whole, process_table(&[systemd(), firefox()]));
    }

    #[test]
    fn json_in_batches_is_exactly_the_pretty_array() {
        let records = [systemd(), firefox(), ProcessRecord::default()];
        let mut expected = serde_json::to_string_pretty(&records).expect("json");
        expected.push('\n');
        for split in 0..=records.len() {
            let mut array = JsonArrayWriter::new();
            let mut out = array.batch(&records[..split]).expect("json");
            out.push_str(&array.batch(&records[split..]).expect("json"));
            out.push_str(&array.finish());
            assert_eq!(out, expected, "split at {split}");
        }
        let mut empty = JsonArrayWriter::new();
        assert_eq!(empty.finish(), "[]\n");
        let none: Vec<ProcessRecord> = Vec::new();
        assert_eq!(
            format!("{}\n", serde_json::to_string_pretty(&none).expect("json")),
            "[]\n"
        );
    }

    fn event(kind: ProcessEventKind, record: ProcessRecord) -> ProcessEvent {
        ProcessEvent {
            kind: kind as i32,
            process: Some(record),
            observed_at: 1_764_792_452_123,
        }
    }

    #[test]
    fn event_lines() {
        let mut sleep = firefox();
        sleep.name = "sleep".into();
        sleep.command_line = vec!["sleep".into(), "30\u{1b}[2J".into()];
        assert_eq!(
            event_line(&event(ProcessEventKind::Started, sleep.clone())),
            "2025-12-03T20:07:32.123Z  started     31337     2048  sleep  sleep 30\\u{1b}[2J\n"
        );
        assert_eq!(
            event_line(&event(ProcessEventKind::Exited, systemd())),
            "2025-12-03T20:07:32.123Z  exited          1        -  systemd  /usr/lib/systemd/systemd\n"
        );
        let line = event_json_line(&event(ProcessEventKind::Exited, sleep)).expect("json");
        assert!(line.ends_with('\n') && line.lines().count() == 1, "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(value["event"], "exited");
        assert_eq!(value["observed_at"], 1_764_792_452_123_i64);
        assert_eq!(value["pid"], 31337);
        assert_eq!(value["ppid"], 2048);
        assert_eq!(value["name"], "sleep");
        assert_eq!(value["command_line"][1], "30\u{1b}[2J");
        let unknown = ProcessEvent {
            kind: 42,
            ..ProcessEvent::default()
        };
        assert_eq!(event_name(&unknown), "unknown");
    }

    #[test]
    fn utc_times() {
        assert_eq!(utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(utc_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_millis(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn verify_lines_and_json() {
        let result = VerifyResult {
            pid: 42,
            state: ExecutableState::Replaced as i32,
            executable_path: "/opt/app".into(),
            running_hash: "ab".into(),
            disk_hash: Some("cd".into()),
            algorithm: "sha256".into(),
            same_file: false,
            error_message: Some("/opt/app was replaced".into()),
        };
        assert_eq!(
            verify_line(&result),
            "42  replaced  /opt/app  running sha256:ab  on disk sha256:cd\n"
        );
        let json: serde_json::Value =
            serde_json::from_str(&verify_json(&result).expect("json")).expect("json");
        assert_eq!(json["state"], "replaced");
        assert_eq!(json["disk_hash"], "cd");
        assert_eq!(json["message"], "/opt/app was replaced");
        let unchanged = VerifyResult {
            state: ExecutableState::Unchanged as i32,
            error_message: None,
            ..result.clone()
        };
        assert_eq!(
            verify_line(&unchanged),
            "42  unchanged  /opt/app  sha256:ab\n"
        );
        let deleted = VerifyResult {
            state: ExecutableState::Deleted as i32,
            disk_hash: None,
            ..result
        };
        assert_eq!(
            verify_line(&deleted),
            "42  deleted  /opt/app  running sha256:ab\n"
        );
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
}
