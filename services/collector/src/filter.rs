//! Compiling a [`ProcessFilter`] into a matcher.

use std::path::Path;

use daemoneye_ipc::Status;
use daemoneye_proto::ProcessFilter;
use globset::{ErrorKind, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::limits::{self, excerpt};

/// A [`ProcessFilter`] ready to test processes against.
///
/// Every non-empty criterion must match (AND between criteria); within a list any one
/// entry may match (OR). An empty filter matches every process.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    names: Vec<String>,
    pids: Vec<u32>,
    executable: Option<GlobSet>,
}

impl Matcher {
    /// Checks `filter` against the [bounds](crate::limits) and compiles it. An empty or
    /// absent `executable_pattern` means "no restriction". Compiling a pattern costs up
    /// to a few milliseconds: call this on a blocking thread.
    ///
    /// The pattern uses shell glob syntax with `/` as a separator that only `**` (and
    /// not `*` or `?`) may cross: `/usr/bin/*` matches `/usr/bin/ls` but not
    /// `/usr/bin/sub/ls`; `**/ls` matches `ls` in any directory.
    ///
    /// # Errors
    /// `INVALID_ARGUMENT` when a field is over its bound, or when the pattern is not a
    /// valid glob (or too complex to compile); the message quotes an excerpt of it.
    pub(crate) fn new(filter: ProcessFilter) -> Result<Self, Status> {
        limits::check_filter(&filter)?;
        let ProcessFilter {
            process_names: names,
            pids,
            executable_pattern,
        } = filter;
        let executable = match executable_pattern.as_deref() {
            None | Some("") => None,
            Some(pattern) => Some(compile(pattern)?),
        };
        Ok(Self {
            names,
            pids,
            executable,
        })
    }

    /// The pids this filter is restricted to (empty: any pid).
    pub(crate) fn pids(&self) -> &[u32] {
        &self.pids
    }

    /// Whether a process matches every criterion.
    ///
    /// A name criterion matches the process name or the file name of its executable
    /// (on Linux the process name is the kernel's `comm`, truncated to 15 bytes, and a
    /// process may change it at will). A process whose executable path is unknown never
    /// matches an executable pattern.
    pub(crate) fn matches(&self, pid: u32, name: &str, executable: Option<&Path>) -> bool {
        let pid_ok = self.pids.is_empty() || self.pids.contains(&pid);
        let name_ok = self.names.is_empty() || {
            let file_name = executable
                .and_then(Path::file_name)
                .map(|n| n.to_string_lossy());
            self.names
                .iter()
                .any(|wanted| wanted == name || file_name.as_deref() == Some(wanted.as_str()))
        };
        let exe_ok = match (&self.executable, executable) {
            (None, _) => true,
            (Some(glob), Some(path)) => glob.is_match(path),
            (Some(_), None) => false,
        };
        pid_ok && name_ok && exe_ok
    }
}

/// Compiles one glob, with `/` as a literal separator.
///
/// A set of one glob rather than `Glob::compile_matcher`, which panics when the regex
/// it builds is over globset's size limit; the set reports that as an error.
fn compile(pattern: &str) -> Result<GlobSet, Status> {
    let invalid = |reason: String| {
        Status::invalid_argument(format!(
            "executable_pattern {} is not a valid glob: {reason}",
            excerpt(pattern)
        ))
    };
    let glob = GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map_err(|error| invalid(describe(error.kind())))?;
    GlobSetBuilder::new()
        .add(glob)
        .build()
        .map_err(|error| invalid(describe(error.kind())))
}

