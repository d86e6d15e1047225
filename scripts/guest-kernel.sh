#!/usr/bin/env bash
# Builds the minimal guest kernel for cpevisor-vmm microVMs from Debian's linux-source-6.1:
# tinyconfig + rootfs/kernel/common.config + rootfs/kernel/<arch>.config, everything built in.
#
#   scripts/guest-kernel.sh aarch64|x86_64 ...
#
# Results, in ${CPEVISOR_CACHE:-~/.cache/cpevisor}/guest-kernel/<arch>/:
#   aarch64: Image            x86_64: vmlinux, bzImage
#   config (the final .config), KEY (hash of source package version + fragments + this script +
#   compiler), build.log, build-seconds
# A matching KEY skips the build, so a second run takes well under a second. The unpacked source
# (src/<version>/) and the object trees (build/<arch>/) stay in the cache: a fragment change
# rebuilds only what it touches.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SELF=$ROOT/scripts/guest-kernel.sh
FRAGMENTS=$ROOT/rootfs/kernel
CACHE=${CPEVISOR_CACHE:-$HOME/.cache/cpevisor}
BASE=$CACHE/guest-kernel
SRC_PKG=linux-source-6.1
SRC_TAR=/usr/src/linux-source-6.1.tar.xz
JOBS=${GUEST_KERNEL_JOBS:-$(nproc)}

