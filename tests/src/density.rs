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
/// `vmm.<smaps_rollup key>` (KiB), `vmm.guest_ram_rss` / `_pss` / `_anon` (KiB), `guest.meminfo.<key>` (KiB),
/// `guest.rootfs_kib`, `blob.kernel` / `blob.initrd` / `blob.root` / `blob.disk` (bytes), plus the text of
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
            ("guest RAM mapping Pss", raw("vmm.guest_ram_pss")),
            (
                "guest RAM private (Anonymous: not the kernel file's shared pages)",
                raw("vmm.guest_ram_anon"),
            ),
            ("guest MemTotal", raw("guest.meminfo.MemTotal")),
            ("guest MemFree", raw("guest.meminfo.MemFree")),
            (
                "guest Shmem (an initramfs root in tmpfs, and /tmp, /run)",
                raw("guest.meminfo.Shmem"),
            ),
            ("guest Cached", raw("guest.meminfo.Cached")),
            ("guest Slab", raw("guest.meminfo.Slab")),
            ("guest root fs (du)", raw("guest.rootfs_kib")),
            ("kernel blob", kib("blob.kernel")),
            ("initrd blob", kib("blob.initrd")),
            ("root image blob (erofs, read-only disk)", kib("blob.root")),
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
            "guest.rootfs_type",
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

/// Finds the guest RAM in a VMM's `/proc/PID/smaps` (`-v want=KiB`) and prints its
/// `vmm.guest_ram_rss`, `vmm.guest_ram_pss` and `vmm.guest_ram_anon` (KiB). The RAM is either
/// one anonymous rw-p mapping of exactly that size, or, since the kernel image is mapped
/// copy-on-write from its file over part of it, the run of adjacent rw-p mappings (anonymous,
/// or private file mappings) around a file mapping that adds up to exactly that size; the one
/// with most Rss if several. One line without single quotes: it is typed into the board's
/// shell inside them.
/// scripts/bench-board.sh has the same search.
pub const GUEST_RAM_AWK: &str = concat!(
    r#"function p(j) { return k[j] == "a" || k[j] == "f" } function t(l, h,  j, r, s, "#,
    r#"a) { r = 0; s = 0; a = 0; for (j = l; j <= h; j++) { r += R[j]; s += P[j]; a += "#,
    r#"A[j] } if (!f || r >= gr) { gr = r; gp = s; ga = a; f = 1 } } "#,
    r#"/^[0-9a-f]+-[0-9a-f]+ / { n++; split($1, x, "-"); b[n] = x[1]; e[n] = x[2]; k[n] "#,
    r#"= "x"; if ($2 == "rw-p") k[n] = ($5 == "0") ? "a" : "f"; next } /^Size:/ { z[n] "#,
    r#"= $2; next } /^Rss:/ { R[n] = $2; next } /^Pss:/ { P[n] = $2; next } "#,
    r#"/^Anonymous:/ { A[n] = $2; next } END { for (i = 1; i <= n; i++) { if (k[i] == "#,
    r#""a" && z[i] == want) t(i, i); if (k[i] != "f") continue; l = i; h = i; s = z[i]; "#,
    r#"while (h < n && e[h] == b[h + 1] && p(h + 1) && s + z[h + 1] <= want) { h++; s "#,
    r#"+= z[h] } while (l > 1 && b[l] == e[l - 1] && p(l - 1) && s + z[l - 1] <= want) "#,
    r#"{ l--; s += z[l] } if (s == want) t(l, h) } if (f) printf "DENSITY "#,
    r#"vmm.guest_ram_rss=%d\nDENSITY vmm.guest_ram_pss=%d\nDENSITY "#,
    r#"vmm.guest_ram_anon=%d\n", gr, gp, ga }"#,
);

/// Where [`measure_app`] puts [`GUEST_RAM_AWK`] on the board.
const GUEST_RAM_AWK_FILE: &str = "/tmp/guest-ram.awk";

/// Longest command typed into the board's console at once. A line several times the terminal's
/// width makes busybox ash redraw it and query the cursor while the rest still arrives, and
/// under load characters were lost (seen: a 2,600-character line cut, the shell left waiting
/// for its closing quote).
pub const MAX_CONSOLE_LINE: usize = 640;

