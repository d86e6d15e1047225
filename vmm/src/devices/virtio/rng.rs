//! virtio-rng (entropy device): fills the driver's device-writable buffers from the host's
//! `/dev/urandom`, at most `MAX_BYTES_PER_REQUEST` per request.

use std::fs::File;
use std::path::Path;

use virtio_bindings::virtio_ids::VIRTIO_ID_RNG;
use vm_memory::Bytes;

use super::chain::{complete, pop_chain, ranges};
use super::{ActiveQueues, DeviceError, SetupError, VirtioDevice, FEATURE_VERSION_1};

pub const QUEUE_SIZE: u16 = 64;
/// Bound per request, so one request cannot keep the vCPU in the host for long.
pub const MAX_BYTES_PER_REQUEST: u64 = 64 * 1024;

pub struct Rng {
    source: File,
    active: Option<ActiveQueues>,
}

impl Rng {
    /// Opens the host entropy source (`/dev/urandom`).
    pub fn new() -> Result<Self, SetupError> {
        Self::with_source(Path::new("/dev/urandom"))
    }

    /// Uses any readable file as the entropy source (tests use a fixed pattern).
    pub fn with_source(path: &Path) -> Result<Self, SetupError> {
        let source = File::open(path).map_err(|source| SetupError {
            what: format!("virtio-rng source {}", path.display()),
            source,
        })?;
        Ok(Rng {
            source,
            active: None,
        })
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURE_VERSION_1
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), DeviceError> {
        self.active = Some(active);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActive)?;
        let queue = active.queues.get_mut(index).ok_or(DeviceError::NotActive)?;
        let mut used_any = false;
        while let Some(chain) = pop_chain(queue, &active.mem)? {
            // A request with device-readable or empty buffers is malformed: return it unfilled.
            let mut written = 0u32;
            if chain.readable.is_empty() && chain.well_formed() {
                let want = chain.writable_len().min(MAX_BYTES_PER_REQUEST);
                for (addr, len) in ranges(&chain.writable, 0, want) {
                    if active
                        .mem
                        .read_exact_volatile_from(addr, &mut self.source, len)
                        .is_err()
                    {
                        break;
                    }
                    written += len as u32;
                }
            }
            complete(queue, &active.mem, chain.head, written)?;
            used_any = true;
        }
        if used_any {
            active.interrupt.signal_used_ring();
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }
}
