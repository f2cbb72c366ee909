//! Bounds on request fields, checked before any work is done.
//!
//! A request frame may be up to `max_frame_bytes` (1 MiB by default), and every field
//! in it is the peer's choice. Each field [`SystemCollector`](crate::SystemCollector)
//! works from is bounded here, so that the cost of a call (CPU, memory, log and answer
//! size) is bounded by these constants rather than by the frame. A request over a bound
//! is answered `INVALID_ARGUMENT` naming the field, its size and the bound; a message
//! quotes at most a short, escaped [`excerpt`] of a field, never the whole of it.

use std::fmt::Write as _;

use daemoneye_ipc::Status;
use daemoneye_proto::{HashCheck, HashRequest, ProcessFilter, VerifyRequest, WatchRequest};

/// Longest `ProcessFilter.executable_pattern`, in bytes. Paths are at most 4096 bytes
/// on Linux; a glob worth matching them against is much shorter.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// Most wildcards in `ProcessFilter.executable_pattern`: the characters `*`, `?`, `[`
/// and `{`, each counted wherever it appears (escaped or inside a class too). Each one
/// adds a state set to the compiled matcher; 32 is far more than a real pattern needs.
pub const MAX_PATTERN_WILDCARDS: usize = 32;

/// Most entries in `ProcessFilter.process_names`.
pub const MAX_PROCESS_NAMES: usize = 256;

/// Longest entry of `ProcessFilter.process_names`, in bytes. A name is compared with a
/// process name or an executable's file name (at most 255 bytes on Linux).
pub const MAX_PROCESS_NAME_BYTES: usize = 1024;

/// Most entries in `ProcessFilter.pids`.
pub const MAX_PIDS: usize = 4096;

/// Longest path to hash (`HashRequest.path`, `HashCheck.executable_path`), in bytes:
/// Linux's `PATH_MAX`.
pub const MAX_PATH_BYTES: usize = 4096;

/// Longest hash algorithm name (`HashRequest.algorithm`, `HashCheck.hash_algorithm`),
/// in bytes.
pub const MAX_ALGORITHM_BYTES: usize = 32;

/// Longest expected hash (`HashRequest.expected_hash`, `HashCheck.expected_hash`), in
/// bytes: twice the 64 hex digits of a SHA-256, room for longer digests.
pub const MAX_EXPECTED_HASH_BYTES: usize = 256;

/// Longest `DetectionTask.task_id`, in bytes; it is echoed in the answer.
pub const MAX_TASK_ID_BYTES: usize = 256;

/// Most bytes of escaped text an [`excerpt`] shows before it is cut.
const EXCERPT_BYTES: usize = 64;

/// A short, printable rendering of a peer's `text` for messages and logs: quoted,
/// with quotes, backslashes and control characters escaped (as `{:?}` does), cut after
/// about [`EXCERPT_BYTES`] bytes and then marked `…` with the full length in bytes.
/// Never longer than 100 bytes, whatever `text` is.
pub(crate) fn excerpt(text: &str) -> String {
    let mut shown = String::from("\"");
    let mut cut = false;
    for c in text.chars() {
        let escaped: String = c.escape_debug().collect();
        if shown.len() + escaped.len() > EXCERPT_BYTES {
            cut = true;
            break;
        }
        shown.push_str(&escaped);
    }
    shown.push('"');
    if cut {
        let _ = write!(shown, "… ({} bytes)", text.len());
    }
    shown
}

/// `INVALID_ARGUMENT` when `value` is longer than `max` bytes; the message names the
/// field, both sizes and, when `quote` is set, an excerpt of the value.
fn check_len(field: &str, value: &str, max: usize, quote: bool) -> Result<(), Status> {
    if value.len() <= max {
        return Ok(());
    }
    let mut message = format!(
        "{field} is {} bytes, more than the {max} allowed",
        value.len()
    );
    if quote {
        let _ = write!(message, ": {}", excerpt(value));
    }
    Err(Status::invalid_argument(message))
}