/// Commands that write [`GUEST_RAM_AWK`] to [`GUEST_RAM_AWK_FILE`] in pieces that each fit in
/// [`MAX_CONSOLE_LINE`].
fn awk_file_commands() -> Vec<String> {
    let mut cmds = vec![format!("rm -f {GUEST_RAM_AWK_FILE}")];
    let mut piece = String::new();
    for word in GUEST_RAM_AWK.split_inclusive(' ') {
        if piece.len() + word.len() > 400 {
            cmds.push(format!("printf '%s' '{piece}' >> {GUEST_RAM_AWK_FILE}"));
            piece.clear();
        }
        piece.push_str(word);
    }
    cmds.push(format!("printf '%s\\n' '{piece}' >> {GUEST_RAM_AWK_FILE}"));
    cmds
}

/// The board-side commands that print every figure of app `eu_id`, after
/// [`awk_file_commands`]: each one console line.
fn measure_commands(eu_id: &str, addr: &str) -> Vec<String> {
    let cg = format!("/sys/fs/cgroup/cpevisor/{eu_id}");
    let vm_json = format!("{RUN_DIR}/{eu_id}/vm.json");
    // The guest RAM: the VMM's anonymous mapping of exactly memory_mib, split by the kernel
    // image mapped copy-on-write from its file (vmm/src/vstate/memory.rs) into a run of
    // adjacent rw-p mappings around that file mapping ([`GUEST_RAM_AWK`]). Its Rss is every
    // guest page ever touched (without a balloon nothing goes back), its Anonymous the pages
    // the guest owns (the kernel's read-only pages are the host page cache's, shared).
    vec![
        format!(
            "cg={cg}; echo DENSITY cg.memory.current=$(cat $cg/memory.current); \
             sed -n 's/^\\([a-z_]*\\) \\([0-9]*\\)$/DENSITY cg.\\1=\\2/p' $cg/memory.stat"
        ),
        format!(
            "p=$(head -n1 {cg}/cgroup.procs); \
             sed -n 's/^\\([A-Za-z_]*\\): *\\([0-9]*\\) kB$/DENSITY vmm.\\1=\\2/p' /proc/$p/smaps_rollup; \
             mem=$(sed -n 's/.*\"memory_mib\": *\\([0-9]*\\).*/\\1/p' {vm_json}); \
             awk -v want=$((mem * 1024)) -f {GUEST_RAM_AWK_FILE} /proc/$p/smaps"
        ),
        format!(
            "for f in kernel initrd; do \
               b=$(sed -n \"s/.*\\\"$f\\\": *\\\"\\([^\\\"]*\\)\\\".*/\\1/p\" {vm_json}); \
               [ -n \"$b\" ] && echo DENSITY blob.$f=$(stat -c %s $b); done; \
             awk '/\"disks\"/ {{ d = 1 }} d && /\"path\"/ {{ split($0, a, \"\\\"\"); p = a[4] }} \
               d && /\"read_only\"/ {{ print (/true/ ? \"root\" : \"disk\"), p }} d && /\\]/ {{ exit }}' \
               {vm_json} | while read k p; do echo DENSITY blob.$k=$(stat -c %s $p); done"
        ),
        format!(
            "timeout 20 wget -q -O /tmp/meminfo.page http://{addr}/cgi-bin/meminfo && \
             sed 's/^/DENSITY guest./' /tmp/meminfo.page | sed 's/ kB$//'"
        ),
    ]
}

