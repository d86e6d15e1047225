//! Flash wear on a board (issue 15), read from the block-device statistics of the flash that
//! holds `/data` (`/sys/block/<dev>/stat`, sectors written) on [`BOARD`]'s firmware, booted
//! on a blank flash the init formats:
//! - `flash.board_install_write_ratio`: what an install writes to the flash, from before its
//!   request to its app Active and `sync`ed (the download, the store, the state files, the file
//!   system's metadata), over the package's size; an erofs-rooted status app, its peer the same
//!   app with its tar root (extracted).
//! - `flash.board_app_bytes_ratio`: the flash's used blocks (`df`) after that install less
//!   before, over the package's size; the same two packages.
//! - `flash.idle_write_kib_per_hour`: what reaches the flash while both apps run and nothing
//!   is asked of the agent, over [`IDLE`], per hour; target 0. The agent's own `write_bytes`
//!   (`/proc/PID/io`) over the same window says whether it is the agent's.
//!
//! Needs `make firmware BOARDS=qemu-malta-mipsel` (the jail packages with it).

use super::jail::{boot_jail_board, tagged_numbers, JailPackages};
use super::stats::round_to;
use super::Figure;
use crate::agent::{install, wait_agent, wait_eu_status, Flash, HttpServer};
use crate::packages::{erofs_root, Variants};
use crate::BoardVm;
use serde_json::json;
use std::time::Duration;

/// The board the figures are taken on.
pub const BOARD: &str = "qemu-malta-mipsel";
/// The flash: the board's own size.
const FLASH_MIB: u64 = 64;
/// How long the board is watched idle (board clock).
pub const IDLE: Duration = Duration::from_secs(300);
const AGENT: Duration = Duration::from_secs(120);
const INSTALL: Duration = Duration::from_secs(400);
const ACTIVE: Duration = Duration::from_secs(240);

/// What one reading of the flash says: sectors written (512 bytes, whatever the device's
/// sector size) and KiB used by the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Reading {
    sectors_written: u64,
    used_kib: u64,
}

/// The block device under `/data` (`sda`), from the init's mount.
fn data_device(vm: &mut BoardVm) -> Result<String, String> {
    let out = vm.run_ok(
        "awk '$2 == \"/data\" {print \"DATA-DEV\", $1}' /proc/mounts",
        Duration::from_secs(30),
    )?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("DATA-DEV /dev/"))
        .map(|d| d.trim().to_string())
        .find(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_alphanumeric()))
        .ok_or_else(|| format!("/data is not on a block device:\n{out}"))
}

/// `sync`, then the flash's written sectors (field 7 of its stat; a partition's own stat file
/// when `dev` is one) and the file system's used KiB.
fn read_flash(vm: &mut BoardVm, dev: &str) -> Result<Reading, String> {
    let out = vm.run_ok(
        &format!(
            "sync; s=/sys/class/block/{dev}/stat; \
             echo \"FLASH-WRITTEN $(awk '{{print $7}}' $s)\"; \
             echo \"FLASH-USED $(df -k /data | awk 'NR == 2 {{print $3}}')\""
        ),
        Duration::from_secs(60),
    )?;
    match (
        &tagged_numbers(&out, "FLASH-WRITTEN")[..],
        &tagged_numbers(&out, "FLASH-USED")[..],
    ) {
        (&[sectors_written], &[used_kib]) => Ok(Reading {
            sectors_written,
            used_kib,
        }),
        _ => Err(format!("cannot read the flash's statistics:\n{out}")),
    }
}

/// Bytes cpevisord has had written to storage so far (`write_bytes` less what it truncated
/// before writeback).
fn agent_write_bytes(vm: &mut BoardVm) -> Result<u64, String> {
    let out = vm.run_ok(
        "p=$(pidof cpevisord); awk '/^write_bytes/ {w=$2} /^cancelled_write_bytes/ {c=$2} \
         END {print \"AGENT-WRITES\", w - c}' /proc/${p%% *}/io",
        Duration::from_secs(30),
    )?;
    tagged_numbers(&out, "AGENT-WRITES")
        .first()
        .copied()
        .ok_or_else(|| format!("cannot read cpevisord's io:\n{out}"))
}

/// One install measured: written and used bytes over the package's size.
#[derive(Debug, Clone, Copy)]
struct InstallCost {
    write_ratio: f64,
    bytes_ratio: f64,
    package_bytes: u64,
}

