//! Where one microVM app's memory goes, read inside the board (docs/density.md): the app's
//! cgroup (`memory.current`, what the agent reports as `MemoryInUse`, and `memory.stat`), its
//! VMM process (`/proc/<pid>/smaps_rollup`, and the guest RAM mapping's resident size from
//! `/proc/<pid>/smaps`), and the guest's own view (`/proc/meminfo` and the kernel's boot-time
//! `Memory:` line, served by the status app's `/cgi-bin/meminfo`).

use crate::agent::RUN_DIR;
use crate::BoardVm;
use std::collections::BTreeMap;
use std::time::Duration;

/// Every figure, by name: `cg.<memory.stat key>` (bytes), `cg.memory.current` (bytes),
/// `vmm.<smaps_rollup key>` (KiB), `vmm.guest_ram_rss` (KiB), `guest.meminfo.<key>` (KiB),
/// `guest.rootfs_kib`, `blob.kernel` / `blob.initrd` / `blob.disk` (bytes), plus the text of
/// `guest.kernel-memory`.
#[derive(Debug, Default, Clone)]
pub struct AppMemory {
    /// Figure name to value, as printed in `target/e2e-logs/density.txt`.
    pub figures: BTreeMap<String, String>,
}

impl AppMemory {
    /// The figure `key` as a number; an error names the key and what was read.
    pub fn num(&self, key: &str) -> Result<u64, String> {
        let v = self
            .figures
            .get(key)
            .ok_or_else(|| format!("no figure {key} in {:?}", self.figures.keys()))?;
        v.trim()
            .parse()
            .map_err(|_| format!("figure {key} is not a number: {v:?}"))
    }

    /// Parses the tagged `DENSITY key=value` lines of the board-side script; the console may
    /// interleave kernel messages, which are skipped.
    pub fn parse(out: &str) -> AppMemory {
        let figures = out
            .lines()
            .filter_map(|l| l.trim().strip_prefix("DENSITY "))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        AppMemory { figures }
    }

    /// The table row values in KiB: (what, KiB) in the order docs/density.md lists them.
    pub fn table(&self) -> Vec<(&'static str, Option<u64>)> {
        let kib = |k: &str| self.num(k).ok().map(|b| b / 1024);
        let raw = |k: &str| self.num(k).ok();
        vec![
            (
                "MemoryInUse (cgroup memory.current)",
                kib("cg.memory.current"),
            ),
            ("cgroup anon (guest RAM + VMM heap)", kib("cg.anon")),
            ("cgroup file (host page cache charged)", kib("cg.file")),
            ("cgroup kernel (page tables, slab, KVM)", kib("cg.kernel")),
            ("VMM Rss", raw("vmm.Rss")),
            ("VMM Pss", raw("vmm.Pss")),
            ("VMM Pss_Anon", raw("vmm.Pss_Anon")),
            ("VMM Pss_File", raw("vmm.Pss_File")),
            ("VMM Shared_Clean", raw("vmm.Shared_Clean")),
            ("VMM Private_Clean", raw("vmm.Private_Clean")),
            ("VMM Private_Dirty", raw("vmm.Private_Dirty")),
            ("guest RAM mapping resident", raw("vmm.guest_ram_rss")),
            ("guest MemTotal", raw("guest.meminfo.MemTotal")),
            ("guest MemFree", raw("guest.meminfo.MemFree")),
            (
                "guest Shmem (initramfs in tmpfs)",
                raw("guest.meminfo.Shmem"),
            ),
            ("guest Cached", raw("guest.meminfo.Cached")),
            ("guest Slab", raw("guest.meminfo.Slab")),
            ("guest root fs (du)", raw("guest.rootfs_kib")),
            ("kernel blob", kib("blob.kernel")),
            ("initrd blob", kib("blob.initrd")),
            ("disk blob", kib("blob.disk")),
        ]
    }

