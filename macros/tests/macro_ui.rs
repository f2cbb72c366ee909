//! Compile-time behaviour of `#[ipc_service]`: every rejected shape fails with an error
//! on the user's own tokens (expected output in `tests/ui/fail/*.stderr`), and a full
//! ordinary service compiles and runs.
//!
//! Regenerate the expected output with `TRYBUILD=overwrite cargo test -p
//! daemoneye-ipc-macros --test macro_ui` and review the diff. The `.stderr` files pin
//! rustc's exact wording, so a new toolchain may need them regenerated.

// trybuild runs cargo and rustc, which a Windows test binary under Wine cannot run (CI
// cross-builds for Windows on Linux); the macro's expansion does not depend on the target.
#[cfg(unix)]
#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