fn install_measured(
    vm: &mut BoardVm,
    dev: &str,
    url: &str,
    package_bytes: u64,
) -> Result<InstallCost, String> {
    let before = read_flash(vm, dev)?;
    let du = install(vm, url, INSTALL)?
        .outcome
        .map_err(|f| format!("install {url}: {} {}", f.code, f.message))?;
    let eu = du["execution_unit_list"][0]
        .as_str()
        .ok_or_else(|| format!("no EU in {du}"))?
        .to_string();
    wait_eu_status(vm, &eu, "Active", ACTIVE)?;
    let after = read_flash(vm, dev)?;
    let size = package_bytes as f64;
    Ok(InstallCost {
        write_ratio: (after.sectors_written - before.sectors_written) as f64 * 512.0 / size,
        bytes_ratio: after.used_kib.saturating_sub(before.used_kib) as f64 * 1024.0 / size,
        package_bytes,
    })
}

/// The three figures, on a freshly booted [`BOARD`].
pub fn figures(figures: &mut Vec<Figure>) -> Result<(), String> {
    let packages = JailPackages::find(BOARD)?;
    let arch = packages.arch.clone();
    let run = std::process::id();
    let mut variants = Variants::new(&packages.dir);
    let mut named = |root: &str, erofs: bool| -> Result<String, String> {
        let file = packages.variant(&format!("wear-{root}-{arch}-{run}"), |c| {
            c["name"] = json!(format!("wear-{root}"));
            if erofs {
                erofs_root(c);
            }
        })?;
        Ok(variants.keep(file))
    };
    let erofs_file = named("erofs", true)?;
    let tar_file = named("tar", false)?;
    let server = HttpServer::serve(&packages.dir)?;
    let flash = Flash::blank("wear", FLASH_MIB)?;
    let mut vm = boot_jail_board(BOARD, &flash, "formatted")?;
    wait_agent(&mut vm, AGENT)?;
    let dev = data_device(&mut vm)?;

    let mut costs = Vec::new();
    for file in [&erofs_file, &tar_file] {
        let size = std::fs::metadata(packages.dir.join(file))
            .map_err(|e| format!("{file}: {e}"))?
            .len();
        let url = format!("http://10.0.2.2:{}/{file}", server.port);
        costs.push(install_measured(&mut vm, &dev, &url, size)?);
    }
    let (erofs, tar) = (costs[0], costs[1]);

    // Idle: both apps running, nothing asked.
    let start = read_flash(&mut vm, &dev)?;
    let agent_start = agent_write_bytes(&mut vm)?;
    vm.run_ok(
        &format!("sleep {}", IDLE.as_secs()),
        IDLE + Duration::from_secs(120),
    )?;
    let end = read_flash(&mut vm, &dev)?;
    let agent_end = agent_write_bytes(&mut vm)?;
    let per_hour = 3600.0 / IDLE.as_secs_f64();
    let idle_kib = (end.sectors_written - start.sectors_written) as f64 / 2.0 * per_hour;
    let agent_kib = agent_end.saturating_sub(agent_start) as f64 / 1024.0 * per_hour;
    drop(vm);

    let origin = format!(
        "{BOARD} (TCG), its firmware's cpevisord and init, a blank {FLASH_MIB} MiB flash \
         formatted by the init (ext2, busybox mke2fs) as /data on {dev}; the status jail app \
         (busybox httpd), {} byte package with its root as an erofs image, {} byte with its \
         root as a tar layer",
        erofs.package_bytes, tar.package_bytes
    );
    // An erofs-rooted install's ratio against the tar-rooted one's.
    let against_tar = |name: &str, erofs: f64, tar: f64, what: &str| {
        Figure::new(name, round_to(erofs, 3), "ratio")
            .with_peer("tar root (extracted)", round_to(tar, 3))
            .with_note(format!("{what}; {origin}"))
    };
    figures.push(against_tar(
        "flash.board_install_write_ratio",
        erofs.write_ratio,
        tar.write_ratio,
        "bytes written to the flash (its block device's sectors written, after `sync`) from \
         before the install request to the app Active, over the package's size",
    ));
    figures.push(against_tar(
        "flash.board_app_bytes_ratio",
        erofs.bytes_ratio,
        tar.bytes_ratio,
        "the flash file system's used KiB (df) after the install less before (the app's \
         files, its state, its data directory), over the package's size; target <= 1.1",
    ));
    figures.push(
        Figure::new(
            "flash.idle_write_kib_per_hour",
            round_to(idle_kib, 1),
            "KiB/h",
        )
        .with_note(format!(
            "sectors written to the flash over {} s with both apps running and nothing asked \
             of the agent, per hour (cpevisord's own write_bytes over the same window: {:.1} \
             KiB/h); target 0; no peer: an idle agent's writes are its own; {origin}",
            IDLE.as_secs(),
            agent_kib
        )),
    );
    Ok(())
}