/// `INVALID_ARGUMENT` when a list has more than `max` entries.
fn check_count(field: &str, count: usize, max: usize) -> Result<(), Status> {
    if count <= max {
        return Ok(());
    }
    Err(Status::invalid_argument(format!(
        "{field} has {count} entries, more than the {max} allowed"
    )))
}

/// The wildcards of `pattern` as [`MAX_PATTERN_WILDCARDS`] counts them.
fn wildcards(pattern: &str) -> usize {
    pattern
        .bytes()
        .filter(|b| matches!(b, b'*' | b'?' | b'[' | b'{'))
        .count()
}

/// Checks every field of `filter` against its bound, cheapest first; does not compile
/// the pattern (see [`Matcher::new`](crate::filter::Matcher::new)).
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first field over its bound.
pub(crate) fn check_filter(filter: &ProcessFilter) -> Result<(), Status> {
    check_count("pids", filter.pids.len(), MAX_PIDS)?;
    check_count(
        "process_names",
        filter.process_names.len(),
        MAX_PROCESS_NAMES,
    )?;
    for (index, name) in filter.process_names.iter().enumerate() {
        check_len(
            &format!("process_names[{index}]"),
            name,
            MAX_PROCESS_NAME_BYTES,
            true,
        )?;
    }
    if let Some(pattern) = filter.executable_pattern.as_deref() {
        check_len("executable_pattern", pattern, MAX_PATTERN_BYTES, true)?;
        let count = wildcards(pattern);
        if count > MAX_PATTERN_WILDCARDS {
            return Err(Status::invalid_argument(format!(
                "executable_pattern {} has {count} wildcards (* ? [ {{), more than the \
                 {MAX_PATTERN_WILDCARDS} allowed",
                excerpt(pattern)
            )));
        }
    }
    Ok(())
}

/// Checks the fields of a hash request, named `path`, `algorithm` and `expected_hash`
/// as in [`HashRequest`] unless the caller names them otherwise.
fn check_hash_fields(
    [path_field, algorithm_field, expected_field]: [&str; 3],
    path: &str,
    algorithm: &str,
    expected: &str,
) -> Result<(), Status> {
    check_len(path_field, path, MAX_PATH_BYTES, true)?;
    check_len(algorithm_field, algorithm, MAX_ALGORITHM_BYTES, true)?;
    check_len(expected_field, expected, MAX_EXPECTED_HASH_BYTES, false)
}

/// Checks every field of `request` against its bound.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first field over its bound.
pub(crate) fn check_hash_request(request: &HashRequest) -> Result<(), Status> {
    check_hash_fields(
        ["path", "algorithm", "expected_hash"],
        &request.path,
        &request.algorithm,
        request.expected_hash.as_deref().unwrap_or_default(),
    )
}

/// Checks a watch request: its filter's fields, named `filter.<field>`.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first field over its bound.
pub(crate) fn check_watch(request: &WatchRequest) -> Result<(), Status> {
    match &request.filter {
        Some(filter) => check_filter(filter)
            .map_err(|status| Status::invalid_argument(format!("filter.{}", status.message()))),
        None => Ok(()),
    }
}

/// Checks a verify request: a pid (not 0) and an algorithm name within its bound.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the field.
pub(crate) fn check_verify(request: &VerifyRequest) -> Result<(), Status> {
    if request.pid == 0 {
        return Err(Status::invalid_argument("pid must be a process id, not 0"));
    }
    check_len("algorithm", &request.algorithm, MAX_ALGORITHM_BYTES, true)
}

/// Checks a seed-era task's `task_id` against its bound.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first field over its bound.
pub(crate) fn check_task_id(task_id: &str) -> Result<(), Status> {
    check_len("task_id", task_id, MAX_TASK_ID_BYTES, true)
}

/// Checks a seed-era [`HashCheck`], naming its fields as that message does.
///
/// # Errors
/// `INVALID_ARGUMENT` naming the first field over its bound.
pub(crate) fn check_hash_check(check: &HashCheck) -> Result<(), Status> {
    check_hash_fields(
        [
            "hash_check.executable_path",
            "hash_check.hash_algorithm",
            "hash_check.expected_hash",
        ],
        &check.executable_path,
        &check.hash_algorithm,
        &check.expected_hash,
    )
}

