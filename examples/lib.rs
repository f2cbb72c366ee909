//! The daemoneye-ipc examples live in this folder as cargo examples; run them from the
//! repository root (see `README.md` here):
//!
//! - `cargo run --release --example quickstart`: serve the process collector, list
//!   processes, hash this executable;
//! - `cargo run --release --example minimal`: the smallest complete service;
//! - `cargo run --release --example bench`: throughput and latency against raw sockets.
