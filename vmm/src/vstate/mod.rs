//! KVM state: the VM file descriptor and its memory slots, guest memory, and the vCPU threads.

pub mod memory;
pub mod vcpu;
pub mod vm;