log() { printf 'guest-kernel: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ $# -gt 0 ] || { echo "usage: guest-kernel.sh aarch64|x86_64 ..." >&2; exit 2; }

src_ver=$(dpkg-query -W -f '${Version}' "$SRC_PKG" 2>/dev/null) ||
  die "$SRC_PKG is not installed (run make setup)"
[ -r "$SRC_TAR" ] || die "$SRC_TAR missing (reinstall $SRC_PKG)"
for tool in flex bison bc make gcc; do
  command -v "$tool" >/dev/null || die "$tool not found (run make setup)"
done

mkdir -p "$BASE"
# One build at a time per cache: parallel make targets or test runs wait here instead of
# unpacking or building into the same directories.
exec 9>"$BASE/.lock"
flock 9

# The unpacked tree, once per source package version. Documentation is left out (only its
# top-level Kconfig is read). Other architectures stay: Kconfig files source theirs.
unpack_source() {
  local dir=$BASE/src/$src_ver
  if [ ! -f "$dir/.unpacked" ]; then
    log "unpacking $SRC_PKG $src_ver"
    rm -rf "$BASE/src" && mkdir -p "$dir.tmp"
    (
      tar -xJf "$SRC_TAR" -C "$dir.tmp" --strip-components=1 \
        --exclude='linux-source-6.1/Documentation/*/*'
    ) || die "unpacking $SRC_TAR failed"
    touch "$dir.tmp/.unpacked"
    mv "$dir.tmp" "$dir"
  fi
  SRC=$dir
}

# Every option a fragment names must have its value in the final config: merge_config.sh only
# warns when Kconfig drops an option whose dependencies are unmet, and the guest would then
# boot without it. Prints the offending options and fails.
verify_config() {
  local config=$1 bad=() line opt
  shift
  for frag in "$@"; do
    while IFS= read -r line; do
      case $line in
        CONFIG_*=*)
          grep -qxF -- "$line" "$config" || bad+=("$line (got: $(grep -E "^(# )?${line%%=*}[= ]" "$config" || echo absent))")
          ;;
        "# CONFIG_"*" is not set")
          opt=${line#\# }
          opt=${opt%% *}
          ! grep -q "^$opt=" "$config" || bad+=("$opt not set (got: $(grep "^$opt=" "$config"))")
          ;;
      esac
    done <"$frag"
  done
  if [ ${#bad[@]} -gt 0 ]; then
    log "error: options from the fragments did not make it into $config (unmet dependencies?):"
    printf '  %s\n' "${bad[@]}" >&2
    return 1
  fi
}

build_arch() {
  local arch=$1 karch cross targets images
  case $arch in
    aarch64) karch=arm64 targets=(Image) images=(arch/arm64/boot/Image) ;;
    x86_64) karch=x86 targets=(vmlinux bzImage) images=(vmlinux arch/x86/boot/bzImage) ;;
    *) die "unknown architecture '$arch' (expected aarch64 or x86_64)" ;;
  esac
  if [ "$(uname -m)" = "$arch" ]; then
    cross=
  else
    cross=$arch-linux-gnu-
    command -v "${cross}gcc" >/dev/null || die "${cross}gcc not found (run make setup)"
  fi

  # tinyconfig's own fragments, then ours (later ones win)
  local frags=(kernel/configs/tiny-base.config kernel/configs/tiny.config)
  [ $karch = x86 ] && frags+=(arch/x86/configs/tiny.config)
  local ours=("$FRAGMENTS/common.config" "$FRAGMENTS/$arch.config")
  for f in "${ours[@]}"; do [ -r "$f" ] || die "fragment $f missing"; done

  local out=$BASE/$arch key
  key=$({
    echo "$SRC_PKG $src_ver $arch"
    cat "${ours[@]}" "$SELF"
    "${cross}gcc" --version | head -1
  } | sha256sum | cut -d' ' -f1)
  local have=1
  for f in "${targets[@]}"; do [ -s "$out/$f" ] || have=0; done
  if [ $have = 1 ] && [ "$(cat "$out/KEY" 2>/dev/null)" = "$key" ]; then
    log "$arch: up to date ($out)"
    return
  fi

  unpack_source
  local obj=$BASE/build/$arch
  # An object tree from another source version would mix old objects in.
  [ "$(cat "$obj/.source-version" 2>/dev/null)" = "$src_ver" ] || rm -rf "$obj"
  mkdir -p "$obj" "$out"
  echo "$src_ver" >"$obj/.source-version"

  local blog=$out/build.log start end
  start=$(date +%s)
  log "$arch: configuring (tinyconfig + ${ours[*]##*/})"
  export ARCH=$karch CROSS_COMPILE=$cross
  # Reproducible version string: no host name, user or build time in the image.
  export KBUILD_BUILD_USER=cpevisor KBUILD_BUILD_HOST=cpevisor
  export KBUILD_BUILD_TIMESTAMP="@$(stat -c %Y "$SRC_TAR")"
  # merge_config.sh -n: allnoconfig with the merged fragments as KCONFIG_ALLCONFIG, so options
  # our fragments make visible default to off instead of to their Kconfig default.
  if ! (cd "$SRC" && bash scripts/kconfig/merge_config.sh -n -O "$obj" "${frags[@]}" "${ours[@]}") \
    >"$blog" 2>&1; then
    tail -n 30 "$blog" >&2
    die "$arch: configuration failed (log: $blog)"
  fi
  verify_config "$obj/.config" "${ours[@]}" || die "$arch: fix the fragment (log: $blog)"

  log "$arch: building ${targets[*]} with $JOBS jobs (log: $blog)"
  if ! make -C "$SRC" O="$obj" -j"$JOBS" "${targets[@]}" >>"$blog" 2>&1; then
    tail -n 40 "$blog" >&2
    die "$arch: kernel build failed (log: $blog)"
  fi
  end=$(date +%s)

  # Replace the results only once everything is built; KEY last, so an interrupted copy rebuilds.
  rm -f "$out/KEY"
  local i
  for i in "${!targets[@]}"; do
    cp "$obj/${images[$i]}" "$out/${targets[$i]}.tmp"
    mv "$out/${targets[$i]}.tmp" "$out/${targets[$i]}"
  done
  cp "$obj/.config" "$out/config"
  echo $((end - start)) >"$out/build-seconds"
  echo "$key" >"$out/KEY"
  for f in "${targets[@]}"; do
    log "$arch: $out/$f $(stat -c %s "$out/$f") bytes"
  done
  log "$arch: built in $((end - start)) s"
}

for arch in "$@"; do
  build_arch "$arch"
done
