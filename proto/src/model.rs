//! Native (idiomatic Rust) models and their conversions to and from the protobuf types.
//!
//! # Conversion rules
//!
//! The protobuf record uses strings for paths and integers for times; the
//! conversions between the two are total (they never panic):
//!
//! * `executable_path`: a non-UTF-8 path is converted lossily when going to
//!   protobuf (invalid sequences become `U+FFFD`), so it does not survive a
//!   round trip unchanged.
//! * `start_time`: whole Unix seconds on the wire. Native -> proto rounds
//!   towards the past (floor), so sub-second precision is lost, and times
//!   before 1970 become negative values. Proto -> native maps a value the
//!   platform's `SystemTime` cannot represent to `None`.
//! * `collection_time`: Unix milliseconds on the wire, floored likewise.
//!   Proto -> native maps an unrepresentable value to [`UNIX_EPOCH`] (the same
//!   value an unset proto3 field, `0`, yields).
//! * Native times beyond the `i64` range saturate to `i64::MIN` / `i64::MAX`.
//! * [`ProcessEvent`]'s `observed_at` is Unix milliseconds on the wire, like
//!   `collection_time`; its `kind` has no `UNSPECIFIED`: converting a proto event
//!   whose kind is unspecified or unknown fails with [`UnknownEventKind`].

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::pb;

/// A snapshot of one process, in native Rust types.
///
/// Convert to and from the wire type with `From`/`Into`:
/// `pb::ProcessRecord::from(record)` and `ProcessRecord::from(proto)`; see the
/// [module documentation](self) for how paths and times are mapped.
///
/// Serde uses serde's standard `SystemTime` representation, which cannot
/// serialize times before the Unix epoch (serialization returns an error).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// Operating-system process id.
    pub pid: u32,
    /// Parent process id, when known.
    pub ppid: Option<u32>,
    /// Process (image) name.
    pub name: String,
    /// Full path of the executable image, when it could be read.
    pub executable_path: Option<PathBuf>,
    /// Command line: program followed by its arguments.
    pub command_line: Vec<String>,
    /// Process start time (transported at whole-second precision).
    pub start_time: Option<SystemTime>,
    /// CPU usage in percent (100.0 = one fully busy core).
    pub cpu_usage: Option<f64>,
    /// Resident memory usage in bytes.
    pub memory_usage: Option<u64>,
    /// Hash of the executable file, lowercase hex-encoded.
    pub executable_hash: Option<String>,
    /// Algorithm that produced `executable_hash`, e.g. `"sha256"`.
    pub hash_algorithm: Option<String>,
    /// Owning user id (numeric uid on Unix, SID on Windows), as text.
    pub user_id: Option<String>,
    /// True when the process details could be read.
    pub accessible: bool,
    /// True when the executable file exists on disk.
    pub file_exists: bool,
    /// When this record was collected (transported at millisecond precision).
    pub collection_time: SystemTime,
}

impl ProcessRecord {
    /// A record for `pid` named `name`, collected now.
    ///
    /// `accessible` is `true`; `file_exists` is `false` (unknown until the
    /// executable has been checked); every optional field is `None`.
    pub fn new(pid: u32, name: impl Into<String>) -> Self {
        Self {
            pid,
            ppid: None,
            name: name.into(),
            executable_path: None,
            command_line: Vec::new(),
            start_time: None,
            cpu_usage: None,
            memory_usage: None,
            executable_hash: None,
            hash_algorithm: None,
            user_id: None,
            accessible: true,
            file_exists: false,
            collection_time: SystemTime::now(),
        }
    }
}

impl From<ProcessRecord> for pb::ProcessRecord {
    fn from(r: ProcessRecord) -> Self {
        Self {
            pid: r.pid,
            ppid: r.ppid,
            name: r.name,
            executable_path: r.executable_path.map(|p| p.to_string_lossy().into_owned()),
            command_line: r.command_line,
            start_time: r.start_time.map(unix_secs),
            cpu_usage: r.cpu_usage,
            memory_usage: r.memory_usage,
            executable_hash: r.executable_hash,
            hash_algorithm: r.hash_algorithm,
            user_id: r.user_id,
            accessible: r.accessible,
            file_exists: r.file_exists,
            collection_time: unix_millis(r.collection_time),
        }
    }
}

