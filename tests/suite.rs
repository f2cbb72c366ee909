//! The end-to-end tests over real sockets, as one test binary: one module per concern
//! (each file below). One binary instead of one per file spares a build of the support
//! code, a link and a monomorphised copy of the runtime per file (Linux and the Windows
//! cross-build alike). `faults` and `soak` stay binaries of their own: they read
//! process-wide figures (`/proc/self`: descriptors, threads, peak memory) that other
//! tests running in the same process would disturb.

mod support;

mod end_to_end;
mod endpoint_trust;
mod hardening;
mod operations;
mod seed_compat;
mod semantics;
mod services;
mod streaming;
mod testkit;
mod tracing_spans;
mod windows_pipes;