    /// The table as text lines, `what | KiB`.
    pub fn table_text(&self) -> String {
        let mut s = String::new();
        for (what, v) in self.table() {
            let v = v.map_or("-".to_string(), |v| v.to_string());
            s += &format!("| {what} | {v} |\n");
        }
        for key in [
            "guest.kernel-memory",
            "guest.dmesg_lines",
            "guest.dmesg_first",
        ] {
            if let Some(v) = self.figures.get(key) {
                s += &format!("{key}: {v}\n");
            }
        }
        s
    }
}

/// Reads every figure of app `eu_id` (one running microVM whose guest answers HTTP at `addr`).
pub fn measure_app(vm: &mut BoardVm, eu_id: &str, addr: &str) -> Result<AppMemory, String> {
    let cg = format!("/sys/fs/cgroup/cpevisor/{eu_id}");
    let vm_json = format!("{RUN_DIR}/{eu_id}/vm.json");
    // The guest RAM is the VMM's one anonymous mapping of exactly memory_mib: its Rss is every
    // guest page ever touched (without a balloon nothing goes back).
    let script = format!(
        "cg={cg}; echo DENSITY cg.memory.current=$(cat $cg/memory.current); \
         sed -n 's/^\\([a-z_]*\\) \\([0-9]*\\)$/DENSITY cg.\\1=\\2/p' $cg/memory.stat; \
         p=$(head -n1 $cg/cgroup.procs); \
         sed -n 's/^\\([A-Za-z_]*\\): *\\([0-9]*\\) kB$/DENSITY vmm.\\1=\\2/p' /proc/$p/smaps_rollup; \
         mem=$(sed -n 's/.*\"memory_mib\": *\\([0-9]*\\).*/\\1/p' {vm_json}); \
         awk -v want=$((mem * 1024)) '/^Size:/ {{ sz = $2 }} /^Rss:/ {{ if (sz == want) print \"DENSITY vmm.guest_ram_rss=\" $2 }}' \
           /proc/$p/smaps; \
         for f in kernel initrd; do \
           b=$(sed -n \"s/.*\\\"$f\\\": *\\\"\\([^\\\"]*\\)\\\".*/\\1/p\" {vm_json}); \
           [ -n \"$b\" ] && echo DENSITY blob.$f=$(stat -c %s $b); done; \
         d=$(sed -n '/\"disks\"/,/]/s/.*\"path\": *\"\\([^\"]*\\)\".*/\\1/p' {vm_json} | head -n1); \
         [ -n \"$d\" ] && echo DENSITY blob.disk=$(stat -c %s $d); \
         timeout 20 wget -q -O /tmp/meminfo.page http://{addr}/cgi-bin/meminfo && \
           sed 's/^/DENSITY guest./' /tmp/meminfo.page | sed 's/ kB$//'"
    );
    let out = vm.run_ok(&script, Duration::from_secs(90))?;
    let m = AppMemory::parse(&out);
    for key in [
        "cg.memory.current",
        "vmm.Pss",
        "vmm.guest_ram_rss",
        "guest.meminfo.MemTotal",
    ] {
        m.num(key)
            .map_err(|e| format!("{e}\nboard output:\n{out}"))?;
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_lines_are_parsed_and_noise_skipped() {
        let out = "DENSITY cg.memory.current=75292672\r\n[  12.3] eth0: link up\n\
                   DENSITY vmm.Pss=1234\nDENSITY guest.kernel-memory=61000K/65536K available\n";
        let m = AppMemory::parse(out);
        assert_eq!(m.num("cg.memory.current").unwrap(), 75_292_672);
        assert_eq!(m.num("vmm.Pss").unwrap(), 1234);
        assert!(m.num("vmm.Rss").unwrap_err().contains("vmm.Rss"));
        assert!(m.num("guest.kernel-memory").is_err());
        let table = m.table_text();
        assert!(
            table.contains("| MemoryInUse (cgroup memory.current) | 73528 |"),
            "{table}"
        );
        assert!(table.contains("| VMM Rss | - |"), "{table}");
    }
}
