//! `Device.DeviceInfo.`: what the board's configuration says it is, the agent's version, and
//! the kernel's uptime and memory figures.

use super::model::DataModel;
use super::schema::DEVICE;
use super::tree::{Seg, TreeBuilder};

/// Kernel facts for DeviceInfo: seconds since boot, and MemTotal/MemAvailable in KiB.
fn read_uptime() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split('.').next().and_then(|n| n.trim().parse().ok()))
        .unwrap_or(0)
}

fn read_meminfo() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

impl DataModel {
    /// Adds `Device.DeviceInfo.` and its `MemoryStatus.` under `dev`.
    pub(super) fn device_info(&self, t: &mut TreeBuilder, dev: &[Seg]) {
        let (mem_total, mem_free) = read_meminfo();
        let di = &self.cfg.device_info;
        let info = t.object(
            Some(dev),
            DEVICE.child("DeviceInfo").expect("schema"),
            vec![
                ("Manufacturer", di.manufacturer.clone()),
                ("ManufacturerOUI", di.manufacturer_oui.clone()),
                ("ModelName", di.model_name.clone()),
                ("ProductClass", di.product_class.clone()),
                ("SerialNumber", di.serial_number.clone()),
                ("SoftwareVersion", env!("CARGO_PKG_VERSION").to_string()),
                ("UpTime", read_uptime().min(u64::from(u32::MAX)).to_string()),
            ],
        );
        let info_desc = DEVICE.child("DeviceInfo").expect("schema");
        t.object(
            Some(&info),
            info_desc.child("MemoryStatus").expect("schema"),
            vec![
                ("Total", mem_total.min(u64::from(u32::MAX)).to_string()),
                ("Free", mem_free.min(u64::from(u32::MAX)).to_string()),
            ],
        );
    }
}
