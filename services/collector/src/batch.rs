//! Cutting a process listing into stream items: [`ProcessList`]s of at most a byte
//! budget each, so that any number of processes fits through a bounded frame.

use daemoneye_proto::{prost::Message, ProcessList, ProcessRecord};

/// Target size of one `stream_processes` item, in encoded bytes (256 KiB): a quarter of
/// the default 1 MiB frame, so that an item is cheap to buffer on both sides (the
/// client holds at most `stream_window` of them) and a record far larger than usual
/// still fits in a batch of its own.
pub const STREAM_BATCH_BYTES: usize = 256 * 1024;

/// Start of the element that replaces the end of a command line too long to send:
/// `"…[truncated: 1900000 of 2097152 bytes not shown]"`, always the last element.
pub const TRUNCATED_MARKER: &str = "…[truncated: ";

/// Room kept for the marker element (its text, tag and length), in bytes.
const MARKER_ROOM: usize = 96;

/// Encoded size of `record` as one element of `ProcessList.processes` (tag, length,
/// body).
pub(crate) fn element_len(record: &ProcessRecord) -> usize {
    let body = record.encoded_len();
    1 + daemoneye_proto::prost::length_delimiter_len(body) + body
}

/// Encoded size of one string element of `ProcessRecord.command_line`.
fn arg_len(arg: &str) -> usize {
    1 + daemoneye_proto::prost::length_delimiter_len(arg.len()) + arg.len()
}

/// Shortens `record`'s command line so that the record, as a list element, takes at
/// most `max_element` bytes: arguments are dropped from the end, the last one kept is
/// cut at a character boundary, and a [`TRUNCATED_MARKER`] element saying how many
/// bytes were left out is appended. Returns whether anything was cut. A record whose
/// other fields alone exceed `max_element` keeps only the marker (and stays too big).
pub(crate) fn truncate_command_line(record: &mut ProcessRecord, max_element: usize) -> bool {
    let mut size = element_len(record);
    if size <= max_element {
        return false;
    }
    let original: usize = record.command_line.iter().map(String::len).sum();
    // The record's own length prefix shrinks as it does; counting it at its current
    // size only leaves a little more room than needed.
    let limit = max_element.saturating_sub(MARKER_ROOM);
    while size > limit {
        let Some(last) = record.command_line.pop() else {
            break;
        };
        size -= arg_len(&last);
        if size < limit {
            // Keep the start of this argument in the room left.
            let room = (limit - size).saturating_sub(1 + 5);
            if room > 0 {
                let mut cut = room.min(last.len());
                while !last.is_char_boundary(cut) {
                    cut -= 1;
                }
                if cut > 0 {
                    let kept = last[..cut].to_owned();
                    size += arg_len(&kept);
                    record.command_line.push(kept);
                }
            }
        }
    }
    let shown: usize = record.command_line.iter().map(String::len).sum();
    record.command_line.push(format!(
        "{TRUNCATED_MARKER}{} of {original} bytes not shown]",
        original - shown
    ));
    true
}

/// Fills [`ProcessList`]s up to a byte budget, in the order records are pushed.
#[derive(Debug)]
pub(crate) struct Batcher {
    budget: usize,
    max_element: usize,
    current: Vec<ProcessRecord>,
    current_bytes: usize,
    /// Records whose command line was cut to fit.
    pub(crate) truncated: usize,
}

impl Batcher {
    /// Batches of at most `budget` encoded bytes; a record larger than that travels in
    /// a batch of its own, and one larger than `max_item` (a whole item: the frame's
    /// room) has its command line [truncated](truncate_command_line) first.
    pub(crate) fn new(budget: usize, max_item: usize) -> Self {
        Self {
            budget: budget.min(max_item),
            // The list's only element: its tag and length are inside `element_len`.
            max_element: max_item,
            current: Vec::new(),
            current_bytes: 0,
            truncated: 0,
        }
    }

    /// Adds `record`; returns the previous batch when `record` does not fit in it.
    pub(crate) fn push(&mut self, mut record: ProcessRecord) -> Option<ProcessList> {
        let mut size = element_len(&record);
        if size > self.max_element && truncate_command_line(&mut record, self.max_element) {
            self.truncated += 1;
            size = element_len(&record);
        }
        let full = if !self.current.is_empty() && self.current_bytes + size > self.budget {
            self.take()
        } else {
            None
        };
        self.current.push(record);
        self.current_bytes += size;
        full
    }

