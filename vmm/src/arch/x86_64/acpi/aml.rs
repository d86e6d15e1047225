//! A small AML (ACPI Machine Language, ACPI 6.5 chapter 20) encoder: just the terms the DSDT
//! of a microVM needs (names, scopes, devices, methods, integers, strings, packages, buffers
//! and the resource descriptors of chapter 6.4). Each function returns the encoded bytes of one
//! term; composite terms take their children already encoded.
//!
//! Why our own: the whole DSDT is a few dozen terms, and an encoder this size is easier to check
//! byte for byte (see the tests) than a general AML library is to audit and carry.

use std::fmt;

/// A term that cannot be encoded (bad name, oversized package); the text says which.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmlError(pub String);

impl fmt::Display for AmlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AML: {}", self.0)
    }
}

impl std::error::Error for AmlError {}

/// Result of AML encoding.
pub type Result<T> = std::result::Result<T, AmlError>;

// Opcodes (ACPI 6.5, 20.2).
const ZERO_OP: u8 = 0x00;
const ONE_OP: u8 = 0x01;
const NAME_OP: u8 = 0x08;
const BYTE_PREFIX: u8 = 0x0a;
const WORD_PREFIX: u8 = 0x0b;
const DWORD_PREFIX: u8 = 0x0c;
const STRING_PREFIX: u8 = 0x0d;
const QWORD_PREFIX: u8 = 0x0e;
const SCOPE_OP: u8 = 0x10;
const BUFFER_OP: u8 = 0x11;
const PACKAGE_OP: u8 = 0x12;
const METHOD_OP: u8 = 0x14;
const DUAL_NAME_PREFIX: u8 = 0x2e;
const MULTI_NAME_PREFIX: u8 = 0x2f;
const ROOT_CHAR: u8 = b'\\';
const EXT_OP_PREFIX: u8 = 0x5b;
const DEVICE_OP: u8 = 0x82;
const RETURN_OP: u8 = 0xa4;
const OP_REGION_OP: u8 = 0x80; // after EXT_OP_PREFIX
const FIELD_OP: u8 = 0x81; // after EXT_OP_PREFIX
const LOCAL0_OP: u8 = 0x60;
const STORE_OP: u8 = 0x70;
const AND_OP: u8 = 0x7b;
const NOTIFY_OP: u8 = 0x86;
const IF_OP: u8 = 0xa0;
const NULL_NAME: u8 = 0x00;

/// `Local0`, the first method-local variable.
pub const LOCAL0: [u8; 1] = [LOCAL0_OP];

/// PkgLength can count at most 2^28 - 1 bytes (four encoding bytes).
pub const MAX_PKG_LENGTH: usize = (1 << 28) - 1;

/// Encodes a PkgLength for `content` bytes that follow it; the encoded value counts its own
/// bytes too (20.2.4).
pub fn pkg_length(content: usize) -> Result<Vec<u8>> {
    // One byte holds 6 bits; n > 1 bytes hold 4 + 8 * (n - 1) bits.
    if content + 1 < 1 << 6 {
        return Ok(vec![(content + 1) as u8]);
    }
    for n in 2..=4usize {
        let total = content + n;
        if total < 1 << (4 + 8 * (n - 1)) {
            let mut out = Vec::with_capacity(n);
            out.push((((n - 1) as u8) << 6) | (total & 0x0f) as u8);
            for i in 0..n - 1 {
                out.push((total >> (4 + 8 * i)) as u8);
            }
            return Ok(out);
        }
    }
    Err(AmlError(format!(
        "{content} bytes exceed the largest package length ({MAX_PKG_LENGTH})"
    )))
}

/// One 4-character name segment: a leading letter or `_`, then letters, digits or `_`, padded
/// with `_` to four characters.
pub fn name_seg(seg: &str) -> Result<[u8; 4]> {
    let b = seg.as_bytes();
    let lead_ok = |c: u8| c.is_ascii_uppercase() || c == b'_';
    let rest_ok = |c: u8| lead_ok(c) || c.is_ascii_digit();
    if b.is_empty() || b.len() > 4 || !lead_ok(b[0]) || !b[1..].iter().all(|&c| rest_ok(c)) {
        return Err(AmlError(format!(
            "name segment {seg:?}: expected 1-4 of A-Z, 0-9, _ (not starting with a digit)"
        )));
    }
    let mut out = [b'_'; 4];
    out[..b.len()].copy_from_slice(b);
    Ok(out)
}