impl From<pb::ProcessRecord> for ProcessRecord {
    fn from(p: pb::ProcessRecord) -> Self {
        Self {
            pid: p.pid,
            ppid: p.ppid,
            name: p.name,
            executable_path: p.executable_path.map(PathBuf::from),
            command_line: p.command_line,
            start_time: p.start_time.and_then(|s| from_unix(s, Duration::from_secs)),
            cpu_usage: p.cpu_usage,
            memory_usage: p.memory_usage,
            executable_hash: p.executable_hash,
            hash_algorithm: p.hash_algorithm,
            user_id: p.user_id,
            accessible: p.accessible,
            file_exists: p.file_exists,
            collection_time: from_unix(p.collection_time, Duration::from_millis)
                .unwrap_or(UNIX_EPOCH),
        }
    }
}

/// What happened to a process, in a [`ProcessEvent`] (native counterpart of
/// [`pb::ProcessEventKind`], without its `UNSPECIFIED` value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessEventKind {
    /// The process appeared since the previous snapshot.
    Started,
    /// The process was gone (or a zombie) at this snapshot.
    Exited,
    /// The process was running when the watch started.
    Existing,
}

impl ProcessEventKind {
    /// Lowercase name: `"started"`, `"exited"` or `"existing"` (as in JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Exited => "exited",
            Self::Existing => "existing",
        }
    }
}

impl From<ProcessEventKind> for pb::ProcessEventKind {
    fn from(kind: ProcessEventKind) -> Self {
        match kind {
            ProcessEventKind::Started => Self::Started,
            ProcessEventKind::Exited => Self::Exited,
            ProcessEventKind::Existing => Self::Existing,
        }
    }
}

impl TryFrom<pb::ProcessEventKind> for ProcessEventKind {
    type Error = UnknownEventKind;

    fn try_from(kind: pb::ProcessEventKind) -> Result<Self, Self::Error> {
        match kind {
            pb::ProcessEventKind::Started => Ok(Self::Started),
            pb::ProcessEventKind::Exited => Ok(Self::Exited),
            pb::ProcessEventKind::Existing => Ok(Self::Existing),
            pb::ProcessEventKind::Unspecified => Err(UnknownEventKind(kind as i32)),
        }
    }
}

/// A `ProcessEvent` whose `kind` is `UNSPECIFIED` or a value this build does not know
/// (carried as its number).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownEventKind(pub i32);

impl std::fmt::Display for UnknownEventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unknown process event kind {}", self.0)
    }
}

impl std::error::Error for UnknownEventKind {}

/// One event of a process watch, in native Rust types.
///
/// Convert with `pb::ProcessEvent::from(event)` and `ProcessEvent::try_from(proto)`;
/// the latter fails only on an unknown `kind`. A proto event without a `process`
/// converts to a default record (pid 0), as an unset proto3 message field reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessEvent {
    /// What happened.
    pub kind: ProcessEventKind,
    /// The process, as read when the watch first saw it (for an exit too).
    pub process: ProcessRecord,
    /// When the snapshot that saw it was taken (transported at millisecond precision).
    pub observed_at: SystemTime,
}

impl From<ProcessEvent> for pb::ProcessEvent {
    fn from(event: ProcessEvent) -> Self {
        Self {
            kind: pb::ProcessEventKind::from(event.kind) as i32,
            process: Some(event.process.into()),
            observed_at: unix_millis(event.observed_at),
        }
    }
}

impl TryFrom<pb::ProcessEvent> for ProcessEvent {
    type Error = UnknownEventKind;

    fn try_from(event: pb::ProcessEvent) -> Result<Self, Self::Error> {
        let kind = pb::ProcessEventKind::try_from(event.kind)
            .map_err(|_| UnknownEventKind(event.kind))
            .and_then(ProcessEventKind::try_from)?;
        Ok(Self {
            kind,
            process: event.process.unwrap_or_default().into(),
            observed_at: from_unix(event.observed_at, Duration::from_millis).unwrap_or(UNIX_EPOCH),
        })
    }
}

