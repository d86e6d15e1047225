//! Harness for booting emulated boards.