/// What is wrong with a glob, in words that never quote it: globset's own messages
/// (`Error`'s `Display`, and a regex error's text) repeat the pattern.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::InvalidRange(start, end) => format!(
            "invalid character range {}-{}",
            start.escape_debug(),
            end.escape_debug()
        ),
        ErrorKind::Regex(_) => "too complex to compile".to_owned(),
        // Fixed texts, such as "unclosed character class; missing ']'".
        fixed @ (ErrorKind::InvalidRecursive
        | ErrorKind::UnclosedClass
        | ErrorKind::UnopenedAlternates
        | ErrorKind::UnclosedAlternates
        | ErrorKind::NestedAlternates
        | ErrorKind::DanglingEscape) => fixed.to_string(),
        // A kind added by a later globset, whose text might quote the pattern.
        _ => "invalid glob syntax".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(names: &[&str], pids: &[u32], pattern: Option<&str>) -> Matcher {
        Matcher::new(ProcessFilter {
            process_names: names.iter().map(|n| (*n).to_owned()).collect(),
            pids: pids.to_vec(),
            executable_pattern: pattern.map(str::to_owned),
        })
        .expect("valid filter")
    }

    const LS: Option<&Path> = None;

    #[test]
    fn empty_filter_matches_everything() {
        let m = filter(&[], &[], None);
        assert!(m.matches(1, "init", Some(Path::new("/sbin/init"))));
        assert!(m.matches(2, "kthreadd", LS));
        let m = filter(&[], &[], Some(""));
        assert!(
            m.matches(2, "kthreadd", LS),
            "empty pattern is no restriction"
        );
    }

    #[test]
    fn criteria_are_anded_and_lists_ored() {
        let m = filter(&["bash", "zsh"], &[10, 11], Some("/bin/*"));
        assert!(m.matches(10, "bash", Some(Path::new("/bin/bash"))));
        assert!(m.matches(11, "zsh", Some(Path::new("/bin/zsh"))));
        assert!(!m.matches(12, "bash", Some(Path::new("/bin/bash"))), "pid");
        assert!(!m.matches(10, "fish", Some(Path::new("/bin/fish"))), "name");
        assert!(
            !m.matches(10, "bash", Some(Path::new("/opt/bash"))),
            "pattern"
        );
        assert!(
            !m.matches(10, "bash", None),
            "no exe never matches a pattern"
        );
    }

    #[test]
    fn name_matches_comm_or_executable_file_name() {
        let m = filter(&["systemd-journald"], &[], None);
        let exe = Path::new("/usr/lib/systemd/systemd-journald");
        assert!(m.matches(1, "systemd-journal", Some(exe)));
        assert!(!m.matches(1, "systemd-journal", None));
        assert!(!filter(&["journal"], &[], None).matches(1, "systemd-journal", Some(exe)));
    }

    #[test]
    fn star_does_not_cross_directories_but_double_star_does() {
        let m = filter(&[], &[], Some("/usr/bin/*"));
        assert!(m.matches(1, "ls", Some(Path::new("/usr/bin/ls"))));
        assert!(!m.matches(1, "ls", Some(Path::new("/usr/bin/sub/ls"))));
        let m = filter(&[], &[], Some("**/ls"));
        assert!(m.matches(1, "ls", Some(Path::new("/usr/bin/sub/ls"))));
        assert!(!m.matches(1, "ls", Some(Path::new("/usr/bin/lsof"))));
    }

    #[test]
    fn invalid_glob_is_invalid_argument_naming_the_pattern() {
        let error = Matcher::new(ProcessFilter {
            executable_pattern: Some("/usr/[bin".to_owned()),
            ..ProcessFilter::default()
        })
        .expect_err("unclosed class");
        assert_eq!(error.code(), daemoneye_ipc::Code::InvalidArgument);
        assert!(error.message().contains("\"/usr/[bin\""), "{error}");
    }

    #[test]
    fn glob_errors_quote_only_an_excerpt_of_the_pattern() {
        let long_invalid = format!("{}[z-a]", "a".repeat(1000));
        let error = Matcher::new(ProcessFilter {
            executable_pattern: Some(long_invalid),
            ..ProcessFilter::default()
        })
        .expect_err("reversed range");
        assert_eq!(error.code(), daemoneye_ipc::Code::InvalidArgument);
        assert!(
            error.message().contains("invalid character range z-a"),
            "{error}"
        );
        assert!(error.message().contains("(1005 bytes)"), "{error}");
        assert!(error.message().len() < 200, "{error}");
    }

    #[test]
    fn the_most_complex_patterns_within_the_bounds_compile() {
        // Each at most MAX_PATTERN_BYTES long with at most MAX_PATTERN_WILDCARDS
        // wildcards; each must compile (globset must not panic or give up on them).
        let patterns = [
            "*".repeat(32),
            "**/".repeat(16),
            "[!a]".repeat(32),
            "?".repeat(32),
            format!("{}{}", "{a,".repeat(16), "}".repeat(16)),
            format!("{{{}}}", vec!["abcdefg"; 120].join(",")),
            format!("[!a-{}]", '\u{10FFFF}').repeat(32),
        ];
        for pattern in patterns {
            assert!(pattern.len() <= limits::MAX_PATTERN_BYTES, "{pattern}");
            if let Err(error) = Matcher::new(ProcessFilter {
                executable_pattern: Some(pattern.clone()),
                ..ProcessFilter::default()
            }) {
                panic!("{pattern:?}: {error}");
            }
        }
    }
}
