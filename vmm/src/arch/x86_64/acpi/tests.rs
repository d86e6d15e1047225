//! The generated tables parsed back the way a guest reads them: RSDP -> XSDT -> FADT/MADT,
//! FADT -> DSDT, every checksum and length, and the DSDT's AML walked term by term (a wrong
//! package length derails the walk).

use super::*;
use crate::arch::x86_64::{device_map, mptable};

const PM_PORT: u16 = 0x600;
const APIC: (u32, u32) = (mptable::APIC_DEFAULT_BASE, mptable::IOAPIC_DEFAULT_BASE);

/// The BIOS area as the guest sees it.
struct Area(Vec<u8>);

impl Area {
    fn from(t: &AcpiTables) -> Area {
        let mut a = vec![0u8; (ACPI_END - ACPI_START) as usize];
        for (addr, bytes) in &t.blobs {
            let off = (addr - ACPI_START) as usize;
            assert!(
                a[off..off + bytes.len()].iter().all(|&b| b == 0),
                "tables overlap at {addr:#x}"
            );
            a[off..off + bytes.len()].copy_from_slice(bytes);
        }
        Area(a)
    }

    fn at(&self, addr: u64, len: usize) -> &[u8] {
        let off = (addr - ACPI_START) as usize;
        &self.0[off..off + len]
    }

    /// A table at `addr`: signature, length and checksum checked.
    fn table(&self, addr: u64, sig: &[u8; 4]) -> &[u8] {
        let head = self.at(addr, tables::HEADER_LEN);
        assert_eq!(&head[..4], sig, "table at {addr:#x}");
        let len = u32::from_le_bytes(head[4..8].try_into().unwrap()) as usize;
        let t = self.at(addr, len);
        assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(&t[10..16], tables::OEM_ID);
        t
    }
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// The subset of AML the DSDT uses, decoded.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(u64),
    Str(String),
    Buffer(Vec<u8>),
    Package(Vec<Value>),
}

#[derive(Debug)]
enum Term {
    Scope(String, Vec<Term>),
    Device(String, Vec<Term>),
    Name(String, Value),
    /// OperationRegion: name, space, offset, length.
    Region(String, u8, Value, Value),
    /// Field: region, flags, (name, bits).
    Field(String, u8, Vec<(String, u8)>),
    /// Method: name, flags, body bytes (not decoded).
    Method(String, u8, Vec<u8>),
}

