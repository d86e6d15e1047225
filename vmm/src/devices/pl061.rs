//! ARM PrimeCell PL061 GPIO controller (aarch64 guests): eight lines, one interrupt. The VMM
//! drives one input line as the guest's power button; the device tree names it in a
//! `gpio-keys` node (`linux,code` = KEY_POWER), as on QEMU's `virt` board.
//!
//! Registers (PL061 TRM, DDI 0190B), byte-wide values in 32-bit slots; Linux's driver uses
//! byte accesses, word accesses work too:
//!
//! | offset | register | |
//! |---|---|---|
//! | 0x000-0x3fc | GPIODATA | address bits 9:2 mask the lines read or written |
//! | 0x400 | GPIODIR | 1 = output |
//! | 0x404 | GPIOIS | interrupt sense: 1 = level, 0 = edge |
//! | 0x408 | GPIOIBE | 1 = both edges (edge sense only) |
//! | 0x40c | GPIOIEV | 1 = rising edge / high level |
//! | 0x410 | GPIOIE | interrupt mask: 1 = enabled |
//! | 0x414 | GPIORIS | raw interrupt status (read only) |
//! | 0x418 | GPIOMIS | masked status = RIS & IE (read only) |
//! | 0x41c | GPIOIC | write 1s to clear edge status |
//! | 0x420 | GPIOAFSEL | stored, no effect |
//! | 0xfe0-0xffc | PrimeCell ids | 0x00041061, 0xb105f00d |
//!
//! The controller's interrupt output is a level (MIS != 0); the VMM's interrupt lines are
//! edges (irqfd), so the device raises one whenever the output goes high, and again after a
//! clear or mask change that leaves it high (the guest's handler reads MIS once per interrupt).
//! Everything the guest writes is a bounded byte: no guest value can make the model misbehave.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::power_button::PowerButton;
use super::{BusDevice, IrqLine};

/// Size of the register window (one 4 KiB page, PrimeCell ids at its end).
pub const PL061_WINDOW_SIZE: u64 = 0x1000;
/// The GPIO line the power button is wired to (QEMU's virt board uses line 3 as well).
pub const POWER_BUTTON_LINE: u8 = 3;
/// How long a press holds the line high: longer than gpio-keys' 5 ms debounce, which reads
/// the line after it and reports the key only if it is still pressed (QEMU holds 100 ms).
pub const PRESS_HOLD: Duration = Duration::from_millis(100);

