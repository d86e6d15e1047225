//! Board profiles (filled in by the boards work).