/// Reads every figure of app `eu_id` (one running microVM whose guest answers HTTP at `addr`).
pub fn measure_app(vm: &mut BoardVm, eu_id: &str, addr: &str) -> Result<AppMemory, String> {
    for cmd in awk_file_commands() {
        vm.run_ok(&cmd, Duration::from_secs(30))?;
    }
    let mut out = String::new();
    for cmd in measure_commands(eu_id, addr) {
        out += &vm.run_ok(&cmd, Duration::from_secs(60))?;
        out.push('\n');
    }
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

    /// A VMM's smaps, cut to what the search reads: `(range, perms, inode, Size, Rss, Pss,
    /// Anonymous)` per mapping.
    fn smaps(vmas: &[(&str, &str, &str, u64, u64, u64, u64)]) -> String {
        let mut s = String::new();
        for (range, perms, inode, size, rss, pss, anon) in vmas {
            let path = if *inode == "0" {
                ""
            } else {
                "/store/blobs/sha256/k"
            };
            s += &format!("{range} {perms} 00000000 00:00 {inode}    {path}\n");
            s += &format!("Size: {size} kB\nKernelPageSize: 4 kB\nRss: {rss} kB\n");
            s += &format!("Pss: {pss} kB\nPss_Anon: {anon} kB\nAnonymous: {anon} kB\n");
        }
        s
    }

    fn search(smaps: &str, want_kib: u64) -> String {
        let dir = std::env::temp_dir().join(format!("cpv-guestram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("smaps");
        std::fs::write(&f, smaps).unwrap();
        let out = std::process::Command::new("awk")
            .arg("-v")
            .arg(format!("want={want_kib}"))
            .arg(GUEST_RAM_AWK)
            .arg(&f)
            .output()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn guest_ram_is_found_whole_or_around_the_mapped_kernel() {
        // One anonymous mapping of the guest size (no kernel mapped: QEMU, or a copy).
        let whole = smaps(&[
            (
                "7f0000000000-7f0000100000",
                "rw-p",
                "0",
                1024,
                100,
                100,
                100,
            ),
            (
                "7f0000100000-7f0004100000",
                "rw-p",
                "0",
                65536,
                9000,
                9000,
                9000,
            ),
        ]);
        assert_eq!(
            search(&whole, 65536),
            "DENSITY vmm.guest_ram_rss=9000\nDENSITY vmm.guest_ram_pss=9000\n\
             DENSITY vmm.guest_ram_anon=9000\n"
        );
        // The kernel mapped at the start of RAM (arm64, text_offset 0): file + anonymous,
        // with an unrelated anonymous neighbour before it and a library after it.
        let split = smaps(&[
            (
                "7f0000000000-7f0000100000",
                "rw-p",
                "0",
                1024,
                100,
                100,
                100,
            ),
            (
                "7f0000100000-7f00004e5000",
                "rw-p",
                "4242",
                3988,
                3500,
                1900,
                300,
            ),
            (
                "7f00004e5000-7f0004100000",
                "rw-p",
                "0",
                61548,
                8000,
                8000,
                8000,
            ),
            ("7f0004100000-7f0004101000", "r--p", "77", 4, 4, 1, 0),
        ]);
        assert_eq!(
            search(&split, 65536),
            "DENSITY vmm.guest_ram_rss=11500\nDENSITY vmm.guest_ram_pss=9900\n\
             DENSITY vmm.guest_ram_anon=8300\n"
        );
        // x86: anonymous, file, anonymous.
        let x86 = smaps(&[
            ("7f0000000000-7f0000100000", "rw-p", "0", 1024, 10, 10, 10),
            (
                "7f0000100000-7f0000500000",
                "rw-p",
                "4242",
                4096,
                4096,
                2048,
                0,
            ),
            ("7f0000500000-7f0004000000", "rw-p", "0", 60416, 5, 5, 5),
        ]);
        assert!(search(&x86, 65536).starts_with("DENSITY vmm.guest_ram_rss=4111\n"));
        // Not adjacent, or not adding up: nothing printed (measure_app then names the key).
        let gap = smaps(&[
            (
                "7f0000100000-7f00004e5000",
                "rw-p",
                "4242",
                3988,
                3500,
                1900,
                300,
            ),
            (
                "7f00004e6000-7f0004101000",
                "rw-p",
                "0",
                61548,
                8000,
                8000,
                8000,
            ),
        ]);
        assert_eq!(search(&gap, 65536), "");
    }

    #[test]
    fn the_measuring_commands_are_short_console_lines_that_rebuild_the_awk_program() {
        let mut all = awk_file_commands();
        all.extend(measure_commands(
            "0123456789abcdef0123456789abcdef0123",
            "10.0.0.2:80",
        ));
        for s in &all {
            assert!(!s.contains('\n'), "{s}");
            assert!(s.len() <= MAX_CONSOLE_LINE, "{} characters: {s}", s.len());
        }
        // The pieces put together are the program (the shell's printf adds only the newline).
        let rebuilt: String = awk_file_commands()[1..]
            .iter()
            .map(|c| c.split('\'').nth(3).unwrap())
            .collect();
        assert_eq!(rebuilt, GUEST_RAM_AWK);
        assert!(!GUEST_RAM_AWK.contains('\''));
    }
}