const DATA_END: u64 = 0x400;
const DIR: u64 = 0x400;
const IS: u64 = 0x404;
const IBE: u64 = 0x408;
const IEV: u64 = 0x40c;
const IE: u64 = 0x410;
const RIS: u64 = 0x414;
const MIS: u64 = 0x418;
const IC: u64 = 0x41c;
const AFSEL: u64 = 0x420;
const ID_BASE: u64 = 0xfe0;
/// GPIOPeriphID0-3 then GPIOPCellID0-3.
const IDS: [u8; 8] = [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The PL061 GPIO controller model.
pub struct Pl061 {
    /// Output latch (GPIODATA as written), seen on the lines set as outputs.
    out: u8,
    /// Levels the VMM drives on the lines set as inputs.
    input: u8,
    dir: u8,
    is: u8,
    ibe: u8,
    iev: u8,
    ie: u8,
    ris: u8,
    afsel: u8,
    /// The interrupt output as last computed (MIS != 0).
    line_high: bool,
    irq: Arc<dyn IrqLine>,
}

impl Pl061 {
    /// A controller raising `irq` when a masked-in line changes.
    pub fn new(irq: Arc<dyn IrqLine>) -> Self {
        Pl061 {
            out: 0,
            input: 0,
            dir: 0,
            is: 0,
            ibe: 0,
            iev: 0,
            ie: 0,
            ris: 0,
            afsel: 0,
            line_high: false,
            irq,
        }
    }

    /// The level of every line: outputs show the latch, inputs what the VMM drives.
    fn levels(&self) -> u8 {
        (self.out & self.dir) | (self.input & !self.dir)
    }

    /// Drives input `line` (0-7) high or low, as the outside world would.
    pub fn set_input(&mut self, line: u8, high: bool) {
        let before = self.levels();
        let bit = 1u8 << (line & 7);
        if high {
            self.input |= bit;
        } else {
            self.input &= !bit;
        }
        self.update(before, false);
    }

    /// Latches edges between `before` and the current levels and level conditions into RIS,
    /// then raises the interrupt if the output went high (or stays high and `reassert`).
    fn update(&mut self, before: u8, reassert: bool) {
        let now = self.levels();
        let changed = before ^ now;
        // Edge lines: any change with IBE, else the direction IEV names (1 = to high).
        let edge = changed & !self.is & (self.ibe | !(now ^ self.iev));
        // Level lines: pending while the line is at the level IEV names.
        let level = !(now ^ self.iev) & self.is;
        self.ris |= edge | level;
        let high = self.ris & self.ie != 0;
        if high && (!self.line_high || reassert) {
            if let Err(e) = self.irq.trigger() {
                crate::log(&format!("pl061: cannot raise the interrupt: {e}"));
            }
        }
        self.line_high = high;
    }

    fn read_reg(&self, offset: u64) -> u8 {
        match offset {
            o if o < DATA_END => self.levels() & ((o >> 2) as u8),
            DIR => self.dir,
            IS => self.is,
            IBE => self.ibe,
            IEV => self.iev,
            IE => self.ie,
            RIS => self.ris,
            MIS => self.ris & self.ie,
            AFSEL => self.afsel,
            o if (ID_BASE..PL061_WINDOW_SIZE).contains(&o) => IDS[((o - ID_BASE) >> 2) as usize],
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u8) {
        let before = self.levels();
        let mut reassert = false;
        match offset {
            o if o < DATA_END => {
                let mask = (o >> 2) as u8;
                self.out = (self.out & !mask) | (v & mask);
            }
            DIR => self.dir = v,
            IS => self.is = v,
            IBE => self.ibe = v,
            IEV => self.iev = v,
            IE => {
                self.ie = v;
                reassert = true;
            }
            IC => {
                self.ris &= !v;
                reassert = true;
            }
            AFSEL => self.afsel = v,
            _ => return,
        }
        self.update(before, reassert);
    }
}

/// Registers sit at word-aligned offsets; byte and word accesses reach their low byte. Other
/// accesses read as zero and are ignored.
fn register(offset: u64, len: usize) -> Option<u64> {
    (matches!(len, 1 | 2 | 4) && offset < PL061_WINDOW_SIZE && offset.is_multiple_of(4))
        .then_some(offset)
}

impl BusDevice for Pl061 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(reg) = register(offset, data.len()) {
            data[0] = self.read_reg(reg);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(reg) = register(offset, data.len()) {
            self.write_reg(reg, data[0]);
        }
    }
}

/// The power button on [`POWER_BUTTON_LINE`]: a press raises the line, the release
/// ([`PRESS_HOLD`] later) lowers it; the guest's gpio-keys driver sees KEY_POWER go down, up.
pub struct Pl061Button(pub Arc<Mutex<Pl061>>);

impl PowerButton for Pl061Button {
    fn press(&self) -> Option<Duration> {
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        d.set_input(POWER_BUTTON_LINE, true);
        Some(PRESS_HOLD)
    }

    fn release(&self) {
        let mut d = self.0.lock().unwrap_or_else(|e| e.into_inner());
        d.set_input(POWER_BUTTON_LINE, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Default)]
    struct Count(AtomicUsize);
    impl IrqLine for Count {
        fn trigger(&self) -> std::io::Result<()> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }
    impl Count {
        fn get(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn dev() -> (Pl061, Arc<Count>) {
        let c = Arc::new(Count::default());
        (Pl061::new(c.clone()), c)
    }

    fn rd(d: &mut Pl061, off: u64) -> u8 {
        let mut b = [0xffu8];
        d.read(off, &mut b);
        b[0]
    }

    fn wr(d: &mut Pl061, off: u64, v: u8) {
        d.write(off, &[v]);
    }

    const BIT: u8 = 1 << POWER_BUTTON_LINE;

    #[test]
    fn primecell_ids_read_back_as_linux_matches_them() {
        let (mut d, _) = dev();
        let ids: Vec<u8> = (0..8).map(|i| rd(&mut d, 0xfe0 + 4 * i)).collect();
        assert_eq!(ids, IDS);
        // periphid 0x00041061 (Linux's amba id table for pl061), cellid 0xb105f00d
        let word = |base: u64, d: &mut Pl061| {
            (0..4).fold(0u32, |acc, i| {
                acc | u32::from(rd(d, base + 4 * i)) << (8 * i)
            })
        };
        assert_eq!(word(0xfe0, &mut d), 0x0004_1061);
        assert_eq!(word(0xff0, &mut d), 0xb105_f00d);
        let mut w = [0xffu8; 4];
        d.read(0xfe0, &mut w);
        assert_eq!(
            w,
            [0x61, 0, 0, 0],
            "a word read gives the byte in its low lane"
        );
    }

    #[test]
    fn data_reads_and_writes_are_masked_by_address_bits() {
        let (mut d, _) = dev();
        wr(&mut d, DIR, 0x0f); // lines 0-3 outputs
        wr(&mut d, 0x3fc, 0xff); // mask 0xff: outputs take 0x0f
        assert_eq!(rd(&mut d, 0x3fc), 0x0f);
        wr(&mut d, 0x1 << 2, 0x00); // mask 0x01 clears line 0 only
        assert_eq!(rd(&mut d, 0x3fc), 0x0e);
        assert_eq!(
            rd(&mut d, 0x2 << 2),
            0x02,
            "a read sees only the masked lines"
        );
        d.set_input(5, true);
        assert_eq!(rd(&mut d, 0x3fc), 0x2e, "inputs show the driven level");
        d.set_input(1, false);
        assert_eq!(
            rd(&mut d, 0x3fc),
            0x2e,
            "driving an output line changes nothing"
        );
    }

    #[test]
    fn both_edges_as_gpio_keys_programs_them_interrupt_on_press_and_release() {
        let (mut d, irq) = dev();
        // gpio-keys: input, edge, both edges, unmasked
        wr(&mut d, DIR, 0);
        wr(&mut d, IS, 0);
        wr(&mut d, IBE, BIT);
        wr(&mut d, IE, BIT);
        assert_eq!(irq.get(), 0, "nothing pending yet");
        d.set_input(POWER_BUTTON_LINE, true);
        assert_eq!(irq.get(), 1);
        assert_eq!(rd(&mut d, MIS), BIT);
        assert_eq!(rd(&mut d, 0x3fc), BIT, "the key reads pressed");
        wr(&mut d, IC, BIT);
        assert_eq!(rd(&mut d, RIS), 0);
        assert_eq!(
            irq.get(),
            1,
            "a clear that leaves nothing pending raises nothing"
        );
        d.set_input(POWER_BUTTON_LINE, false);
        assert_eq!(irq.get(), 2, "the release is an edge too");
        assert_eq!(rd(&mut d, 0x3fc), 0);
    }

    #[test]
    fn single_edge_sense_follows_iev_and_the_mask_holds_it_back() {
        let (mut d, irq) = dev();
        wr(&mut d, IEV, BIT); // rising only
        d.set_input(POWER_BUTTON_LINE, true);
        assert_eq!(rd(&mut d, RIS), BIT, "latched while masked");
        assert_eq!(irq.get(), 0, "masked: no interrupt");
        wr(&mut d, IE, BIT);
        assert_eq!(irq.get(), 1, "unmasking a pending line raises it");
        wr(&mut d, IC, 0xff);
        d.set_input(POWER_BUTTON_LINE, false);
        assert_eq!(rd(&mut d, RIS), 0, "falling edge ignored with IEV = rising");
        wr(&mut d, IEV, 0); // falling only
        d.set_input(POWER_BUTTON_LINE, true);
        assert_eq!(rd(&mut d, RIS), 0);
        d.set_input(POWER_BUTTON_LINE, false);
        assert_eq!(rd(&mut d, RIS), BIT);
        assert_eq!(irq.get(), 2);
    }

    #[test]
    fn a_clear_that_leaves_another_line_pending_raises_again() {
        let (mut d, irq) = dev();
        wr(&mut d, IBE, 0xff);
        wr(&mut d, IE, 0xff);
        d.set_input(1, true);
        d.set_input(2, true);
        assert_eq!(irq.get(), 1, "the output was already high for line 2");
        wr(&mut d, IC, 0x02);
        assert_eq!(irq.get(), 2, "line 2 still pending: a new edge");
        wr(&mut d, IC, 0x04);
        assert_eq!(irq.get(), 2);
    }

    #[test]
    fn level_sense_stays_pending_while_the_level_holds() {
        let (mut d, irq) = dev();
        wr(&mut d, IS, BIT);
        wr(&mut d, IEV, BIT); // high level
        wr(&mut d, IE, BIT);
        d.set_input(POWER_BUTTON_LINE, true);
        assert_eq!(irq.get(), 1);
        wr(&mut d, IC, BIT);
        assert_eq!(
            rd(&mut d, RIS),
            BIT,
            "a level cannot be cleared while it holds"
        );
        d.set_input(POWER_BUTTON_LINE, false);
        wr(&mut d, IC, BIT);
        assert_eq!(rd(&mut d, RIS), 0);
    }

    #[test]
    fn odd_accesses_are_ignored() {
        let (mut d, irq) = dev();
        d.write(DIR + 1, &[0xff]); // unaligned
        d.write(DIR, &[0xff; 8]); // 8 bytes
        d.write(0x1000, &[0xff]); // past the window
        d.write(RIS, &[0xff]); // read-only
        d.write(MIS, &[0xff]);
        assert_eq!(rd(&mut d, DIR), 0);
        assert_eq!(rd(&mut d, RIS), 0);
        let mut b = [0xffu8; 3];
        d.read(ID_BASE, &mut b);
        assert_eq!(b, [0; 3]);
        assert_eq!(irq.get(), 0);
    }

    #[test]
    fn the_power_button_presses_and_releases_line_3() {
        let (mut d, irq) = dev();
        wr(&mut d, IBE, BIT);
        wr(&mut d, IE, BIT);
        let dev = Arc::new(Mutex::new(d));
        let button = Pl061Button(dev.clone());
        assert_eq!(button.press(), Some(PRESS_HOLD));
        assert_eq!(rd(&mut dev.lock().unwrap(), 0x3fc), BIT);
        wr(&mut dev.lock().unwrap(), IC, BIT); // the guest's handler acknowledges the press
        button.release();
        assert_eq!(rd(&mut dev.lock().unwrap(), 0x3fc), 0);
        assert_eq!(irq.get(), 2);
    }
}
