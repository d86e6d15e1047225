//! From a board profile (`boards/<name>.toml`, loaded by `cpevisor-boards`) to a [`FirmwareSpec`].

use std::path::Path;

use cpevisor_boards::Board;

use crate::firmware::{FirmwareError, FirmwareSpec};

/// Modules the firmware's own init needs whatever the board: `/data` on `/dev/vda` is ext2,
/// which Debian kernels provide through the ext4 module (`CONFIG_EXT4_USE_FOR_EXT2`). ext4
/// refuses to mount without the "crc32c" crypto algorithm, a soft dependency named by alias
/// (`softdep=pre: crc32c`) that the planner cannot resolve without depmod's alias index, so
/// its provider is listed by name. Names the kernel has built in are skipped by the planner.
pub const INIT_MODULES: [&str; 2] = ["crc32c_generic", "ext4"];

/// Spec for board `name` from the profiles directory (`cpevisor_boards::boards_dir()`).
pub fn spec_for_board(name: &str) -> Result<FirmwareSpec, FirmwareError> {
    spec_for_board_in(&cpevisor_boards::boards_dir(), name)
}

/// Spec for board `name` from the profiles in `dir`.
pub fn spec_for_board_in(dir: &Path, name: &str) -> Result<FirmwareSpec, FirmwareError> {
    let board = Board::by_name_in(dir, name).map_err(|e| FirmwareError::Input(e.to_string()))?;
    spec_from_board(&board)
}

/// Spec for an already loaded board.
pub fn spec_from_board(board: &Board) -> Result<FirmwareSpec, FirmwareError> {
    let kernel = board.kernel.as_ref().ok_or_else(|| {
        FirmwareError::Input(format!(
            "board {}: the profile has no [kernel] section (kernel.flavour, kernel.modules), \
             so there is no Debian kernel to build its firmware from",
            board.name
        ))
    })?;
    let mut modules = kernel.modules.clone();
    for m in INIT_MODULES {
        if !modules.iter().any(|x| x == m) {
            modules.push(m.to_string());
        }
    }
    Ok(FirmwareSpec {
        board: board.name.clone(),
        arch: board.cpu.arch.as_str().to_string(),
        debian_arch: board.cpu.debian_arch.clone(),
        kernel_flavour: kernel.flavour.clone(),
        modules,
        // As JSON: the agent's build for a board reads no TOML (docs/flash.md, section 8).
        board_json: board.to_json_text(),
        network: board.network.as_ref().map(network_file),
    })
}

/// `/etc/cpevisor/network`: the profile's `[network]` as shell variables the init sources
/// (`WAN`, `LAN`, `LAN_PORTS`, `LAN_ADDRESS`). The profile validated every value (interface
/// names of `[A-Za-z0-9._-]`, an IPv4 address with a prefix), so none needs quoting.
pub fn network_file(network: &cpevisor_boards::Network) -> String {
    format!(
        "# From the board profile's [network] (cpevisor-rootfs firmware); read by /init.\n\
         WAN={}\nLAN={}\nLAN_PORTS=\"{}\"\nLAN_ADDRESS={}\n",
        network.wan,
        network.lan,
        network.lan_ports.join(" "),
        network.lan_address
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_emulated_board_maps_to_a_spec() {
        let dir = cpevisor_boards::boards_dir();
        let names = cpevisor_boards::list_boards_in(&dir);
        assert!(names.iter().any(|n| n == cpevisor_boards::DEFAULT_BOARD));
        for name in names {
            let board = Board::by_name_in(&dir, &name).unwrap();
            match spec_for_board_in(&dir, &name) {
                Ok(spec) => {
                    assert_eq!(spec.board, name);
                    assert_eq!(spec.arch, board.cpu.arch.as_str());
                    assert!(spec.modules.iter().any(|m| m == "ext4"));
                    // The installed profile is the board, read back as the agent reads it.
                    let installed = Board::from_json_str(&spec.board_json, "board.json").unwrap();
                    assert_eq!(installed, board);
                }
                Err(e) => {
                    assert!(board.kernel.is_none(), "{name}: {e}");
                    assert!(e.to_string().contains("[kernel]"), "{e}");
                }
            }
        }
    }

    /// The init tells jail boards by grepping the installed JSON profile (it has no JSON
    /// parser): each of its patterns picks out exactly the jail boards' profiles.
    #[test]
    fn the_inits_jail_test_matches_the_installed_profile() {
        let patterns: Vec<&str> = crate::firmware::INIT_TEMPLATE
            .lines()
            .filter(|l| l.contains(cpevisor_boards::INSTALLED_PROFILE))
            .filter_map(|l| l.split("grep -q '").nth(1)?.split('\'').next())
            .collect();
        assert_eq!(patterns.len(), 2, "{patterns:?}");
        let (boards, errors) = cpevisor_boards::load_all_in(&cpevisor_boards::boards_dir());
        assert!(errors.is_empty(), "{errors:?}");
        let mut jail_boards = 0;
        for board in boards.iter().filter(|b| b.kernel.is_some()) {
            let spec = spec_from_board(board).unwrap();
            let jail = board.isolation == cpevisor_boards::Isolation::Jail;
            jail_boards += usize::from(jail);
            for pattern in &patterns {
                let mut grep = std::process::Command::new("grep")
                    .args(["-q", pattern])
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                use std::io::Write;
                grep.stdin
                    .take()
                    .unwrap()
                    .write_all(spec.board_json.as_bytes())
                    .unwrap();
                let matched = grep.wait().unwrap().success();
                assert_eq!(matched, jail, "{}: `{pattern}`", board.name);
            }
        }
        assert!(jail_boards > 0);
    }

    #[test]
    fn unknown_board_is_an_error_naming_it() {
        let err = spec_for_board("no-such-board").unwrap_err().to_string();
        assert!(err.contains("no-such-board"), "{err}");
    }
}
