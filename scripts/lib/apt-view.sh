# shellcheck shell=bash
# Sourced by scripts/setup.sh, scripts/bench-overlay.sh and scripts/dns-filter-tree.sh: Debian
# packages for foreign architectures through the project's private apt view, and the shared
# libraries a binary from them needs. The caller sets CACHE ($CPEVISOR_CACHE) and defines log();
# a failure prints why and exits 1 (the subshell of a $(...) call: callers run with set -e).
#
#   $CACHE/apt/    the private apt view (own sources, lists, config)
#   $CACHE/debs/   downloaded .deb files, named <package>_<version>_<arch>.deb as apt names them

APT=$CACHE/apt
APT_ARCHES=(amd64 arm64 armhf mipsel mips64el)
APT_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

apt_fail() {
  log "$*"
  exit 1
}

# Adding armhf/mips to the system breaks `apt-get update` (the security suite has no such indices,
# see shared/PLATFORM.md), so foreign packages come through their own sources/lists/config, with
# the mirrors taken from this machine's own apt sources.
apt_view_ready=0
apt_view() {
  [ $apt_view_ready = 1 ] && return
  mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
  : > "$APT/status"
  python3 "$APT_LIB_DIR/../apt-sources.py" "${APT_ARCHES[@]}" > "$APT/sources.list"
  {
    echo "Dir::Etc::SourceList \"$APT/sources.list\";"
    echo "Dir::Etc::SourceParts \"/nonexistent\";"
    echo "Dir::State::Lists \"$APT/lists\";"
    echo "Dir::State::status \"$APT/status\";"
    echo "Dir::Cache \"$APT/cache\";"
    echo "APT::Architecture \"amd64\";"
    printf 'APT::Architectures { %s };\n' "$(printf '"%s"; ' "${APT_ARCHES[@]}")"
    echo 'Acquire::Languages "none";'
    # downloads land in our cache, which the _apt user cannot write
    echo 'APT::Sandbox::User "root";'
  } > "$APT/apt.conf"
  # Refresh at most daily; a fresh view is needed only when something below is missing.
  if [ -z "$(find "$APT/lists" -maxdepth 1 -name '*Packages*' -mtime -1 2>/dev/null | head -1)" ]; then
    log "updating the private apt view"
    APT_CONFIG=$APT/apt.conf apt-get update -q >&2
  fi
  apt_view_ready=1
}
apt_in_view() { APT_CONFIG=$APT/apt.conf "$@"; }

# The .deb file name in debs/ for NAME VERSION ARCH (an epoch's colon is %3a, as apt writes it).
deb_file() { echo "$CACHE/debs/${1}_${2//:/%3a}_${3}.deb"; }

