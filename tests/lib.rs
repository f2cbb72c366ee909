//! End-to-end tests live in this folder as cargo integration tests.
