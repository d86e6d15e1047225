//! Address bus: maps guest-physical (or port) ranges to devices.
