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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MAC;

use super::chain::{complete, pop_chain, read_bytes, unpop, write_bytes};
use super::tap::{NetBackend, VNET_HDR_LEN};
use super::{ActiveQueues, DeviceError, VirtioDevice, FEATURE_VERSION_1};

/// Descriptors per virtqueue.
pub const QUEUE_SIZE: u16 = 256;
/// Index of the receive queue.
pub const RX_QUEUE: usize = 0;
/// Index of the transmit queue.
pub const TX_QUEUE: usize = 1;
/// Largest Ethernet frame (without the virtio-net header) carried either way: a 64 KiB
/// maximum tap MTU plus the Ethernet header.
pub const MAX_FRAME_LEN: usize = 65535 + 14;
const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;

/// Traffic counters, shared: take a handle with `Net::counters()` before boxing the device
/// (for the control socket's status, or tests).
#[derive(Clone, Default)]
pub struct NetCounters(Arc<CounterCells>);

#[derive(Default)]
struct CounterCells {
    rx_frames: AtomicU64,
    tx_frames: AtomicU64,
    rx_dropped: AtomicU64,
    tx_dropped: AtomicU64,
}

impl NetCounters {
    /// Frames delivered to the guest.
    pub fn rx_frames(&self) -> u64 {
        self.0.rx_frames.load(Ordering::Relaxed)
    }
    /// Frames sent to the backend.
    pub fn tx_frames(&self) -> u64 {
        self.0.tx_frames.load(Ordering::Relaxed)
    }
    /// Frames from the host that no guest buffer could hold.
    pub fn rx_dropped(&self) -> u64 {
        self.0.rx_dropped.load(Ordering::Relaxed)
    }
    /// Malformed transmit requests, or frames the backend refused.
    pub fn tx_dropped(&self) -> u64 {
        self.0.tx_dropped.load(Ordering::Relaxed)
    }
}

fn bump(cell: &AtomicU64) {
    cell.fetch_add(1, Ordering::Relaxed);
}

/// virtio-net on a host backend (a tap).
pub struct Net {
    backend: Box<dyn NetBackend>,
    mac: [u8; 6],
    active: Option<ActiveQueues>,
    /// Holds a received packet (header + frame) while no guest buffer is free.
    rx_buf: Vec<u8>,
    rx_pending: usize,
    tx_buf: Vec<u8>,
    counters: NetCounters,
}

/// A packet buffer from zeroed allocation: its pages are only backed by memory once a frame
/// touches them, so the 64 KiB bound costs RSS only for frames that large.
fn zeroed_packet_buffer() -> Vec<u8> {
    vec![0u8; MAX_PACKET_LEN]
}

impl Net {
    /// A NIC with address `mac` on `backend`.
    pub fn new(backend: Box<dyn NetBackend>, mac: [u8; 6]) -> Self {
        Net {
            backend,
            mac,
            active: None,
            rx_buf: Vec::new(),
            rx_pending: 0,
            tx_buf: Vec::new(),
            counters: NetCounters::default(),
        }
    }

    /// Shared packet counters, readable after the device is boxed.
    pub fn counters(&self) -> NetCounters {
        self.counters.clone()
    }