struct Parser<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn byte(&mut self) -> u8 {
        let v = *self.b.get(self.pos).expect("AML ends inside a term");
        self.pos += 1;
        v
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        s
    }

    /// Returns the end offset of the package that starts with this PkgLength.
    fn pkg_end(&mut self) -> usize {
        let start = self.pos;
        let lead = self.byte();
        let n = (lead >> 6) as usize;
        let len = if n == 0 {
            (lead & 0x3f) as usize
        } else {
            let mut len = (lead & 0x0f) as usize;
            for i in 0..n {
                len |= (self.byte() as usize) << (4 + 8 * i);
            }
            len
        };
        let end = start + len;
        assert!(end <= self.b.len(), "package runs past the table");
        end
    }

    fn name(&mut self) -> String {
        let mut s = String::new();
        if self.b[self.pos] == b'\\' {
            s.push('\\');
            self.pos += 1;
        }
        let segs = match self.b[self.pos] {
            0x2e => {
                self.pos += 1;
                2
            }
            0x2f => {
                self.pos += 1;
                self.byte() as usize
            }
            _ => 1,
        };
        let parts: Vec<String> = (0..segs)
            .map(|_| String::from_utf8(self.take(4).to_vec()).unwrap())
            .collect();
        s + &parts.join(".")
    }

    fn value(&mut self) -> Value {
        match self.byte() {
            0x00 => Value::Int(0),
            0x01 => Value::Int(1),
            0x0a => Value::Int(self.byte() as u64),
            0x0b => Value::Int(u16::from_le_bytes(self.take(2).try_into().unwrap()) as u64),
            0x0c => Value::Int(u32::from_le_bytes(self.take(4).try_into().unwrap()) as u64),
            0x0e => Value::Int(u64::from_le_bytes(self.take(8).try_into().unwrap())),
            0x0d => {
                let len = self.b[self.pos..].iter().position(|&c| c == 0).unwrap();
                let s = String::from_utf8(self.take(len).to_vec()).unwrap();
                self.pos += 1;
                Value::Str(s)
            }
            0x11 => {
                let end = self.pkg_end();
                let Value::Int(size) = self.value() else {
                    panic!("buffer size is not an integer")
                };
                let bytes = self.take(end - self.pos).to_vec();
                assert_eq!(bytes.len() as u64, size, "buffer size");
                Value::Buffer(bytes)
            }
            0x12 => {
                let end = self.pkg_end();
                let count = self.byte() as usize;
                let items: Vec<Value> = (0..count).map(|_| self.value()).collect();
                assert_eq!(self.pos, end, "package length");
                Value::Package(items)
            }
            op => panic!("unexpected data opcode {op:#x} at {}", self.pos - 1),
        }
    }

    fn terms(&mut self, end: usize) -> Vec<Term> {
        let mut out = Vec::new();
        while self.pos < end {
            out.push(match self.byte() {
                0x08 => {
                    let n = self.name();
                    Term::Name(n, self.value())
                }
                0x10 => {
                    let e = self.pkg_end();
                    let n = self.name();
                    Term::Scope(n, self.terms(e))
                }
                0x5b => match self.byte() {
                    0x82 => {
                        let e = self.pkg_end();
                        let n = self.name();
                        Term::Device(n, self.terms(e))
                    }
                    0x80 => {
                        let n = self.name();
                        let space = self.byte();
                        Term::Region(n, space, self.value(), self.value())
                    }
                    0x81 => {
                        let e = self.pkg_end();
                        let n = self.name();
                        let flags = self.byte();
                        let mut fields = Vec::new();
                        while self.pos < e {
                            let f = String::from_utf8(self.take(4).to_vec()).unwrap();
                            let bits = self.byte();
                            assert!(bits < 64, "field width beyond one PkgLength byte");
                            fields.push((f, bits));
                        }
                        Term::Field(n, flags, fields)
                    }
                    op => panic!("unexpected extended opcode {op:#x}"),
                },
                0x14 => {
                    let e = self.pkg_end();
                    let n = self.name();
                    let flags = self.byte();
                    Term::Method(n, flags, self.take(e - self.pos).to_vec())
                }
                op => panic!("unexpected opcode {op:#x} at {}", self.pos - 1),
            });
        }
        assert_eq!(self.pos, end, "term list overruns its package");
        out
    }
}

fn named<'a>(terms: &'a [Term], want: &str) -> Option<&'a Value> {
    terms.iter().find_map(|t| match t {
        Term::Name(n, v) if n == want => Some(v),
        _ => None,
    })
}

/// (Memory32Fixed base and length, interrupt) of a _CRS buffer.
fn crs_mem_irq(buf: &[u8]) -> (u32, u32, u32) {
    assert_eq!(buf[0], 0x86);
    assert_eq!(buf[12], 0x89);
    assert_eq!(buf[15], 0x03, "consumer, edge, active high");
    assert_eq!(&buf[buf.len() - 2..], [0x79, 0]);
    (u32_at(buf, 4), u32_at(buf, 8), u32_at(buf, 17))
}

