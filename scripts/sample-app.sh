#!/usr/bin/env bash
# The sample app `status` as signed cpevisor packages (agent/PACKAGE.md), for the agent's
# end-to-end test and `make demo`.
#
#   scripts/sample-app.sh [VERSION...]   packages, default 1.0 1.1 -> target/packages/status-<v>.cpkg
#   scripts/sample-app.sh key            only make sure the signing key exists; prints its .pub path
#   scripts/sample-app.sh jail ARCH...   jail packages for boards without KVM (ARCH: armv7, mipsel,
#                                        aarch64, mips64el, x86_64), into target/packages/:
#       status-jail-<arch>-<v>.cpkg  (v = 1.0, 1.1) the same app for the jail backend: a rootfs
#                                    layer (`cpevisor-rootfs jail-app`: busybox of ARCH, /bin/status
#                                    serving /status on port 8080, token sample-status-<v> in
#                                    /etc/status/token), 16 MiB, AutoRestart on, autostart
#                                    SAMPLE_JAIL_ROOT=erofs: the root as an erofs image
#                                    (layer rootfs_erofs, made by pack from that tar) instead
#       memhog-jail-<arch>-1.0.cpkg  allocates without bound 3 s after it starts: killed by its
#                                    16 MiB memory.max, restarted 3 times (1, 2, 4 s), then Idle
#                                    with FailureWhileActive (the containment test)
#   scripts/sample-app.sh dns-filter ARCH...  the DNS filter (rootfs/files/dns-filter/README.md):
#                                    Debian's dnsmasq for ARCH with its shared libraries
#                                    (scripts/dns-filter-tree.sh), into target/packages/:
#       dns-filter-jail-<arch>-1.0.cpkg  for the jail backend, any jail ARCH: /bin/dns-filter
#                                    --port 1053, 20 MiB, AutoRestart on, autostart
#       dns-filter-kvm-aarch64-1.0.cpkg  (ARCH aarch64) also the microVM: minimal kernel, erofs
#                                    root with dnsmasq, the block list on its disk, port 53, 32 MiB
#
# Each version is the aarch64 microVM of `cpevisor-rootfs guest --app status` (kernel Image,
# root file system, ext2 disk) whose disk's data.txt holds the token `sample-status-<version>`:
# the app's /status page shows it as `data=sample-status-<version>`, so a test can tell which
# version runs. The root file system: with the minimal kernel an erofs image (layer
# `rootfs_image`: the agent attaches it read-only as the guest's first disk, one blob shared by
# every app, and adds `root=/dev/vda ro rootfstype=erofs`); with the stock kernel an initramfs
# (`initrd`: Debian's kernel has erofs as a module only).
# The signing key lives in $CPEVISOR_CACHE/keys/ (generated once with `cpevisorctl keygen`, never
# in the repository); scripts/firmware.sh puts its public half in the firmware's trusted keys.
# SAMPLE_KERNEL=minimal (default: the minimal guest kernel, built here by scripts/guest-kernel.sh
# when missing or stale, cached) or stock (Debian's arm64 kernel from `make setup`). The minimal
# kernel is the default for memory: docs/density.md.
# The app declares the memory it needs: 16 MiB on the minimal kernel (it touches ~11.6 MiB of
# them, measured in docs/density.md), 64 MiB on the stock one (its Image alone is 32 MiB).
# Same inputs, same key -> byte-identical packages.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
KEYS=$CACHE/keys
KERNEL=${SAMPLE_KERNEL:-minimal}
OUT=target/packages
BIN=${CARGO_TARGET_DIR:-target}/debug
CTL=$BIN/cpevisorctl

# The host's cpevisorctl packs and signs here; the host's cpevisor-controller (the operator's USP
# controller) is what the USP board tests and `make demo` drive the board with.
cargo build -q -p cpevisor-agent --bin cpevisorctl -p cpevisor-controller --bin cpevisor-controller

# One key for every build; the lock keeps two concurrent first runs from racing keygen.
mkdir -p "$KEYS"
(
  flock 9
  if [ ! -f "$KEYS/cpevisor-signing.key" ]; then
    "$CTL" keygen "$KEYS" >&2
  fi
) 9>"$KEYS/.lock"
for f in cpevisor-signing.key cpevisor-signing.pub; do
  [ -f "$KEYS/$f" ] || { echo "sample-app.sh: $KEYS/$f is missing (delete $KEYS and rerun)" >&2; exit 1; }
done
if [ "${1:-}" = key ]; then
  echo "$KEYS/cpevisor-signing.pub"
  exit 0
fi

