# cpevisor: every entry point. `make demo` and `make test` do all the set-up themselves.
SHELL := /bin/bash
BOARD ?= qemu-virt-a53
# Emulated boards, built and booted by the tests.
EMULATED := qemu-virt-a53 qemu-virt-a53-gicv2 qemu-virt-a15 qemu-malta-mipsel qemu-malta-mips64el qemu-q35-x86_64
BOARDS ?= $(EMULATED)
export CPEVISOR_CACHE ?= $(HOME)/.cache/cpevisor
CARGO ?= cargo

.PHONY: all setup build cross firmware guest-kernels guest-images board demo test lint unit fuzz e2e bench clean-firmware dns-filter-test

all: build

## setup: host packages (Debian), kernels and busybox per architecture, into $(CPEVISOR_CACHE)
setup:
	@bash scripts/setup.sh

build:
	$(CARGO) build --workspace

## cross: static size-optimized binaries for aarch64, armv7, mipsel, mips64el, x86_64
cross: setup
	@bash scripts/cross.sh $(CROSS_TARGETS)

## firmware: kernel + initramfs for each board in BOARDS, into target/firmware/<board>/
firmware: setup
	@bash scripts/firmware.sh $(BOARDS)

## guest-kernels: minimal microVM guest kernels from Debian's linux-source, into
## $(CPEVISOR_CACHE)/guest-kernel/<arch>/ (cached: rebuilt only when the source or a fragment changes)
GUEST_KERNEL_ARCHES ?= aarch64 x86_64
guest-kernels: setup
	@bash scripts/guest-kernel.sh $(GUEST_KERNEL_ARCHES)

## guest-images: microVM images of the sample app (Image, initramfs, ext2 disk) for each
## ARCH:KERNEL in GUEST_IMAGES, into target/guest/<arch>-status-<kernel>/ (see scripts/guest-images.sh)
GUEST_IMAGES ?= aarch64:stock aarch64:minimal x86_64:stock x86_64:minimal
guest-images: setup guest-kernels
	@bash scripts/guest-images.sh $(GUEST_IMAGES)

## board: boot BOARD's firmware under QEMU with the console on this terminal (Ctrl-A X quits)
board: setup
	@bash scripts/firmware.sh $(BOARD)
	@bash scripts/board.sh $(BOARD)

## demo: boot the default board and show what runs on it
demo: setup
	@bash scripts/firmware.sh $(BOARD)
	$(CARGO) run -q -p cpevisor-e2e --bin cpevisor-demo -- $(BOARD)

## test: formatting, lints, unit and host tests, fuzzing, then every emulated board end to end
test: setup lint unit fuzz dns-filter-test firmware e2e

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace

## fuzz: libFuzzer on USP Record and Msg decoding, FUZZ_SECONDS per target (cargo-fuzz is
## installed into $(CPEVISOR_CACHE)/tools on first use)
FUZZ_SECONDS ?= 45
fuzz: setup
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

# vmm_in_board builds its own guest images (a fresh token on each disk) and boots them with
# cpevisor-vmm inside the aarch64 boards, with the stock and the minimal guest kernel.
# The nested-KVM boards of vmm_in_board run one at a time: two TCG boards with nested guests
# side by side on a 2-core machine starved the q35 board's vCPUs into a kernel stall (seen once).
e2e: guest-kernels
	$(CARGO) test -p cpevisor-e2e --test boards --test agent_in_board --test jail_in_board --test small_flash_in_board --test net_in_board --test usp_in_board --test fleet_in_board --test density_in_board -- --ignored --test-threads=2
	$(CARGO) test -p cpevisor-e2e --test vmm_in_board -- --ignored --test-threads=1

## dns-filter-test: the DNS filter app (Debian's dnsmasq, rootfs/files/dns-filter/) on this host,
## with real parts: its x86_64 jail rootfs in fresh namespaces, a second dnsmasq as the upstream,
## busybox nslookup as the client. Needs root; fetches dnsmasq-base and its libraries once.
dns-filter-test: setup
	$(CARGO) test -p cpevisor-rootfs --test dns_filter -- --ignored

## bench: figures side by side with their peers, into target/bench.json (not part of test; ~10 min)
bench: setup
	@bash scripts/cross.sh
	@bash scripts/firmware.sh qemu-virt-a53 qemu-malta-mipsel
	@bash scripts/bench-overlay.sh
	$(CARGO) run -q --release -p cpevisor-e2e --bin cpevisor-bench

clean-firmware:
	rm -rf target/firmware target/cross