/// The GED: an edge interrupt, its event register as an I/O region with one byte field, and
/// `_EVT`: `Store(GDAT, Local0); If (And(Local0, 1)) { Notify(\_SB_.PWRB, 0x80) }`.
fn check_ged(name: &str, body: &[Term], crs: &[u8], slot: &crate::arch::DeviceSlot) {
    use crate::devices::ged;
    assert_eq!(name, "GED_");
    // Interrupt(ResourceConsumer, Edge, ActiveHigh, Exclusive) { irq }, end tag
    let mut want = vec![0x89, 6, 0, 0x03, 1];
    want.extend_from_slice(&slot.irq.to_le_bytes());
    want.extend_from_slice(&[0x79, 0]);
    assert_eq!(crs, &want[..]);
    let region = body.iter().find_map(|t| match t {
        Term::Region(n, space, off, len) if n == "GDST" => Some((*space, off.clone(), len.clone())),
        _ => None,
    });
    assert_eq!(
        region,
        Some((
            1,
            Value::Int(slot.addr + ged::EVENT_REG),
            Value::Int(ged::LEN)
        )),
        "SystemIO region over the event register"
    );
    let field = body.iter().find_map(|t| match t {
        Term::Field(r, flags, f) if r == "GDST" => Some((*flags, f.clone())),
        _ => None,
    });
    assert_eq!(field, Some((1, vec![("GDAT".to_string(), 8)])));
    let evt = body.iter().find_map(|t| match t {
        Term::Method(n, flags, b) if n == "_EVT" => Some((*flags, b.clone())),
        _ => None,
    });
    let (flags, code) = evt.expect("GED without _EVT");
    assert_eq!(flags, 1 | 1 << 3, "one argument (the GSI), serialized");
    let mut want = vec![0x70, b'G', b'D', b'A', b'T', 0x60]; // Store (GDAT, Local0)
                                                             // If (And (Local0, One)) { Notify (\_SB_.PWRB, 0x80) }
    want.extend_from_slice(&[0xa0, 18, 0x7b, 0x60, ged::EVENT_POWER_BUTTON, 0x00]);
    want.extend_from_slice(&[0x86, b'\\', 0x2e]);
    want.extend_from_slice(b"_SB_PWRB");
    want.extend_from_slice(&[0x0a, 0x80]);
    assert_eq!(code, want);
}

fn parse_dsdt(dsdt: &[u8]) -> Vec<Term> {
    let mut p = Parser {
        b: dsdt,
        pos: tables::HEADER_LEN,
    };
    p.terms(dsdt.len())
}