/// A NameString: optional root prefix `\`, then segments joined by `.`.
pub fn name_string(path: &str) -> Result<Vec<u8>> {
    let (root, rest) = match path.strip_prefix('\\') {
        Some(r) => (true, r),
        None => (false, path),
    };
    let mut out = Vec::new();
    if root {
        out.push(ROOT_CHAR);
    }
    if rest.is_empty() {
        if !root {
            return Err(AmlError("empty name".into()));
        }
        // `\` alone is the root scope: a null name follows the prefix.
        out.push(0);
        return Ok(out);
    }
    let segs: Vec<&str> = rest.split('.').collect();
    match segs.len() {
        1 => {}
        2 => out.push(DUAL_NAME_PREFIX),
        n if n <= 255 => out.extend_from_slice(&[MULTI_NAME_PREFIX, n as u8]),
        n => {
            return Err(AmlError(format!(
                "name {path:?} has {n} segments, at most 255"
            )))
        }
    }
    for s in segs {
        out.extend_from_slice(&name_seg(s)?);
    }
    Ok(out)
}

/// The shortest integer encoding of `v` (ZeroOp, OneOp, Byte/Word/DWord/QWordConst).
pub fn integer(v: u64) -> Vec<u8> {
    match v {
        0 => vec![ZERO_OP],
        1 => vec![ONE_OP],
        2..=0xff => vec![BYTE_PREFIX, v as u8],
        0x100..=0xffff => {
            let mut o = vec![WORD_PREFIX];
            o.extend_from_slice(&(v as u16).to_le_bytes());
            o
        }
        0x1_0000..=0xffff_ffff => {
            let mut o = vec![DWORD_PREFIX];
            o.extend_from_slice(&(v as u32).to_le_bytes());
            o
        }
        _ => {
            let mut o = vec![QWORD_PREFIX];
            o.extend_from_slice(&v.to_le_bytes());
            o
        }
    }
}

/// A DWordConst, whatever the value (EISA ids are always four bytes).
pub fn dword(v: u32) -> Vec<u8> {
    let mut o = vec![DWORD_PREFIX];
    o.extend_from_slice(&v.to_le_bytes());
    o
}

/// A String: printable ASCII, NUL-terminated.
pub fn string(s: &str) -> Result<Vec<u8>> {
    if !s.bytes().all(|c| (0x20..0x7f).contains(&c)) {
        return Err(AmlError(format!("string {s:?} is not printable ASCII")));
    }
    let mut o = vec![STRING_PREFIX];
    o.extend_from_slice(s.as_bytes());
    o.push(0);
    Ok(o)
}

/// The compressed EISA id of `id` (three upper-case letters and four hex digits, e.g.
/// "PNP0501"), as the 32-bit value ASL's `EisaId()` produces.
pub fn eisa_id(id: &str) -> Result<u32> {
    let b = id.as_bytes();
    let bad = || {
        AmlError(format!(
            "EISA id {id:?}: expected 3 letters A-Z and 4 hex digits"
        ))
    };
    if b.len() != 7 || !b[..3].iter().all(u8::is_ascii_uppercase) {
        return Err(bad());
    }
    let product = u16::from_str_radix(&id[3..], 16).map_err(|_| bad())?;
    if !id[3..].bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(bad());
    }
    let letters = b[..3]
        .iter()
        .fold(0u32, |acc, &c| (acc << 5) | u32::from(c - 0x40));
    // Big-endian on the wire: the manufacturer code's high byte comes first.
    Ok(((letters << 16) | u32::from(product)).swap_bytes())
}

/// `Name(path, data)`.
pub fn name(path: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut o = vec![NAME_OP];
    o.extend(name_string(path)?);
    o.extend_from_slice(data);
    Ok(o)
}

/// An opcode, its PkgLength, then `parts` in order.
fn with_pkg_length(op: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut o = op.to_vec();
    o.extend(pkg_length(len)?);
    for p in parts {
        o.extend_from_slice(p);
    }
    Ok(o)
}

/// `Scope(path) { body }`.
pub fn scope(path: &str, body: &[u8]) -> Result<Vec<u8>> {
    with_pkg_length(&[SCOPE_OP], &[&name_string(path)?, body])
}