# One jail package: build_jail ARCH APP VERSION MEMORY_MIB COMMAND_JSON RESTART_JSON [TOKEN]
build_jail() {
  local arch=$1 app=$2 v=$3 mem=$4 command=$5 restart=$6 token=${7:-}
  local name=$app-jail-$arch-$v
  local stage=$OUT/build/$name
  rm -rf "$stage"
  mkdir -p "$stage"
  local data=()
  if [ -n "$token" ]; then
    echo "$token" >"$stage/token.txt"
    data=(--data "$stage/token.txt")
  fi
  "$BIN/cpevisor-rootfs" jail-app --arch "$arch" --app "$app" "${data[@]}" --out "$stage/app" >&2
  # SAMPLE_JAIL_ROOT=erofs: the same tree as a read-only erofs image that pack makes from the
  # tar (layer rootfs_erofs: mounted at start, not extracted; the board's kernel needs erofs).
  local root_key=rootfs
  [ "${SAMPLE_JAIL_ROOT:-tar}" = erofs ] && root_key=rootfs_erofs
  cat >"$stage/app.json" <<EOF
{"name": "$app", "version": "$v", "vendor": "cpevisor",
 "description": "sample app for the jail backend ($app)",
 "arch": "$arch", "backends": ["jail"], "memory_mib": $mem, "vcpus": 1,
 "command": $command,
 "restart": $restart,
 "autostart": true, "run_level": 1,
 "$root_key": "app/rootfs.tar"}
EOF
  "$CTL" pack "$stage" --key "$KEYS/cpevisor-signing.key" --out "$OUT/$name.cpkg" >&2
  echo "sample-app.sh: $OUT/$name.cpkg ($(stat -c %s "$OUT/$name.cpkg") bytes)" >&2
}

if [ "${1:-}" = dns-filter ]; then
  shift
  [ $# -gt 0 ] || { echo "sample-app.sh: dns-filter ARCH...: name at least one arch" >&2; exit 2; }
  cargo build -q -p cpevisor-rootfs
  mkdir -p "$OUT"
  restart='{"enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 30,
            "retry_interval_multiplier": 2000, "max_retry_count": 0, "reset_period_s": 120}'
  description="DNS filter: Debian's dnsmasq; blocked names get 0.0.0.0 and ::; block list /data/blocklist"
  for arch in "$@"; do
    case $arch in
      aarch64 | armv7 | mipsel | mips64el | x86_64) ;;
      *) echo "sample-app.sh: dns-filter arch $arch: expected aarch64, armv7, mipsel, mips64el or x86_64" >&2; exit 2 ;;
    esac
    tree=$(bash scripts/dns-filter-tree.sh "$arch")/tree
    # 20 MiB: dnsmasq measured at 5.2 MiB RSS with the default list and 10.9 MiB with the
    # 20000-name limit (x86_64, rootfs/files/dns-filter/README.md), plus busybox's awk reading
    # the list at start; the agent adds 4 MiB for the jail's init.
    # Its network (agent/README.md): the LAN's DNS intercepted to the app (port 1053: a jail
    # cannot bind below 1024), its own connections only to DNS servers (its upstream).
    name=dns-filter-jail-$arch-1.0
    stage=$OUT/build/$name
    rm -rf "$stage" && mkdir -p "$stage"
    "$BIN/cpevisor-rootfs" jail-app --arch "$arch" --app dns-filter --tree "$tree" --out "$stage/app" >&2
    cat >"$stage/app.json" <<EOF
{"name": "dns-filter", "version": "1.0", "vendor": "cpevisor", "description": "$description",
 "arch": "$arch", "backends": ["jail"], "memory_mib": 20, "vcpus": 1,
 "command": ["/bin/dns-filter", "--port", "1053"],
 "network": {"intercept_dns": true, "dns_port": 1053,
             "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]},
                        {"destination": "0.0.0.0/0", "protocol": "tcp", "ports": [53]}]},
 "restart": $restart,
 "autostart": true, "run_level": 1,
 "rootfs": "app/rootfs.tar"}
EOF
    "$CTL" pack "$stage" --key "$KEYS/cpevisor-signing.key" --out "$OUT/$name.cpkg" >&2
    echo "sample-app.sh: $OUT/$name.cpkg ($(stat -c %s "$OUT/$name.cpkg") bytes)" >&2
    [ "$arch" = aarch64 ] || continue
    # The microVM: the minimal kernel (the sample app's default), dnsmasq on the erofs root.
    # 32 MiB: the status guest's 16 (it touches ~11.6 MiB) plus dnsmasq's 11 MiB at the limit.
    bash scripts/guest-kernel.sh aarch64
    name=dns-filter-kvm-aarch64-1.0
    stage=$OUT/build/$name
    rm -rf "$stage" && mkdir -p "$stage"
    "$BIN/cpevisor-rootfs" guest --arch aarch64 --app dns-filter --kernel minimal --root erofs \
      --tree "$tree" --out "$stage/guest" >&2
    cat >"$stage/app.json" <<EOF
{"name": "dns-filter", "version": "1.0", "vendor": "cpevisor", "description": "$description",
 "arch": "aarch64", "backends": ["kvm"], "memory_mib": 32, "vcpus": 1,
 "cmdline": "console=ttyS0 quiet panic=-1",
 "network": {"intercept_dns": true,
             "egress": [{"destination": "0.0.0.0/0", "protocol": "udp", "ports": [53]},
                        {"destination": "0.0.0.0/0", "protocol": "tcp", "ports": [53]}]},
 "restart": $restart,
 "autostart": true, "run_level": 1,
 "kernel": "guest/Image", "rootfs_image": "guest/root.erofs", "disk": "guest/disk.img"}