    /// The last, partly filled batch, if any record is left.
    pub(crate) fn finish(&mut self) -> Option<ProcessList> {
        self.take()
    }

    fn take(&mut self) -> Option<ProcessList> {
        if self.current.is_empty() {
            return None;
        }
        self.current_bytes = 0;
        Some(ProcessList {
            processes: std::mem::take(&mut self.current),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pid: u32, args: &[usize]) -> ProcessRecord {
        ProcessRecord {
            pid,
            name: format!("p{pid}"),
            executable_path: Some("/usr/bin/p".to_owned()),
            command_line: args.iter().map(|n| "a".repeat(*n)).collect(),
            collection_time: 1_700_000_000_000,
            ..ProcessRecord::default()
        }
    }

    fn batches(records: Vec<ProcessRecord>, budget: usize, max_item: usize) -> Vec<ProcessList> {
        let mut batcher = Batcher::new(budget, max_item);
        let mut out: Vec<ProcessList> = records
            .into_iter()
            .filter_map(|r| batcher.push(r))
            .collect();
        out.extend(batcher.finish());
        out
    }

    #[test]
    fn batches_stay_under_the_budget_and_keep_every_record_in_order() {
        let records: Vec<ProcessRecord> = (1..=1000).map(|pid| record(pid, &[1000])).collect();
        let out = batches(records, 64 * 1024, 1 << 20);
        assert!(out.len() > 10, "{} batches", out.len());
        for batch in &out {
            assert!(batch.encoded_len() <= 64 * 1024, "{}", batch.encoded_len());
        }
        let pids: Vec<u32> = out
            .iter()
            .flat_map(|b| &b.processes)
            .map(|r| r.pid)
            .collect();
        assert_eq!(pids, (1..=1000).collect::<Vec<_>>());
        // Full batches are nearly full: no more than one record's room is wasted.
        assert!(out[0].encoded_len() > 64 * 1024 - 1100);
        assert!(batches(Vec::new(), 1000, 1000).is_empty());
    }

    #[test]
    fn a_record_over_the_budget_travels_alone_untruncated() {
        let out = batches(
            vec![record(1, &[10]), record(2, &[5000]), record(3, &[10])],
            1000,
            1 << 20,
        );
        let sizes: Vec<usize> = out.iter().map(|b| b.processes.len()).collect();
        assert_eq!(sizes, [1, 1, 1]);
        assert_eq!(out[1].processes[0].command_line[0].len(), 5000);
    }

    #[test]
    fn one_huge_argument_is_cut_and_marked() {
        let max_item = 64 * 1024;
        let out = batches(
            vec![record(1, &[2 * 1024 * 1024])],
            STREAM_BATCH_BYTES,
            max_item,
        );
        let list = &out[0];
        assert!(list.encoded_len() <= max_item, "{}", list.encoded_len());
        let cmd = &list.processes[0].command_line;
        assert_eq!(cmd.len(), 2, "the start of the argument, then the marker");
        assert!(
            cmd[0].len() > max_item - 200,
            "most of the room is used: {}",
            cmd[0].len()
        );
        let shown = cmd[0].len();
        assert_eq!(
            cmd[1],
            format!(
                "{TRUNCATED_MARKER}{} of 2097152 bytes not shown]",
                2_097_152 - shown
            )
        );
    }

    #[test]
    fn many_arguments_are_dropped_from_the_end() {
        let mut big = record(7, &[1000; 3000]);
        big.command_line[0] = "é".repeat(600); // multi-byte: cuts stay on char boundaries
        assert!(truncate_command_line(&mut big, 100_000));
        assert!(element_len(&big) <= 100_000, "{}", element_len(&big));
        let marker = big.command_line.last().expect("marker");
        assert!(marker.starts_with(TRUNCATED_MARKER), "{marker}");
        assert!(big.command_line.len() > 90, "kept the first arguments");
        assert_eq!(big.command_line[0], "é".repeat(600));

        let mut small = record(8, &[10]);
        assert!(!truncate_command_line(&mut small, 1000));
        assert_eq!(small.command_line.len(), 1);
    }

    #[test]
    fn wide_characters_are_never_split() {
        let mut wide = record(9, &[]);
        wide.command_line = vec!["日本".repeat(100_000)];
        assert!(truncate_command_line(&mut wide, 10_000));
        assert!(element_len(&wide) <= 10_000);
        assert!(wide.command_line[0].chars().all(|c| c == '日' || c == '本'));
    }
}