#[test]
fn tables_parse_back_for_each_device_count() {
    for (cpus, n_virtio) in [(1u8, 0usize), (2, 3), (8, 19), (32, 19)] {
        let devices = device_map(n_virtio).unwrap();
        let t = build(cpus, &devices, PM_PORT, APIC).unwrap();
        let area = Area::from(&t);

        let rsdp = area.at(t.rsdp_addr, tables::RSDP_LEN);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[..20]), 0, "RSDP checksum");
        assert_eq!(sum(rsdp), 0, "RSDP extended checksum");
        assert_eq!(rsdp[15], 2, "ACPI 2.0+ RSDP");
        assert_eq!(t.rsdp_addr % 16, 0, "the guest scans 16-byte boundaries");

        let xsdt = area.table(u64_at(rsdp, 24), b"XSDT");
        let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
        assert_eq!(entries.len(), 2);
        let fadt = area.table(entries[0], b"FACP");
        let madt = area.table(entries[1], b"APIC");

        assert_eq!(fadt.len(), tables::FADT_LEN);
        assert_eq!(fadt[8], 6, "FADT revision");
        let flags = u32_at(fadt, tables::fadt::FLAGS);
        assert_ne!(flags & tables::fadt::HW_REDUCED_ACPI, 0);
        assert_ne!(flags & tables::fadt::RESET_REG_SUP, 0);
        let gas = |off: usize| (fadt[off], fadt[off + 1], u64_at(fadt, off + 4));
        let port = |off: u64| u64::from(PM_PORT) + off;
        assert_eq!(
            gas(tables::fadt::SLEEP_CONTROL_REG),
            (1, 8, port(acpi_pm::SLEEP_CONTROL))
        );
        assert_eq!(
            gas(tables::fadt::SLEEP_STATUS_REG),
            (1, 8, port(acpi_pm::SLEEP_STATUS))
        );
        assert_eq!(gas(tables::fadt::RESET_REG), (1, 8, port(acpi_pm::RESET)));
        assert_eq!(fadt[tables::fadt::RESET_VALUE], acpi_pm::RESET_VALUE);
        let dsdt_addr = u64_at(fadt, tables::fadt::X_DSDT);
        assert_eq!(u64::from(u32_at(fadt, tables::fadt::DSDT)), dsdt_addr);

        // MADT: one enabled LAPIC per CPU with APIC id = index, one I/O APIC after them.
        assert_eq!(u32_at(madt, 36), APIC.0);
        let mut off = 44;
        let (mut lapics, mut ioapics) = (Vec::new(), Vec::new());
        while off < madt.len() {
            let (kind, len) = (madt[off], madt[off + 1] as usize);
            assert!(len >= 2 && off + len <= madt.len(), "MADT entry length");
            match kind {
                0 => lapics.push((madt[off + 2], madt[off + 3], u32_at(madt, off + 4))),
                1 => ioapics.push((madt[off + 2], u32_at(madt, off + 4), u32_at(madt, off + 8))),
                _ => {}
            }
            off += len;
        }
        assert_eq!(off, madt.len());
        let want: Vec<(u8, u8, u32)> = (0..cpus).map(|i| (i, i, 1)).collect();
        assert_eq!(lapics, want);
        assert_eq!(ioapics, vec![(cpus, APIC.1, 0)]);

        // DSDT: \_SB_ holds COM1 and one LNRO0005 device per virtio slot, in order.
        let dsdt = area.table(dsdt_addr, b"DSDT");
        assert_eq!(dsdt[8], dsdt::DSDT_REVISION);
        let terms = parse_dsdt(dsdt);
        assert_eq!(terms.len(), 2, "{terms:?}");
        let Term::Scope(sb, children) = &terms[0] else {
            panic!("{terms:?}")
        };
        assert_eq!(sb, "\\_SB_");
        let s5 = match &terms[1] {
            Term::Name(n, v) if n == "\\_S5_" => v,
            other => panic!("{other:?}"),
        };
        let s5_type = Value::Int(u64::from(acpi_pm::S5_SLEEP_TYPE));
        assert_eq!(s5, &Value::Package(vec![s5_type.clone(), s5_type]));

        let mut virtio = Vec::new();
        let (mut serial, mut ged, mut button) = (0, 0, 0);
        for c in children {
            let Term::Device(name, body) = c else {
                panic!("{c:?}")
            };
            let hid = named(body, "_HID");
            if hid
                == Some(&Value::Int(
                    aml::eisa_id(dsdt::POWER_BUTTON_HID).unwrap().into(),
                ))
            {
                continue;
            }
            let Some(Value::Buffer(crs)) = named(body, "_CRS") else {
                panic!("{name}: no _CRS")
            };
            match hid {
                Some(Value::Str(hid)) if hid == dsdt::VIRTIO_MMIO_HID => {
                    assert_eq!(named(body, "_CCA"), Some(&Value::Int(1)));
                    let uid = named(body, "_UID").cloned();
                    virtio.push((name.clone(), uid, crs_mem_irq(crs)));
                }
                Some(Value::Int(id)) if *id == u64::from(aml::eisa_id("PNP0501").unwrap()) => {
                    serial += 1;
                    // IO(Decode16, 0x3f8, 0x3f8, 0, 8), IRQNoFlags() {4}
                    assert_eq!(&crs[..8], [0x47, 1, 0xf8, 3, 0xf8, 3, 0, 8]);
                    assert_eq!(&crs[8..11], [0x22, 0x10, 0]);
                }
                Some(Value::Str(hid)) if hid == dsdt::GED_HID => {
                    ged += 1;
                    check_ged(name, body, crs, &devices.power_button);
                }
                other => panic!("{name}: unexpected _HID {other:?}"),
            }
        }
        for c in children {
            let Term::Device(name, body) = c else {
                unreachable!()
            };
            if named(body, "_HID")
                == Some(&Value::Int(
                    aml::eisa_id(dsdt::POWER_BUTTON_HID).unwrap().into(),
                ))
            {
                assert_eq!(name, "PWRB", "the name the GED's Notify names");
                assert!(named(body, "_CRS").is_none());
                button += 1;
            }
        }
        assert_eq!((ged, button), (1, 1), "one GED, one power button");
        assert_ne!(
            flags & tables::fadt::PWR_BUTTON,
            0,
            "no fixed power button beside the PNP0C0C one"
        );
        assert_eq!(serial, 1);
        assert_eq!(virtio.len(), n_virtio, "one DSDT device per virtio slot");
        for (i, (name, uid, (base, len, irq))) in virtio.iter().enumerate() {
            let slot = &devices.virtio[i];
            assert_eq!(name, &dsdt::virtio_name(i));
            assert_eq!(uid, &Some(Value::Int(i as u64)));
            assert_eq!(
                (u64::from(*base), u64::from(*len), *irq),
                (slot.addr, slot.len, slot.irq)
            );
        }
    }
}

