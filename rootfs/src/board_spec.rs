//! From a board profile (`boards/<name>.toml`, loaded by `cpevisor-boards`) to a [`FirmwareSpec`].

use std::fs;
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
    let path = dir.join(format!("{name}.toml"));
    // The profile was just validated; install the file exactly as written (comments included).
    let toml = fs::read_to_string(&path).map_err(|source| FirmwareError::Io {
        path: path.clone(),
        source,
    })?;
    spec_from_board(&board, toml)
}

/// Spec for an already loaded board; `board_toml` is the profile text to install.
pub fn spec_from_board(board: &Board, board_toml: String) -> Result<FirmwareSpec, FirmwareError> {
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
        board_toml,
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
                    assert!(spec.board_toml.contains(&format!("name = \"{name}\"")));
                }
                Err(e) => {
                    assert!(board.kernel.is_none(), "{name}: {e}");
                    assert!(e.to_string().contains("[kernel]"), "{e}");
                }
            }
        }
    }

    #[test]
    fn unknown_board_is_an_error_naming_it() {
        let err = spec_for_board("no-such-board").unwrap_err().to_string();
        assert!(err.contains("no-such-board"), "{err}");
    }
}
