//! virtio-net over a `NetBackend` (a tap in production, a socket pair in tests).
//!
//! Queue 0 receives (host to guest), queue 1 transmits. Features: VERSION_1 and MAC only (no
//! offloads, no mergeable buffers), so a frame is at most `MAX_FRAME_LEN` bytes after the
//! 12-byte virtio-net header.
//!
//! TX runs on the driver's notify. RX is event driven: the VMM polls `rx_fd()` edge-triggered
//! and calls `process_rx()`, which reads frames until the backend has none left or the guest
//! has no receive buffers. In the latter case the frame read last is held and delivered when
//! the driver adds buffers (its notify of queue 0), so no frame is lost and the loop never
//! spins on a readable fd it cannot drain.

use std::io;
use std::os::fd::RawFd;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;

use super::chain::{complete, pop_chain, read_bytes, unpop, write_bytes};
use super::tap::{NetBackend, VNET_HDR_LEN};
use super::{ActiveQueues, DeviceError, VirtioDevice, FEATURE_VERSION_1};

pub const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// Largest Ethernet frame (without the virtio-net header) carried either way: a 64 KiB
/// maximum tap MTU plus the Ethernet header.
pub const MAX_FRAME_LEN: usize = 65535 + 14;
const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

/// Counters, for status and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct NetStats {
    pub rx_frames: u64,
    pub tx_frames: u64,
    /// Frames from the host that no guest buffer could hold.
    pub rx_dropped: u64,
    /// Malformed transmit requests, or frames the backend refused.
    pub tx_dropped: u64,
}

pub struct Net {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    active: Option<ActiveQueues>,
    /// Holds a received packet (header + frame) while no guest buffer is free.
    rx_buf: Vec<u8>,
    rx_pending: usize,
    tx_buf: Vec<u8>,
    stats: NetStats,
}

impl Net {
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        Net {
            backend,
            mac,
            active: None,
            rx_buf: Vec::new(),
            rx_pending: 0,
            tx_buf: Vec::new(),
            stats: NetStats::default(),
        }
    }

    pub fn stats(&self) -> NetStats {
        self.stats
    }

    /// Transmits what the driver queued on the TX queue.
    fn process_tx(&mut self) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActive)?;
        let queue = &mut active.queues[TX_QUEUE];
        let mut used_any = false;
        while let Some(chain) = pop_chain(queue, &active.mem)? {
            let len = chain.readable_len();
            let ok = chain.well_formed()
                && chain.writable.is_empty()
                && len >= VNET_HDR_LEN as u64
                && len <= MAX_PACKET_LEN as u64;
            if ok {
                if self.tx_buf.len() < MAX_PACKET_LEN {
                    self.tx_buf.resize(MAX_PACKET_LEN, 0);
                }
                let packet = &mut self.tx_buf[..len as usize];
                if read_bytes(&active.mem, &chain.readable, 0, packet) {
                    match self.backend.send(packet) {
                        Ok(_) => self.stats.tx_frames += 1,
                        // A full or down backend drops the frame, as a wire would.
                        Err(_) => self.stats.tx_dropped += 1,
                    }
                } else {
                    self.stats.tx_dropped += 1;
                }
            } else {
                self.stats.tx_dropped += 1;
            }
            complete(queue, &active.mem, chain.head, 0)?;
            used_any = true;
        }
        if used_any {
            active.interrupt.signal_used_ring();
        }
        Ok(())
    }

    /// Moves received frames into guest buffers while both exist.
    fn deliver_rx(&mut self) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActive)?;
        if self.rx_buf.len() < MAX_PACKET_LEN {
            self.rx_buf.resize(MAX_PACKET_LEN, 0);
        }
        let mut used_any = false;
        let mut result = Ok(());
        loop {
            if self.rx_pending == 0 {
                match self.backend.recv(&mut self.rx_buf) {
                    Ok(n) if n >= VNET_HDR_LEN => self.rx_pending = n,
                    Ok(_) => {
                        // Shorter than a header: not a frame.
                        self.stats.rx_dropped += 1;
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        result = Err(DeviceError::Backend(format!("receive: {e}")));
                        break;
                    }
                }
            }
            let queue = &mut active.queues[RX_QUEUE];
            let chain = match pop_chain(queue, &active.mem) {
                Ok(Some(chain)) => chain,
                // No buffer: keep the frame until the driver adds some.
                Ok(None) => break,
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            };
            let len = self.rx_pending;
            // Without mergeable buffers, num_buffers is always 1.
            self.rx_buf[10..12].copy_from_slice(&1u16.to_le_bytes());
            let fits = chain.well_formed()
                && chain.readable.is_empty()
                && chain.writable_len() >= len as u64;
            if !fits {
                if chain.well_formed() && chain.readable.is_empty() {
                    // A valid buffer that is merely too small for this frame: drop the frame,
                    // keep the buffer for the next one.
                    unpop(queue);
                    self.stats.rx_dropped += 1;
                    self.rx_pending = 0;
                    continue;
                }
                // A malformed receive buffer is returned unused.
                if let Err(e) = complete(queue, &active.mem, chain.head, 0) {
                    result = Err(e.into());
                    break;
                }
                used_any = true;
                continue;
            }
            let written = write_bytes(&active.mem, &chain.writable, 0, &self.rx_buf[..len]);
            let used_len = if written { len as u32 } else { 0 };
            if let Err(e) = complete(queue, &active.mem, chain.head, used_len) {
                result = Err(e.into());
                break;
            }
            used_any = true;
            self.rx_pending = 0;
            if written {
                self.stats.rx_frames += 1;
            } else {
                self.stats.rx_dropped += 1;
            }
        }
        if used_any {
            active.interrupt.signal_used_ring();
        }
        result
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        FEATURE_VERSION_1 | 1 << VIRTIO_NET_F_MAC
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config starts with mac[6]; nothing else is offered.
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start < self.mac.len() {
            let n = data.len().min(self.mac.len() - start);
            data[..n].copy_from_slice(&self.mac[start..start + n]);
        }
    }

    fn activate(&mut self, active: ActiveQueues) -> Result<(), DeviceError> {
        self.active = Some(active);
        Ok(())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), DeviceError> {
        match index {
            RX_QUEUE => self.deliver_rx(),
            TX_QUEUE => self.process_tx(),
            _ => Err(DeviceError::NotActive),
        }
    }

    fn reset(&mut self) {
        self.active = None;
        self.rx_pending = 0;
    }

    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.backend.as_raw_fd())
    }

    fn process_rx(&mut self) -> Result<(), DeviceError> {
        if self.active.is_none() {
            return Ok(());
        }
        self.deliver_rx()
    }
}