/// `Device(path) { body }`.
pub fn device(path: &str, body: &[u8]) -> Result<Vec<u8>> {
    with_pkg_length(&[EXT_OP_PREFIX, DEVICE_OP], &[&name_string(path)?, body])
}

/// `Method(path, args, NotSerialized | Serialized) { body }`.
pub fn method(path: &str, args: u8, serialized: bool, body: &[u8]) -> Result<Vec<u8>> {
    if args > 7 {
        return Err(AmlError(format!(
            "method {path:?}: {args} arguments, at most 7"
        )));
    }
    let flags = args | if serialized { 1 << 3 } else { 0 };
    with_pkg_length(&[METHOD_OP], &[&name_string(path)?, &[flags], body])
}

/// `Return(value)`.
pub fn return_value(value: &[u8]) -> Vec<u8> {
    let mut o = vec![RETURN_OP];
    o.extend_from_slice(value);
    o
}

/// `Package() { elements }` (at most 255 elements).
pub fn package(elements: &[Vec<u8>]) -> Result<Vec<u8>> {
    let count = u8::try_from(elements.len()).map_err(|_| {
        AmlError(format!(
            "package of {} elements, at most 255",
            elements.len()
        ))
    })?;
    let body: Vec<u8> = elements.concat();
    with_pkg_length(&[PACKAGE_OP], &[&[count], &body])
}

/// `Buffer() { bytes }`.
pub fn buffer(bytes: &[u8]) -> Result<Vec<u8>> {
    with_pkg_length(&[BUFFER_OP], &[&integer(bytes.len() as u64), bytes])
}

/// `ResourceTemplate() { descriptors }`: a buffer of the descriptors and an end tag.
pub fn resource_template(descriptors: &[Vec<u8>]) -> Result<Vec<u8>> {
    let mut bytes = descriptors.concat();
    // End tag, checksum 0 ("the resource data is treated as if the checksum is valid").
    bytes.extend_from_slice(&[0x79, 0x00]);
    buffer(&bytes)
}

/// `Memory32Fixed(ReadWrite | ReadOnly, base, length)` (large descriptor 0x86).
pub fn memory32_fixed(writable: bool, base: u32, length: u32) -> Vec<u8> {
    let mut o = vec![0x86, 9, 0, u8::from(writable)];
    o.extend_from_slice(&base.to_le_bytes());
    o.extend_from_slice(&length.to_le_bytes());
    o
}

/// `Interrupt(ResourceConsumer, Edge | Level, ActiveHigh | ActiveLow, Exclusive) { irq }`
/// (extended interrupt descriptor 0x89).
pub fn interrupt(edge: bool, active_low: bool, irq: u32) -> Vec<u8> {
    // bit 0 consumer, bit 1 edge-triggered, bit 2 active low; exclusive, not wake capable.
    let flags = 1 | (u8::from(edge) << 1) | (u8::from(active_low) << 2);
    let mut o = vec![0x89, 6, 0, flags, 1];
    o.extend_from_slice(&irq.to_le_bytes());
    o
}

/// `IO(Decode16, min, max, alignment, length)` (small descriptor 0x47).
pub fn io(min: u16, max: u16, alignment: u8, length: u8) -> Vec<u8> {
    let mut o = vec![0x47, 1];
    o.extend_from_slice(&min.to_le_bytes());
    o.extend_from_slice(&max.to_le_bytes());
    o.extend_from_slice(&[alignment, length]);
    o
}

/// `IRQNoFlags() { irq }` (small descriptor 0x22: edge, active high, ISA IRQ 0-15).
pub fn irq_no_flags(irq: u8) -> Result<Vec<u8>> {
    if irq > 15 {
        return Err(AmlError(format!("IRQNoFlags takes IRQs 0-15, not {irq}")));
    }
    let mask = 1u16 << irq;
    let mut o = vec![0x22];
    o.extend_from_slice(&mask.to_le_bytes());
    Ok(o)
}

/// OperationRegion address spaces (ACPI 6.5, 19.6.100).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionSpace {
    /// Memory-mapped registers.
    SystemMemory = 0,
    /// I/O port registers.
    SystemIo = 1,
}