/// Unix time of `t` in whole seconds, floored, saturating at the `i64` bounds.
fn unix_secs(t: SystemTime) -> i64 {
    signed_floor(t, |d| (u128::from(d.as_secs()), d.subsec_nanos() != 0))
}

/// Unix time of `t` in whole milliseconds, floored, saturating at the `i64` bounds.
fn unix_millis(t: SystemTime) -> i64 {
    signed_floor(t, |d| (d.as_millis(), d.subsec_nanos() % 1_000_000 != 0))
}

/// Signed offset of `t` from the epoch in the unit given by `split`, which
/// returns the whole units of a duration and whether a remainder was dropped.
fn signed_floor(t: SystemTime, split: impl Fn(Duration) -> (u128, bool)) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(split(after).0).unwrap_or(i64::MAX),
        Err(err) => {
            let (whole, remainder) = split(err.duration());
            let magnitude = whole + u128::from(remainder);
            i64::try_from(magnitude).map_or(i64::MIN, |m| -m)
        }
    }
}

/// `value` units (made by `unit`) from the epoch, or `None` if `SystemTime`
/// cannot represent it on this platform.
fn from_unix(value: i64, unit: fn(u64) -> Duration) -> Option<SystemTime> {
    let offset = unit(value.unsigned_abs());
    if value >= 0 {
        UNIX_EPOCH.checked_add(offset)
    } else {
        UNIX_EPOCH.checked_sub(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at_secs(secs: i64) -> SystemTime {
        from_unix(secs, Duration::from_secs).expect("representable")
    }

    fn full_record() -> ProcessRecord {
        ProcessRecord {
            pid: 4242,
            ppid: Some(1),
            name: "firefox".to_string(),
            executable_path: Some(PathBuf::from("/usr/bin/firefox")),
            command_line: vec!["/usr/bin/firefox".to_string(), "--private".to_string()],
            start_time: Some(at_secs(1_700_000_000)),
            cpu_usage: Some(3.25),
            memory_usage: Some(512 * 1024 * 1024),
            executable_hash: Some("deadbeef".to_string()),
            hash_algorithm: Some("sha256".to_string()),
            user_id: Some("1000".to_string()),
            accessible: true,
            file_exists: true,
            collection_time: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
        }
    }

    #[test]
    fn new_defaults() {
        let before = SystemTime::now();
        let r = ProcessRecord::new(1234, "firefox".to_string());
        assert_eq!(r.pid, 1234);
        assert_eq!(r.name, "firefox");
        assert!(r.accessible);
        assert!(!r.file_exists);
        assert_eq!(r.ppid, None);
        assert!(r.command_line.is_empty());
        assert!(r.collection_time >= before && r.collection_time <= SystemTime::now());
    }

    #[test]
    fn native_to_proto_fields() {
        let p = pb::ProcessRecord::from(full_record());
        assert_eq!(p.pid, 4242);
        assert_eq!(p.ppid, Some(1));
        assert_eq!(p.executable_path.as_deref(), Some("/usr/bin/firefox"));
        assert_eq!(p.start_time, Some(1_700_000_000));
        assert_eq!(p.collection_time, 1_700_000_000_123);
        assert_eq!(p.memory_usage, Some(512 * 1024 * 1024));
    }

    #[test]
    fn round_trip_native_proto_native() {
        let native = full_record();
        let proto: crate::ProtoProcessRecord = native.clone().into();
        let back: ProcessRecord = proto.into();
        assert_eq!(back, native);

        let minimal = ProcessRecord {
            collection_time: UNIX_EPOCH + Duration::from_millis(5),
            ..ProcessRecord::new(1, "init")
        };
        let back = ProcessRecord::from(pb::ProcessRecord::from(minimal.clone()));
        assert_eq!(back, minimal);
    }

    #[test]
    fn round_trip_proto_native_proto() {
        let proto = pb::ProcessRecord {
            pid: 7,
            start_time: Some(-86_400),
            collection_time: -1,
            cpu_usage: Some(0.0),
            ..Default::default()
        };
        let back = pb::ProcessRecord::from(ProcessRecord::from(proto.clone()));
        assert_eq!(back, proto);
    }

    #[test]
    fn times_are_truncated_to_wire_precision() {
        let native = ProcessRecord {
            start_time: Some(UNIX_EPOCH + Duration::new(100, 999_999_999)),
            collection_time: UNIX_EPOCH + Duration::new(100, 1_999_999),
            ..ProcessRecord::new(1, "p")
        };
        let p = pb::ProcessRecord::from(native);
        assert_eq!(p.start_time, Some(100));
        assert_eq!(p.collection_time, 100_001);
    }

    #[test]
    fn times_before_the_epoch_floor() {
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_millis(1_500)), -2);
        assert_eq!(unix_secs(UNIX_EPOCH - Duration::from_secs(2)), -2);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_micros(1)), -1);
        assert_eq!(unix_millis(UNIX_EPOCH - Duration::from_millis(3)), -3);
        assert_eq!(unix_millis(UNIX_EPOCH), 0);
    }

    #[test]
    fn out_of_range_times_do_not_panic() {
        // i64::MAX seconds may or may not be representable, depending on the
        // platform; either way, nothing panics and the result is consistent.
        for secs in [i64::MAX, i64::MIN, i64::MIN + 1] {
            let proto = pb::ProcessRecord {
                start_time: Some(secs),
                collection_time: secs,
                ..Default::default()
            };
            let native = ProcessRecord::from(proto);
            if let Some(t) = native.start_time {
                assert_eq!(unix_secs(t), secs);
            }
            let _ = pb::ProcessRecord::from(native);
        }
        if let Some(far) = UNIX_EPOCH.checked_add(Duration::from_secs(u64::MAX / 2)) {
            assert_eq!(unix_millis(far), i64::MAX);
        }
        if let Some(far) = UNIX_EPOCH.checked_sub(Duration::from_secs(u64::MAX / 2)) {
            assert_eq!(unix_millis(far), i64::MIN);
        }
    }

    #[test]
    fn unset_collection_time_is_the_epoch() {
        let native = ProcessRecord::from(pb::ProcessRecord::default());
        assert_eq!(native.collection_time, UNIX_EPOCH);
        assert_eq!(native.start_time, None);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_path_is_lossy() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;

        let native = ProcessRecord {
            executable_path: Some(PathBuf::from(OsStr::from_bytes(b"/tmp/bad\xFFname"))),
            ..ProcessRecord::new(1, "p")
        };
        let p = pb::ProcessRecord::from(native);
        assert_eq!(p.executable_path.as_deref(), Some("/tmp/bad\u{FFFD}name"));
    }

    #[test]
    fn process_event_round_trip_and_unknown_kinds() {
        let event = ProcessEvent {
            kind: ProcessEventKind::Exited,
            process: full_record(),
            observed_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_456),
        };
        let proto = pb::ProcessEvent::from(event.clone());
        assert_eq!(proto.kind, pb::ProcessEventKind::Exited as i32);
        assert_eq!(proto.observed_at, 1_700_000_000_456);
        assert_eq!(ProcessEvent::try_from(proto), Ok(event));

        for kind in [0, 99] {
            let proto = pb::ProcessEvent {
                kind,
                ..Default::default()
            };
            assert_eq!(ProcessEvent::try_from(proto), Err(UnknownEventKind(kind)));
        }
        let bare = pb::ProcessEvent {
            kind: pb::ProcessEventKind::Started as i32,
            ..Default::default()
        };
        let native = ProcessEvent::try_from(bare).expect("known kind");
        assert_eq!(native.process.pid, 0);
        assert_eq!(native.observed_at, UNIX_EPOCH);
        assert_eq!(
            [
                ProcessEventKind::Started,
                ProcessEventKind::Exited,
                ProcessEventKind::Existing
            ]
            .map(ProcessEventKind::as_str),
            ["started", "exited", "existing"]
        );
        assert_eq!(
            serde_json::to_string(&ProcessEventKind::Started).expect("json"),
            "\"started\""
        );
    }

    #[test]
    fn serde_json_round_trip() {
        let native = full_record();
        let json = serde_json::to_string(&native).expect("serializes");
        let back: ProcessRecord = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, native);
    }
}
