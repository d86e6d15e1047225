//! `cpevisor-vmm`: runs one microVM. See `--help` and vmm/README.md.

fn main() {
    cpevisor_vmm::cli::main(std::env::args().skip(1).collect())
}
