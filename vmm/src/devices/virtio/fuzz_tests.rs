//! Randomised virtqueues against every device: random descriptor tables (addresses inside,
//! across and outside guest memory, random lengths, flags and links) and random available
//! rings. Whatever the device decides (fail the request, mark itself failed), it must not
//! panic and may only write the used ring and buffers the driver marked device-writable.

use std::os::unix::net::UnixDatagram;

use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

use super::balloon::{Balloon, BalloonOptions};
use super::block::Block;
use super::net::Net;
use super::rng::Rng;
use super::tap::NetBackend;
use super::testing::*;
use super::{VirtioDevice, FEATURE_VERSION_1};

const QUEUE: u16 = 16;
const ROUNDS: usize = 300;

/// Pseudo-random source, plus the round's hostility: the chance (1 in `bad_one_in`) that a
/// field gets a hostile value. Rounds range from clean to very hostile so both completed
/// requests and device failures are reached.
struct XorShift(u64, u64);

impl XorShift {
    fn hostile(&mut self) -> bool {
        self.1 != 0 && self.below(self.1) == 0
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct SocketBackend(UnixDatagram);

impl NetBackend for SocketBackend {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.0)
    }
    fn recv(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> std::io::Result<usize> {
        self.0.send(frame)
    }
}

/// A buffer address: mostly in the data areas, sometimes at the edges of memory.
fn address(rng: &mut XorShift) -> u64 {
    if rng.hostile() {
        return match rng.below(4) {
            0 => HOLE - rng.below(64),
            1 => MEM_END - rng.below(64),
            2 => rng.next(),
            _ => 0x1_0000 + rng.below(0x3000), // the rings themselves
        };
    }
    match rng.below(2) {
        0 => 0x4_0000 + rng.below(0x3_0000),
        _ => 0xc_0000 + rng.below(0x7_0000),
    }
}

fn length(rng: &mut XorShift) -> u32 {
    if rng.hostile() {
        return [0, rng.next() as u32, 0x10_0000][rng.below(3) as usize];
    }
    match rng.below(3) {
        0 => 512 * (1 + rng.below(4) as u32),
        _ => 1 + rng.below(4096) as u32,
    }
}

/// Fills the queue's table and available ring with random content, and puts plausible
/// virtio-blk headers at readable buffers so requests get past the header check sometimes.
fn scramble(d: &mut Driver, q: usize, rng: &mut XorShift) -> Vec<(u64, u64)> {
    let mut writable = Vec::new();
    for i in 0..QUEUE {
        let addr = address(rng);
        let len = length(rng);
        let mut flags = 0u16;
        if rng.below(3) > 0 {
            flags |= VRING_DESC_F_NEXT as u16;
        }
        if rng.below(2) == 0 {
            flags |= VRING_DESC_F_WRITE as u16;
        }
        if rng.hostile() && rng.below(4) == 0 {
            flags |= VRING_DESC_F_INDIRECT as u16;
        }
        let next = if rng.hostile() {
            rng.below(64) as u16
        } else {
            (i + 1) % QUEUE
        };
        d.set_desc(q, i, addr, len, flags, next);
        if flags & VRING_DESC_F_WRITE as u16 != 0 {
            writable.push((addr, u64::from(len)));
        } else if rng.below(2) == 0 {
            let request_type = [0u32, 1, 4, 8, 99][rng.below(5) as usize];
            let _ = d.mem.write_obj(request_type, GuestAddress(addr));
            let _ = d
                .mem
                .write_obj(rng.below(12), GuestAddress(addr.wrapping_add(8)));
        }
    }
    let ring = d.rings[q];
    for slot in 0..QUEUE {
        let head = if rng.hostile() {
            rng.below(40) as u16
        } else {
            rng.below(u64::from(QUEUE)) as u16
        };
        d.mem
            .write_obj(head, GuestAddress(ring.avail + 4 + 2 * u64::from(slot)))
            .unwrap();
    }
    let used: u16 = d.mem.read_obj(GuestAddress(ring.used + 2)).unwrap();
    let jump = if rng.hostile() {
        rng.next() as u16
    } else {
        rng.below(u64::from(QUEUE) + 1) as u16
    };
    d.set_avail_idx(q, used.wrapping_add(jump));
    writable
}

/// Runs the rounds; returns (used indices summed over steps, device failures) so
/// each test can check the fuzz reached both outcomes.
fn fuzz(make: &dyn Fn() -> (Box<dyn VirtioDevice>, Option<UnixDatagram>), seed: u64) -> (u64, u64) {
    fuzz_with(make, seed, FEATURE_VERSION_1, false)
}

/// `fuzz` with the driver accepting `features`; `may_zero`: the device may also zero guest
/// pages anywhere (the balloon discards the pages the guest names), so a changed byte outside
/// the writable buffers must be zero.
fn fuzz_with(
    make: &dyn Fn() -> (Box<dyn VirtioDevice>, Option<UnixDatagram>),
    seed: u64,
    features: u64,
    may_zero: bool,
) -> (u64, u64) {
    let mut rng = XorShift(seed, 0);
    let (mut completed, mut failures) = (0u64, 0u64);
    for round in 0..ROUNDS {
        rng.1 = [0, 0, 200, 40, 8][round % 5];
        let (device, peer) = make();
        let mut d = Driver::new(device);
        let count = d.transport.lock().unwrap().queue_count();
        let rings = (0..count)
            .map(|i| Ring::at(0x1_0000 + 0x8000 * i as u64, QUEUE))
            .collect();
        d.init_with(rings, features);
        assert!(d.transport.lock().unwrap().is_activated());
        let mut writable = vec![Vec::new(); count];
        for _ in 0..3 {
            let q = rng.below(count as u64) as usize;
            // The device reads tables when it processes them, so what it may write is what
            // the current tables of all queues mark writable (net receives on queue 0 while
            // the driver scrambles queue 1).
            writable[q] = scramble(&mut d, q, &mut rng);
            if let Some(peer) = &peer {
                let mut frame = vec![0u8; 12 + rng.below(3000) as usize];
                frame.iter_mut().for_each(|b| *b = rng.next() as u8);
                let _ = peer.send(&frame);
            }
            let before = snapshot(&d.mem);
            d.notify(q);
            d.transport.lock().unwrap().process_rx();
            let mut allowed: Vec<(u64, u64)> = writable.concat();
            allowed.extend(d.rings.iter().map(|r| r.used_range()));
            if may_zero {
                assert_only_changed_or_zeroed(&before, &snapshot(&d.mem), &allowed);
            } else {
                assert_only_changed(&before, &snapshot(&d.mem), &allowed);
            }
            completed += d
                .rings
                .iter()
                .enumerate()
                .map(|(i, _)| u64::from(d.used_idx(i)))
                .sum::<u64>();
            if d.failed() {
                failures += 1;
                // The failure must hold until reset, and then the device is usable again.
                d.notify(q);
                d.write32(virtio_bindings::virtio_mmio::VIRTIO_MMIO_STATUS, 0);
                assert!(!d.failed(), "round {round}: reset clears the failure");
                break;
            }
        }
    }
    eprintln!("fuzz seed {seed:#x}: used indices summed {completed}, device failures {failures}");
    (completed, failures)
}

fn assert_explored((completed, failures): (u64, u64)) {
    assert!(completed > 50, "too few requests completed: {completed}");
    assert!(failures > 50, "too few device failures: {failures}");
}

#[test]
fn random_queues_against_rng() {
    assert_explored(fuzz(
        &|| (Box::new(Rng::new().unwrap()), None),
        0x1234_5678_9abc_def1,
    ));
}

#[test]
fn random_queues_against_block() {
    let path = std::env::temp_dir().join(format!("cpevisor-fuzz-blk-{}.img", std::process::id()));
    std::fs::write(&path, vec![0x11u8; 8 * 512]).unwrap();
    let p = path.clone();
    let outcome = fuzz(
        &move || (Box::new(Block::new(&p, false).unwrap()), None),
        0x0fed_cba9_8765_4321,
    );
    std::fs::remove_file(&path).unwrap();
    assert_explored(outcome);
}

#[test]
fn random_queues_against_net() {
    assert_explored(fuzz(
        &|| {
            let (ours, peer) = UnixDatagram::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            peer.set_nonblocking(true).unwrap();
            let net = Net::new(Box::new(SocketBackend(ours)), [2, 0, 0, 0, 0, 1]);
            (Box::new(net) as Box<dyn VirtioDevice>, Some(peer))
        },
        0xdead_beef_cafe_f00d,
    ));
}

#[test]
fn random_queues_against_balloon() {
    let options = BalloonOptions {
        deflate_on_oom: true,
        free_page_reporting: true,
        target_mib: 0,
    };
    let features = FEATURE_VERSION_1
        | super::balloon::FEATURE_DEFLATE_ON_OOM
        | super::balloon::FEATURE_FREE_PAGE_REPORTING;
    assert_explored(fuzz_with(
        &|| (Box::new(Balloon::new(options)), None),
        0x0ba1_1004_5eed_0005,
        features,
        true,
    ));
}