/// `OperationRegion(name, space, offset, length)`.
pub fn operation_region(name: &str, space: RegionSpace, offset: u64, len: u64) -> Result<Vec<u8>> {
    let mut o = vec![EXT_OP_PREFIX, OP_REGION_OP];
    o.extend(name_string(name)?);
    o.push(space as u8);
    o.extend(integer(offset));
    o.extend(integer(len));
    Ok(o)
}

/// `Field(region, ByteAcc, NoLock, Preserve) { name, bits, ... }`: named fields in order from
/// the region's start, each under 64 bits wide.
pub fn field(region: &str, fields: &[(&str, u8)]) -> Result<Vec<u8>> {
    const BYTE_ACC: u8 = 1; // AccessType ByteAcc; LockRule NoLock (bit 4 = 0); Preserve
    let mut list = Vec::new();
    for (name, bits) in fields {
        if *bits == 0 || *bits >= 64 {
            return Err(AmlError(format!(
                "field {name:?}: {bits} bits, expected 1-63"
            )));
        }
        list.extend_from_slice(&name_seg(name)?);
        // A NamedField's width is a PkgLength that counts bits, not bytes: one byte below 64.
        list.push(*bits);
    }
    with_pkg_length(
        &[EXT_OP_PREFIX, FIELD_OP],
        &[&name_string(region)?, &[BYTE_ACC], &list],
    )
}

/// `Store(source, target)`.
pub fn store(source: &[u8], target: &[u8]) -> Vec<u8> {
    [&[STORE_OP][..], source, target].concat()
}

/// `And(a, b)` with no target: the value for a predicate.
pub fn and(a: &[u8], b: &[u8]) -> Vec<u8> {
    [&[AND_OP][..], a, b, &[NULL_NAME]].concat()
}

/// `If(predicate) { body }`.
pub fn if_then(predicate: &[u8], body: &[u8]) -> Result<Vec<u8>> {
    with_pkg_length(&[IF_OP], &[predicate, body])
}

