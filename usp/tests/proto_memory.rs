//! How much heap decoding a hostile Msg takes: prost allocates every element before the
//! limits can be checked, so the worst case is many empty elements of the largest structs.
//! Peak heap is measured with a counting allocator and must stay within a fixed multiple of
//! the record size limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use cpevisor_usp::record::{decode_msg, Limits};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// One measurement at a time: the test harness runs tests on several threads.
static SERIAL: Mutex<()> = Mutex::new(());

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Peak heap above the level before `f` ran.
fn peak_during(f: impl FnOnce()) -> usize {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

/// A length-delimited field.
fn ld(tag: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_key(tag, prost::encoding::WireType::LengthDelimited, &mut out);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// A Msg whose body nests along `path` (outermost first) down to `count` copies of `element`.
fn hostile(path: &[u32], element: &[u8], count: usize) -> Vec<u8> {
    let header = ld(1, &ld(1, b"m"));
    let mut inner: Vec<u8> = element.repeat(count);
    for &tag in path.iter().rev() {
        inner = ld(tag, &inner);
    }
    let mut msg = header;
    msg.extend(ld(2, &inner));
    msg
}

#[test]
fn hostile_msgs_stay_within_a_bounded_heap() {
    let _one = SERIAL.lock().unwrap();
    let limits = Limits::default();
    let size = limits.max_record_bytes;
    // Submessage elements: as many as the wire pass lets through (the nesting itself counts).
    let under = limits.max_items - 8;
    // (what, nesting from Body down to the repeated field's parent, one element, how many)
    let cases: &[(&str, &[u32], &[u8], usize)] = &[
        ("Set.update_objs", &[1, 4], &[0x12, 0x00], under),
        (
            "GetSupportedDMResp.supported_objs",
            &[2, 2, 1],
            &[0x2a, 0x00],
            under,
        ),
        ("SetResp.updated_obj_results", &[2, 4], &[0x0a, 0x00], under),
        (
            "GetResp.resolved_path_results",
            &[2, 1, 1],
            &[0x22, 0x00],
            under,
        ),
        ("Error.param_errs", &[3], &[0x1a, 0x00], under),
        // Strings are not protobuf, so the wire pass does not count them: the record size does.
        (
            "Get.param_paths",
            &[1, 1],
            &[0x0a, 0x01, b'x'],
            (size - 64) / 3,
        ),
        // As many 1-byte strings as the wire pass lets through (4 x max_items).
        (
            "Get.param_paths x 16k",
            &[1, 1],
            &[0x0a, 0x01, b'x'],
            4 * limits.max_items - 8,
        ),
        // Far more elements than max_items: refused before prost allocates anything.
        (
            "GetSupportedDMResp.supported_objs x 32k",
            &[2, 2, 1],
            &[0x2a, 0x00],
            (size - 64) / 2,
        ),
    ];
    let mut worst = 0;
    for (what, path, element, count) in cases {
        let bytes = hostile(path, element, *count);
        assert!(bytes.len() <= size, "{what}: {} bytes", bytes.len());
        let mut result = None;
        let peak = peak_during(|| result = Some(decode_msg(&bytes, &limits).map(|_| ())));
        let result = result.unwrap();
        // Empty elements past max_items are refused by the wire pass, before prost allocates.
        if *count > limits.max_items && element.ends_with(&[0x00]) {
            let e = result.clone().expect_err(what);
            assert!(e.message.contains("max_items"), "{what}: {e}");
            assert!(
                peak < 4096,
                "{what}: refused before decoding, yet {peak} bytes"
            );
        }
        let verdict = if result.is_ok() {
            "accepted"
        } else {
            "refused"
        };
        println!(
            "{what}: {} bytes in, {verdict}, peak heap {} KiB",
            bytes.len(),
            peak / 1024
        );
        worst = worst.max(peak);
    }
    // 64 KiB of hostile wire bytes never costs more than 16x in heap (1 MiB by default).
    assert!(worst <= 16 * size, "worst peak {} KiB", worst / 1024);
}