    /// Transmits what the driver queued on the TX queue.
    fn process_tx(&mut self) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActive)?;
        active.serve_queue(TX_QUEUE, |mem, chain| {
            let len = chain.readable_len();
            let ok = chain.well_formed()
                && chain.writable.is_empty()
                && len >= VNET_HDR_LEN as u64
                && len <= MAX_PACKET_LEN as u64;
            if ok {
                if self.tx_buf.is_empty() {
                    self.tx_buf = zeroed_packet_buffer();
                }
                let packet = &mut self.tx_buf[..len as usize];
                if read_bytes(mem, &chain.readable, 0, packet) {
                    match self.backend.send(packet) {
                        Ok(_) => bump(&self.counters.0.tx_frames),
                        // A full or down backend drops the frame, as a wire would.
                        Err(_) => bump(&self.counters.0.tx_dropped),
                    }
                } else {
                    bump(&self.counters.0.tx_dropped);
                }
            } else {
                bump(&self.counters.0.tx_dropped);
            }
            0
        })
    }

    /// Moves received frames into guest buffers while both exist.
    fn deliver_rx(&mut self) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActive)?;
        if self.rx_buf.is_empty() {
            self.rx_buf = zeroed_packet_buffer();
        }
        let mut used_any = false;
        let mut result = Ok(());
        loop {
            if self.rx_pending == 0 {
                match self.backend.recv(&mut self.rx_buf) {
                    Ok(n) if n >= VNET_HDR_LEN => self.rx_pending = n,
                    Ok(_) => {
                        // Shorter than a header: not a frame.
                        bump(&self.counters.0.rx_dropped);
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
                    bump(&self.counters.0.rx_dropped);
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
                bump(&self.counters.0.rx_frames);
            } else {
                bump(&self.counters.0.rx_dropped);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::testing::*;
    use crate::devices::BusDevice;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixDatagram;
    use virtio_bindings::virtio_ring::VRING_DESC_F_NEXT;
    use vm_memory::{Bytes, GuestAddress};

    /// A datagram socket keeps frame boundaries, like a tap.
    struct SocketBackend(UnixDatagram);

    impl NetBackend for SocketBackend {
        fn as_raw_fd(&self) -> RawFd {
            self.0.as_raw_fd()
        }
        fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0.recv(buf)
        }
        fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
            self.0.send(frame)
        }
    }

    const MAC: [u8; 6] = [0x02, 0xcb, 0x00, 0x00, 0x00, 0x01];

    fn setup_counted() -> (Driver, UnixDatagram, NetCounters) {
        let (ours, peer) = UnixDatagram::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_nonblocking(true).unwrap();
        let net = Net::new(Box::new(SocketBackend(ours)), MAC);
        let counters = net.counters();
        let mut d = Driver::new(Box::new(net));
        d.init();
        (d, peer, counters)
    }

    fn setup() -> (Driver, UnixDatagram) {
        let (d, peer, _) = setup_counted();
        (d, peer)
    }

    fn packet(len: usize, fill: u8) -> Vec<u8> {
        let mut p = vec![0u8; VNET_HDR_LEN];
        p.extend(std::iter::repeat_n(fill, len));
        p
    }

    fn process_rx(d: &Driver) {
        d.transport.lock().unwrap().process_rx();
    }

    #[test]
    fn mac_in_config_space() {
        let (d, _peer) = setup();
        let mut mac = [0u8; 6];
        d.transport.lock().unwrap().read(0x100, &mut mac);
        assert_eq!(mac, MAC);
        let mut tail = [0xffu8; 4];
        d.transport.lock().unwrap().read(0x104, &mut tail);
        assert_eq!(tail, [0, 1, 0, 0]);
        assert!(d.transport.lock().unwrap().rx_fd().is_some());
    }

    #[test]
    fn transmits_frames_split_over_buffers() {
        let (mut d, peer) = setup();
        let p = packet(100, 0x77);
        d.mem
            .write_slice(&p[..VNET_HDR_LEN], GuestAddress(0x4_0000))
            .unwrap();
        d.mem
            .write_slice(&p[VNET_HDR_LEN..], GuestAddress(0x4_1000))
            .unwrap();
        d.post(
            TX_QUEUE,
            &[
                (0x4_0000, VNET_HDR_LEN as u32, false),
                (0x4_1000, 100, false),
            ],
        );
        d.notify(TX_QUEUE);
        let mut got = vec![0u8; 2000];
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &p[..]);
        assert_eq!(d.used_idx(TX_QUEUE), 1);
    }

    #[test]
    fn malformed_transmits_are_dropped_not_sent() {
        let (mut d, peer, counters) = setup_counted();
        d.post(TX_QUEUE, &[(0x4_0000, 64, true)]); // device-writable
        d.post(TX_QUEUE, &[(0x4_0000, 4, false)]); // shorter than the header
        d.post(TX_QUEUE, &[(0x4_0000, 0, false)]); // empty
                                                   // Oversized: aliasing buffers adding up past MAX_PACKET_LEN.
        d.post(
            TX_QUEUE,
            &[(0x4_0000, 40_000, false), (0x4_0000, 40_000, false)],
        );
        d.notify(TX_QUEUE);
        assert_eq!(d.used_idx(TX_QUEUE), 4);
        assert!(!d.failed());
        let mut buf = [0u8; 16];
        assert!(peer.recv(&mut buf).is_err(), "nothing was sent");
        assert_eq!((counters.tx_dropped(), counters.tx_frames()), (4, 0));
    }

    #[test]
    fn receives_into_guest_buffers() {
        let (mut d, peer) = setup();
        let head = d.post(RX_QUEUE, &[(0x4_0000, 2048, true)]);
        let p = packet(60, 0x42);
        peer.send(&p).unwrap();
        let irqs = d.irq.count();
        process_rx(&d);
        assert_eq!(d.used_idx(RX_QUEUE), 1);
        assert_eq!(d.used_elem(RX_QUEUE, 0), (u32::from(head), p.len() as u32));
        let got = d.bytes(0x4_0000, p.len());
        assert_eq!(got[10..12], [1, 0], "num_buffers = 1");
        assert_eq!(got[VNET_HDR_LEN..], p[VNET_HDR_LEN..]);
        assert!(d.irq.count() > irqs);
    }

    #[test]
    fn holds_a_frame_until_the_guest_posts_buffers() {
        let (mut d, peer) = setup();
        peer.send(&packet(60, 1)).unwrap();
        peer.send(&packet(60, 2)).unwrap();
        process_rx(&d); // no buffers yet
        assert_eq!(d.used_idx(RX_QUEUE), 0);
        d.post(RX_QUEUE, &[(0x4_0000, 2048, true)]);
        d.post(RX_QUEUE, &[(0x4_1000, 2048, true)]);
        d.notify(RX_QUEUE); // the driver's kick delivers without a new fd event
        assert_eq!(d.used_idx(RX_QUEUE), 2);
        assert_eq!(d.bytes(0x4_0000 + VNET_HDR_LEN as u64, 1), [1]);
        assert_eq!(d.bytes(0x4_1000 + VNET_HDR_LEN as u64, 1), [2]);
    }

    #[test]
    fn frames_too_big_for_the_buffer_are_dropped() {
        let (mut d, peer, counters) = setup_counted();
        d.post(RX_QUEUE, &[(0x4_0000, 100, true)]);
        peer.send(&packet(500, 1)).unwrap();
        peer.send(&packet(50, 2)).unwrap();
        let before = snapshot(&d.mem);
        process_rx(&d);
        // The big frame is dropped, the buffer takes the next one.
        assert_eq!(d.used_idx(RX_QUEUE), 1);
        assert_eq!(d.used_elem(RX_QUEUE, 0).1, 62);
        assert_eq!(d.bytes(0x4_0000 + VNET_HDR_LEN as u64, 1), [2]);
        assert_eq!((counters.rx_dropped(), counters.rx_frames()), (1, 1));
        let ring = d.rings[RX_QUEUE];
        assert_only_changed(
            &before,
            &snapshot(&d.mem),
            &[ring.used_range(), (0x4_0000, 100)],
        );
    }

    #[test]
    fn malformed_receive_buffers_are_returned_unused() {
        let (mut d, peer) = setup();
        d.post(RX_QUEUE, &[(0x4_0000, 2048, false)]); // device-readable
        d.post(RX_QUEUE, &[(0x4_1000, 0, true), (0x4_2000, 2048, true)]); // empty buffer
        d.post(RX_QUEUE, &[(0x4_3000, 2048, true)]);
        peer.send(&packet(60, 9)).unwrap();
        let before = snapshot(&d.mem);
        process_rx(&d);
        assert!(!d.failed());
        assert_eq!(d.used_idx(RX_QUEUE), 3);
        assert_eq!(d.used_elem(RX_QUEUE, 0).1, 0);
        assert_eq!(d.used_elem(RX_QUEUE, 1).1, 0);
        assert_eq!(d.used_elem(RX_QUEUE, 2).1, 72);
        let ring = d.rings[RX_QUEUE];
        assert_only_changed(
            &before,
            &snapshot(&d.mem),
            &[ring.used_range(), (0x4_3000, 72)],
        );
    }

    #[test]
    fn hostile_receive_chains_fail_the_device() {
        type Setup = fn(&mut Driver);
        let cases: Vec<(&str, Setup)> = vec![
            ("buffer beyond memory", |d| {
                d.post(RX_QUEUE, &[(MEM_END - 10, 2048, true)]);
            }),
            ("descriptor loop", |d| {
                d.set_desc(RX_QUEUE, 0, 0x4_0000, 8, (VRING_DESC_F_NEXT | 2) as u16, 0);
                d.publish(RX_QUEUE, 0);
            }),
            ("available index jump", |d| {
                d.set_avail_idx(RX_QUEUE, 300);
            }),
        ];
        for (name, hostile) in cases {
            let (mut d, peer) = setup();
            hostile(&mut d);
            peer.send(&packet(60, 3)).unwrap();
            let before = snapshot(&d.mem);
            process_rx(&d);
            assert!(d.failed(), "{name}");
            assert_only_changed(&before, &snapshot(&d.mem), &[]);
            // A failed device ignores further input.
            peer.send(&packet(60, 4)).unwrap();
            process_rx(&d);
            assert_only_changed(&before, &snapshot(&d.mem), &[]);
        }
    }

    /// The whole path over a real tap (opt-in, needs root; see `tap::tests` for the command,
    /// with `CPEVISOR_TEST_TAP_NEIGHBOR=10.99.0.2` and the tap at 10.99.0.1/24): the host
    /// sends UDP to the "guest", the guest answers the kernel's ARP request through the TX
    /// queue, and the UDP datagram then arrives in a guest receive buffer.
    #[test]
    fn real_tap_carries_arp_and_udp() {
        let (Ok(name), Ok(guest_ip)) = (
            std::env::var("CPEVISOR_TEST_TAP"),
            std::env::var("CPEVISOR_TEST_TAP_NEIGHBOR"),
        ) else {
            eprintln!("CPEVISOR_TEST_TAP(_NEIGHBOR) unset: skipping the real-tap test");
            return;
        };
        let _tap_lock = REAL_TAP.lock().unwrap_or_else(|e| e.into_inner());
        let guest_ip: std::net::Ipv4Addr = guest_ip.parse().unwrap();
        let tap = crate::devices::virtio::tap::Tap::open(&name).unwrap();
        let mut d = Driver::new(Box::new(Net::new(Box::new(tap), MAC)));
        d.init();
        let rx_buf = |i: u64| 0x4_0000 + i * 0x1000;
        for i in 0..32 {
            d.post(RX_QUEUE, &[(rx_buf(i), 2048, true)]);
        }
        d.notify(RX_QUEUE);
        let udp = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        udp.send_to(b"hello-guest", (guest_ip, 7777)).unwrap();

        // Waits for a received frame matching `want`; returns it (without the vnet header).
        let mut seen = 0u16;
        let mut wait_for = |d: &Driver, want: &dyn Fn(&[u8]) -> bool| -> Vec<u8> {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
            loop {
                process_rx(d);
                while seen != d.used_idx(RX_QUEUE) {
                    let (head, len) = d.used_elem(RX_QUEUE, seen);
                    seen += 1;
                    let frame = d.bytes(rx_buf(u64::from(head)), len as usize);
                    if want(&frame[VNET_HDR_LEN..]) {
                        return frame[VNET_HDR_LEN..].to_vec();
                    }
                }
                assert!(std::time::Instant::now() < deadline, "frame not seen");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        };
        let ip = guest_ip.octets();
        let arp = wait_for(&d, &|f: &[u8]| {
            f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 1] && f[38..42] == ip
        });
        let host_mac: [u8; 6] = arp[22..28].try_into().unwrap();
        let host_ip: [u8; 4] = arp[28..32].try_into().unwrap();

        let mut reply = vec![0u8; VNET_HDR_LEN];
        reply.extend_from_slice(&host_mac);
        reply.extend_from_slice(&MAC);
        reply.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 2]);
        reply.extend_from_slice(&MAC);
        reply.extend_from_slice(&ip);
        reply.extend_from_slice(&host_mac);
        reply.extend_from_slice(&host_ip);
        d.mem
            .write_slice(&reply, GuestAddress(0x8_0000 - 0x1000))
            .unwrap();
        d.post(TX_QUEUE, &[(0x8_0000 - 0x1000, reply.len() as u32, false)]);
        d.notify(TX_QUEUE);

        let datagram = wait_for(&d, &|f: &[u8]| {
            f.len() > 42 && f[12..14] == [0x08, 0x00] && f[23] == 17 && f.ends_with(b"hello-guest")
        });
        assert_eq!(&datagram[..6], &MAC, "addressed to the guest MAC");
    }
}