#[test]
fn bad_layouts_are_refused_with_a_reason() {
    let devices = device_map(1).unwrap();
    let e = build(0, &devices, PM_PORT, APIC).err().unwrap();
    assert!(e.0.contains("at least one CPU"), "{e}");
    let mut high = devices.clone();
    high.virtio[0].addr = 1 << 32;
    let e = build(1, &high, PM_PORT, APIC).err().unwrap();
    assert!(e.0.contains("VR00") && e.0.contains("above 4 GiB"), "{e}");
    let mut many = devices.clone();
    many.virtio = vec![devices.virtio[0]; dsdt::MAX_VIRTIO + 1];
    let e = build(1, &many, PM_PORT, APIC).err().unwrap();
    assert!(e.0.contains("at most 256"), "{e}");
}

/// A disassembly by ACPICA's `iasl`, when installed (Debian: acpica-tools): the compiler's
/// view of the DSDT must show every device and no parse error.
#[test]
fn iasl_disassembles_the_dsdt_when_available() {
    let Ok(out) = std::process::Command::new("iasl").arg("-v").output() else {
        eprintln!("iasl not installed: disassembly check skipped");
        return;
    };
    assert!(out.status.success());
    let devices = device_map(3).unwrap();
    let t = build(2, &devices, PM_PORT, APIC).unwrap();
    let dir = std::env::temp_dir().join(format!("cpv-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (addr, bytes) in &t.blobs[1..] {
        let name = String::from_utf8_lossy(&bytes[..4]).to_lowercase();
        std::fs::write(dir.join(format!("{name}.dat")), bytes).unwrap();
        let _ = addr;
    }
    let out = std::process::Command::new("iasl")
        .current_dir(&dir)
        .args(["-d", "dsdt.dat", "facp.dat", "apic.dat"])
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    let dsl = std::fs::read_to_string(dir.join("dsdt.dsl")).unwrap();
    assert_eq!(dsl.matches("\"LNRO0005\"").count(), 3, "{dsl}");
    assert!(dsl.contains("Memory32Fixed (ReadWrite,"), "{dsl}");
    assert!(dsl.contains("0xD0002000"), "{dsl}");
    assert!(dsl.contains("EisaId (\"PNP0501\")"), "{dsl}");
    assert!(dsl.contains("Name (\\_S5, Package (0x02)"), "{dsl}");
    assert!(dsl.contains("\"ACPI0013\""), "{dsl}");
    assert!(dsl.contains("EisaId (\"PNP0C0C\")"), "{dsl}");
    assert!(
        dsl.contains("OperationRegion (GDST, SystemIO, 0x0610, One)"),
        "{dsl}"
    );
    assert!(dsl.contains(r"Notify (\_SB.PWRB, 0x80)"), "{dsl}");
    assert!(dsl.contains("If ((Local0 & One))"), "{dsl}");
    let facp = std::fs::read_to_string(dir.join("facp.dsl")).unwrap();
    assert!(facp.contains("Hardware Reduced (V5) : 1"), "{facp}");
    let apic = std::fs::read_to_string(dir.join("apic.dsl")).unwrap();
    assert_eq!(apic.matches("Processor Enabled : 1").count(), 2, "{apic}");
    std::fs::remove_dir_all(&dir).unwrap();
}