EOF
    "$CTL" pack "$stage" --key "$KEYS/cpevisor-signing.key" --out "$OUT/$name.cpkg" >&2
    echo "sample-app.sh: $OUT/$name.cpkg ($(stat -c %s "$OUT/$name.cpkg") bytes)" >&2
  done
  exit 0
fi

if [ "${1:-}" = jail ]; then
  shift
  [ $# -gt 0 ] || { echo "sample-app.sh: jail ARCH...: name at least one arch" >&2; exit 2; }
  cargo build -q -p cpevisor-rootfs
  mkdir -p "$OUT"
  for arch in "$@"; do
    case $arch in
      aarch64 | armv7 | mipsel | mips64el | x86_64) ;;
      *) echo "sample-app.sh: jail arch $arch: expected aarch64, armv7, mipsel, mips64el or x86_64" >&2; exit 2 ;;
    esac
    for v in 1.0 1.1; do
      build_jail "$arch" status "$v" 16 '["/bin/status", "8080"]' \
        '{"enable": true, "retry_min_wait_s": 2, "retry_max_wait_s": 30,
          "retry_interval_multiplier": 2000, "max_retry_count": 5, "reset_period_s": 120}' \
        "sample-status-$v"
    done
    # Three quick restarts (1, 2, 4 s), then Idle with FailureWhileActive: a test sees both.
    build_jail "$arch" memhog 1.0 16 '["/bin/memhog", "3"]' \
      '{"enable": true, "retry_min_wait_s": 1, "retry_max_wait_s": 4,
        "retry_interval_multiplier": 2000, "max_retry_count": 3, "reset_period_s": 120}'
  done
  exit 0
fi

case $KERNEL in
  stock) SAMPLE_MIB=64 GUEST_ROOT=initramfs ROOT_LAYER='"initrd": "guest/initramfs.cpio.gz"' ;;
  minimal) SAMPLE_MIB=16 GUEST_ROOT=erofs ROOT_LAYER='"rootfs_image": "guest/root.erofs"' ;;
  *) echo "sample-app.sh: SAMPLE_KERNEL=$KERNEL: expected stock or minimal" >&2; exit 2 ;;
esac
[ $# -gt 0 ] || set -- 1.0 1.1
cargo build -q -p cpevisor-rootfs
if [ "$KERNEL" = minimal ]; then
  bash scripts/guest-kernel.sh aarch64
fi
mkdir -p "$OUT"
for v in "$@"; do
  # The version becomes a file name and a JSON string: keep it to a plain dotted version.
  [[ $v =~ ^[0-9A-Za-z][0-9A-Za-z.+-]{0,31}$ ]] ||
    { echo "sample-app.sh: version $v: expected 1-32 of [0-9A-Za-z.+-]" >&2; exit 2; }
  stage=$OUT/build/status-$v
  rm -rf "$stage"
  mkdir -p "$stage"
  echo "sample-status-$v" >"$stage/data.txt"
  "$BIN/cpevisor-rootfs" guest --arch aarch64 --app status --kernel "$KERNEL" --root "$GUEST_ROOT" \
    --data "$stage/data.txt" --out "$stage/guest" >&2
  cat >"$stage/app.json" <<EOF
{"name": "status", "version": "$v", "vendor": "cpevisor",
 "description": "sample app: HTTP /status page showing the token on its disk",
 "arch": "aarch64", "backends": ["kvm"], "memory_mib": $SAMPLE_MIB, "vcpus": 1,
 "cmdline": "console=ttyS0 quiet panic=-1",
 "restart": {"enable": true, "retry_min_wait_s": 2, "retry_max_wait_s": 30,
             "retry_interval_multiplier": 2000, "max_retry_count": 5, "reset_period_s": 120},
 "autostart": true, "run_level": 1,
 "kernel": "guest/Image", $ROOT_LAYER, "disk": "guest/disk.img"}
EOF
  "$CTL" pack "$stage" --key "$KEYS/cpevisor-signing.key" --out "$OUT/status-$v.cpkg" >&2
  echo "sample-app.sh: $OUT/status-$v.cpkg ($(stat -c %s "$OUT/status-$v.cpkg") bytes, $KERNEL kernel)" >&2
done
