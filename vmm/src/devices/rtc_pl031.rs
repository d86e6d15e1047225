//! ARM PL031 real-time clock (aarch64 guests), vm-superio's model behind our bus.
//!
//! Device tree: `compatible = "arm,pl031", "arm,primecell"`, a 0x1000-byte MMIO window, clock
//! `apb_pclk`. Its alarm is not modelled, so it needs no interrupt wiring (the node may still
//! name one; the guest never sees it fire).

use super::BusDevice;

/// Size of the register window (one 4 KiB page, AMBA PrimeCell IDs at its end).
pub const RTC_WINDOW_SIZE: u64 = 0x1000;

/// The PL031 RTC.
pub struct RtcPl031 {
    rtc: vm_superio::Rtc<vm_superio::rtc_pl031::NoEvents>,
}

impl Default for RtcPl031 {
    fn default() -> Self {
        Self::new()
    }
}

impl RtcPl031 {
    /// An RTC that reads the host's wall clock.
    pub fn new() -> Self {
        RtcPl031 {
            rtc: vm_superio::Rtc::new(),
        }
    }
}

/// Registers are 32 bits wide and word aligned; other accesses read as zero and are ignored.
fn register(offset: u64, len: usize) -> Option<u16> {
    (len == 4 && offset < RTC_WINDOW_SIZE && offset.is_multiple_of(4)).then_some(offset as u16)
}

impl BusDevice for RtcPl031 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(reg) = register(offset, data.len()) {
            let mut word = [0u8; 4];
            self.rtc.read(reg, &mut word);
            data.copy_from_slice(&word);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let (Some(reg), Ok(word)) = (register(offset, data.len()), <[u8; 4]>::try_from(data)) {
            self.rtc.write(reg, &word);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{SystemTime, UNIX_EPOCH};

    const RTCDR: u64 = 0x0;
    const RTCLR: u64 = 0x8;

    fn read32(rtc: &mut RtcPl031, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        rtc.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    #[test]
    fn reads_host_time_and_takes_guest_adjustments() {
        let mut rtc = RtcPl031::new();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        let t = read32(&mut rtc, RTCDR);
        assert!(t >= now && t <= now + 2, "rtc {t} vs host {now}");

        rtc.write(RTCLR, &1000u32.to_le_bytes());
        let t = read32(&mut rtc, RTCDR);
        assert!((1000..1003).contains(&t), "guest-set time {t}");
    }

    #[test]
    fn primecell_id_and_bad_accesses() {
        let mut rtc = RtcPl031::new();
        // PrimeCell ID bytes, as the guest's AMBA bus probes them.
        assert_eq!(read32(&mut rtc, 0xff0), 0x0d);
        assert_eq!(read32(&mut rtc, 0xffc), 0xb1);
        assert_eq!(read32(&mut rtc, 0xfe0), 0x31);
        // Unaligned, narrow or out-of-window accesses are harmless.
        let mut narrow = [0xffu8; 2];
        rtc.read(0, &mut narrow);
        assert_eq!(narrow, [0, 0]);
        assert_eq!(read32(&mut rtc, 0x1002), 0);
        assert_eq!(read32(&mut rtc, u64::MAX - 3), 0);
        rtc.write(0xffe, &[1, 2, 3, 4]);
        rtc.write(RTCLR, &[1, 2]);
        assert_eq!(read32(&mut rtc, RTCLR), 0);
    }
}