/// `Notify(object, value)`.
pub fn notify(object: &str, value: u64) -> Result<Vec<u8>> {
    let mut o = vec![NOTIFY_OP];
    o.extend(name_string(object)?);
    o.extend(integer(value));
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_method_terms() {
        // OperationRegion (GDST, SystemIO, 0x0610, One)
        assert_eq!(
            operation_region("GDST", RegionSpace::SystemIo, 0x610, 1).unwrap(),
            [0x5b, 0x80, b'G', b'D', b'S', b'T', 1, 0x0b, 0x10, 0x06, 0x01]
        );
        // Field (GDST, ByteAcc, NoLock, Preserve) { GDAT, 8 }
        assert_eq!(
            field("GDST", &[("GDAT", 8)]).unwrap(),
            [0x5b, 0x81, 11, b'G', b'D', b'S', b'T', 1, b'G', b'D', b'A', b'T', 8]
        );
        assert!(field("GDST", &[("GDAT", 64)]).is_err());
        assert!(field("GDST", &[("GDAT", 0)]).is_err());
        // Store (GDAT, Local0)
        assert_eq!(
            store(&name_string("GDAT").unwrap(), &LOCAL0),
            [0x70, b'G', b'D', b'A', b'T', 0x60]
        );
        // If (And (Local0, One)) { Notify (\_SB.PWRB, 0x80) }
        let n = notify("\\_SB_.PWRB", 0x80).unwrap();
        assert_eq!(
            n,
            [0x86, b'\\', 0x2e, b'_', b'S', b'B', b'_', b'P', b'W', b'R', b'B', 0x0a, 0x80]
        );
        let i = if_then(&and(&LOCAL0, &integer(1)), &n).unwrap();
        assert_eq!(&i[..6], [0xa0, 1 + 4 + 13, 0x7b, 0x60, 0x01, 0x00]);
        assert_eq!(&i[6..], &n[..]);
    }

    #[test]
    fn package_lengths_count_their_own_bytes() {
        assert_eq!(pkg_length(0).unwrap(), [0x01]);
        assert_eq!(pkg_length(62).unwrap(), [0x3f]);
        // 63 + 2 = 65 = 0x41: two bytes, low nibble in the lead byte.
        assert_eq!(pkg_length(63).unwrap(), [0x41, 0x04]);
        assert_eq!(pkg_length(0xffd).unwrap(), [0x4f, 0xff]);
        // 0xffe + 3 = 0x1001 needs three bytes.
        assert_eq!(pkg_length(0xffe).unwrap(), [0x81, 0x00, 0x01]);
        assert_eq!(pkg_length(MAX_PKG_LENGTH - 4).unwrap().len(), 4);
        assert!(pkg_length(MAX_PKG_LENGTH).is_err());
    }

    #[test]
    fn names_are_checked_and_padded() {
        assert_eq!(name_seg("_SB").unwrap(), *b"_SB_");
        assert_eq!(name_string("VR00").unwrap(), b"VR00");
        assert_eq!(name_string("\\_SB_").unwrap(), b"\\_SB_");
        assert_eq!(name_string("\\").unwrap(), [b'\\', 0]);
        assert_eq!(name_string("_SB.COM1").unwrap(), b"\x2e_SB_COM1");
        assert_eq!(name_string("\\A.B.C").unwrap(), b"\\\x2f\x03A___B___C___");
        for bad in ["", "1ABC", "abcd", "TOOLONG", "A.", "A-B"] {
            assert!(name_string(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn integers_take_the_shortest_form() {
        assert_eq!(integer(0), [0x00]);
        assert_eq!(integer(1), [0x01]);
        assert_eq!(integer(5), [0x0a, 5]);
        assert_eq!(integer(0x3f8), [0x0b, 0xf8, 0x03]);
        assert_eq!(integer(0xd000_0000), [0x0c, 0, 0, 0, 0xd0]);
        assert_eq!(integer(1 << 32), [0x0e, 0, 0, 0, 0, 1, 0, 0, 0]);
    }

    #[test]
    fn strings_and_eisa_ids() {
        assert_eq!(string("LNRO0005").unwrap(), b"\x0dLNRO0005\x00");
        assert!(string("bad\n").is_err());
        // Known values from ASL compilers: EisaId("PNP0501") = 0x0105D041,
        // EisaId("PNP0C0F") = 0x0F0CD041.
        assert_eq!(eisa_id("PNP0501").unwrap(), 0x0105_d041);
        assert_eq!(eisa_id("PNP0C0F").unwrap(), 0x0f0c_d041);
        for bad in ["PNP050", "pnp0501", "PNP05G1", "PNP+501"] {
            assert!(eisa_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn composite_terms() {
        // Name(_UID, 0)
        assert_eq!(name("_UID", &integer(0)).unwrap(), b"\x08_UID\x00");
        // Device(VR00) { Name(_UID, 0) }: 4 name + 6 body + 1 length byte = 11.
        let d = device("VR00", &name("_UID", &integer(0)).unwrap()).unwrap();
        assert_eq!(d, b"\x5b\x82\x0bVR00\x08_UID\x00");
        // Package() { 5, 5 }
        assert_eq!(
            package(&[integer(5), integer(5)]).unwrap(),
            [0x12, 0x06, 0x02, 0x0a, 0x05, 0x0a, 0x05]
        );
        assert!(package(&vec![integer(0); 256]).is_err());
        // Method(_STA) { Return(0x0F) }
        let m = method("_STA", 0, false, &return_value(&integer(0x0f))).unwrap();
        assert_eq!(m, b"\x14\x09_STA\x00\xa4\x0a\x0f");
        assert!(method("_FOO", 8, false, &[]).is_err());
        // Scope(\_SB_) { }
        assert_eq!(scope("\\_SB_", &[]).unwrap(), b"\x10\x06\\_SB_");
    }

    #[test]
    fn resource_descriptors() {
        let t = resource_template(&[
            memory32_fixed(true, 0xd000_0000, 0x200),
            interrupt(true, false, 5),
        ])
        .unwrap();
        let expect: &[u8] = &[
            0x11, 0x1a, 0x0a, 0x17, // Buffer, PkgLength 26, size 23
            0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xd0, 0x00, 0x02, 0x00,
            0x00, // Memory32Fixed
            0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00, // Interrupt
            0x79, 0x00, // end tag
        ];
        assert_eq!(t, expect);
        assert_eq!(io(0x3f8, 0x3f8, 0, 8), [0x47, 1, 0xf8, 3, 0xf8, 3, 0, 8]);
        assert_eq!(irq_no_flags(4).unwrap(), [0x22, 0x10, 0x00]);
        assert!(irq_no_flags(16).is_err());
    }
}