#[cfg(test)]
mod tests {
    use daemoneye_ipc::Code;

    use super::*;

    #[test]
    fn excerpts_are_short_escaped_and_say_how_long_the_text_was() {
        assert_eq!(excerpt("/usr/[bin"), "\"/usr/[bin\"");
        assert_eq!(excerpt("a\nb\u{1b}[31m\"c"), r#""a\nb\u{1b}[31m\"c""#);
        let long = "*a".repeat(500_000);
        let shown = excerpt(&long);
        assert!(shown.len() <= 100, "{} bytes: {shown}", shown.len());
        assert!(shown.ends_with("… (1000000 bytes)"), "{shown}");
        let controls = "\u{7}".repeat(10_000);
        assert!(excerpt(&controls).len() <= 100);
        let wide = "\u{10FFFF}".repeat(10_000);
        assert!(excerpt(&wide).len() <= 100);
    }

    fn refused(result: Result<(), Status>) -> String {
        let status = result.expect_err("over a bound");
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().len() < 256, "{status}");
        status.message().to_owned()
    }

    #[test]
    fn filters_at_the_bounds_pass_and_one_more_is_refused() {
        let at_bounds = ProcessFilter {
            process_names: vec!["n".repeat(MAX_PROCESS_NAME_BYTES); MAX_PROCESS_NAMES],
            pids: vec![1; MAX_PIDS],
            executable_pattern: Some(format!(
                "{}{}",
                "*".repeat(MAX_PATTERN_WILDCARDS),
                "a".repeat(MAX_PATTERN_BYTES - MAX_PATTERN_WILDCARDS)
            )),
        };
        check_filter(&at_bounds).expect("at the bounds");

        let mut filter = at_bounds.clone();
        filter.pids.push(1);
        let message = refused(check_filter(&filter));
        assert!(message.contains("pids has 4097 entries"), "{message}");

        let mut filter = at_bounds.clone();
        filter.process_names.push("x".to_owned());
        assert!(refused(check_filter(&filter)).contains("process_names has 257"));

        let mut filter = at_bounds.clone();
        filter.process_names[3].push('x');
        assert!(refused(check_filter(&filter)).contains("process_names[3] is 1025 bytes"));

        let mut filter = at_bounds.clone();
        filter.executable_pattern = Some("*a".repeat(500_000));
        let message = refused(check_filter(&filter));
        assert!(
            message.contains("executable_pattern is 1000000 bytes, more than the 1024"),
            "{message}"
        );

        let mut filter = at_bounds;
        filter.executable_pattern = Some("{a}?".repeat(17));
        let message = refused(check_filter(&filter));
        assert!(message.contains("has 34 wildcards"), "{message}");
    }

    #[test]
    fn hash_fields_are_bounded_and_named_as_in_their_message() {
        let request = HashRequest {
            path: "/".repeat(MAX_PATH_BYTES),
            algorithm: "a".repeat(MAX_ALGORITHM_BYTES),
            expected_hash: Some("0".repeat(MAX_EXPECTED_HASH_BYTES)),
        };
        check_hash_request(&request).expect("at the bounds");
        let mut long = request.clone();
        long.path.push('/');
        assert!(refused(check_hash_request(&long)).starts_with("path is 4097 bytes"));
        let mut long = request.clone();
        long.algorithm.push('a');
        assert!(refused(check_hash_request(&long)).starts_with("algorithm is 33 bytes"));
        let mut long = request;
        long.expected_hash = Some("0".repeat(1_000_000));
        assert_eq!(
            refused(check_hash_request(&long)),
            "expected_hash is 1000000 bytes, more than the 256 allowed"
        );

        let check = HashCheck {
            expected_hash: String::new(),
            hash_algorithm: String::new(),
            executable_path: "x".repeat(MAX_PATH_BYTES + 1),
        };
        assert!(refused(check_hash_check(&check)).starts_with("hash_check.executable_path is"));
        assert!(refused(check_task_id(&"t".repeat(257))).starts_with("task_id is 257 bytes"));
        check_task_id(&"t".repeat(256)).expect("at the bound");
    }
}
