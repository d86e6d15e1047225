//! TODO(vmm-core)