# download PKG:ARCH[=VER] into debs/ unless already there (apt verifies it against the signed
# index); prints the file's path
download() {
  local spec=$1 name=${1%%=*}
  local pkg=${name%%:*} arch=${name##*:} ver
  ver=$(apt_in_view apt-cache show --no-all-versions "$spec" | awk '/^Version:/ {print $2; exit}')
  [ -n "$ver" ] || apt_fail "no package $spec in the apt view"
  local file
  file=$(deb_file "$pkg" "$ver" "$arch")
  mkdir -p "$CACHE/debs"
  [ -s "$file" ] || (cd "$CACHE/debs" && apt_in_view apt-get download -q "$pkg:$arch=$ver" >&2)
  [ -s "$file" ] || apt_fail "download of $spec did not produce $file"
  echo "$file"
}

# unpack_with_libs PKG ARCH DIR MAX_PACKAGES: PKG for ARCH and the library packages it depends on
# (breadth-first over Depends, only lib* and zlib1g: the rest hold no shared objects a binary
# loads), unpacked together into DIR/root; DIR/version holds PKG's version and DIR/packages the
# name=version of each. Skipped when DIR/version already names PKG's version in the view. More
# than MAX_PACKAGES packages fails loudly (a dependency loop or a changed package set) instead of
# filling the disk. Each apt-cache call re-reads the view's indices (seconds each on this
# machine), so the walk asks about a whole level per call.
unpack_with_libs() {
  local pkg=$1 arch=$2 dir=$3 max=$4 ver
  ver=$(apt_in_view apt-cache show --no-all-versions "$pkg:$arch" | awk '/^Version:/ {print $2; exit}')
  [ -n "$ver" ] || apt_fail "no $pkg:$arch in the apt view (run make setup)"
  [ "$(cat "$dir/version" 2>/dev/null)" != "$ver" ] || return 0
  log "$pkg:$arch $ver and its library packages"
  local level=("$pkg") all=()
  while [ ${#level[@]} -gt 0 ]; do
    all+=("${level[@]}")
    [ ${#all[@]} -le "$max" ] || apt_fail "more than $max packages: dependency walk runaway"
    mapfile -t level < <(apt_in_view apt-cache depends --no-recommends --no-suggests --no-conflicts \
      --no-breaks --no-replaces --no-enhances "${level[@]/%/:$arch}" |
      awk '$1 == "Depends:" && $2 !~ /^</ {sub(/:.*/, "", $2); print $2}' |
      grep -E '^(lib|zlib1g$)' | sort -u | grep -vxF -f <(printf '%s\n' "${all[@]}") || true)
  done
  # Name and version of each, from the signed index; apt-get fetches those not yet in debs/.
  mkdir -p "$CACHE/debs"
  local specs
  mapfile -t specs < <(apt_in_view apt-cache show --no-all-versions "${all[@]/%/:$arch}" |
    awk '/^Package:/ {p = $2} /^Version:/ {print p "=" $2}')
  [ ${#specs[@]} -eq ${#all[@]} ] || apt_fail "apt-cache knows ${#specs[@]} of the ${#all[@]} packages: ${all[*]}"
  local want=() debs=() s f
  for s in "${specs[@]}"; do
    f=$(deb_file "${s%%=*}" "${s#*=}" "$arch")
    debs+=("$f")
    [ -s "$f" ] || want+=("${s%%=*}:$arch=${s#*=}")
  done
  if [ ${#want[@]} -gt 0 ]; then
    (cd "$CACHE/debs" && apt_in_view apt-get download -q "${want[@]}" >&2)
  fi
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp/root"
  for f in "${debs[@]}"; do
    [ -s "$f" ] || apt_fail "download did not produce $f"
    dpkg-deb -x "$f" "$dir.tmp/root"
  done
  log "${#debs[@]} packages unpacked"
  printf '%s\n' "${specs[@]}" > "$dir.tmp/packages"
  echo "$ver" > "$dir.tmp/version"
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
}

# copy_with_libs SRC BIN STAGE MAX_LIBS LIBDIR...: copies SRC/BIN to STAGE/BIN, then follows ELF
# NEEDED (readelf -d) from it, copying each shared object from the first of SRC/LIBDIR... that
# holds it to the same place under STAGE (symlinks resolved: a plain file), and the program
# interpreter (PT_INTERP, not named by NEEDED) to its absolute path. Sets COPIED_LIBS to the
# number of shared objects copied; more than MAX_LIBS fails.
copy_with_libs() {
  local src=$1 bin=$2 stage=$3 max=$4
  shift 4
  local libdirs=("$@")
  resolve_lib() {
    local d
    for d in "${libdirs[@]}"; do
      if [ -e "$src/$d/$1" ]; then echo "$d/$1"; return; fi
    done
    return 1
  }
  mkdir -p "$stage/$(dirname "$bin")"
  cp "$src/$bin" "$stage/$bin"
  local pending=("$bin") copied=" " f soname rel
  COPIED_LIBS=0
  while [ ${#pending[@]} -gt 0 ]; do
    f=${pending[0]} pending=("${pending[@]:1}")
    while read -r soname; do
      [[ $copied == *" $soname "* ]] && continue
      rel=$(resolve_lib "$soname") || apt_fail "library $soname (needed by $f) is in none of the unpacked packages"
      mkdir -p "$stage/$(dirname "$rel")"
      cp -L "$src/$rel" "$stage/$rel"
      copied="$copied$soname "
      pending+=("$rel")
      COPIED_LIBS=$((COPIED_LIBS + 1))
      [ $COPIED_LIBS -le "$max" ] || apt_fail "more than $max libraries in the closure"
    done < <(readelf -d "$src/$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done
  local interp
  interp=$(readelf -l "$src/$bin" | sed -n 's/.*Requesting program interpreter: \(.*\)\]/\1/p')
  [ -n "$interp" ] || apt_fail "$bin has no program interpreter"
  if [ ! -e "$stage$interp" ]; then
    rel=$(resolve_lib "$(basename "$interp")") || apt_fail "interpreter $interp not unpacked"
    mkdir -p "$stage$(dirname "$interp")"
    cp -L "$src/$rel" "$stage$interp"
    COPIED_LIBS=$((COPIED_LIBS + 1))
  fi
}
