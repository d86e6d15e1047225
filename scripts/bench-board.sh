#!/bin/sh
# Runs INSIDE the qemu-virt-a53 board (busybox sh), from the bench overlay as /bench/board.sh:
#   sh /bench/board.sh vmm|vmm-confined|qemu RUNS [stock|app]
# boots one guest RUNS times under cpevisor-vmm, cpevisor-vmm jailed as the agent starts it
# (`"jail"` in its VM description: own namespaces and empty root, unprivileged uid, no
# capabilities, seccomp; stock guest only) or qemu-system-aarch64 -accel kvm, 1 vCPU, and prints
# one line per run:
#   BENCH-RESULT monitor=M run=N rc=.. first_entry_us=.. ready_us=.. rss_kib=.. pss_kib=..
#                guest_rss_kib=.. guest_pss_kib=.. guest_huge_kib=.. [self_first_ms=.. self_ready_ms=..]
#                [guest_uptime_s=..]
# or `BENCH-ERROR monitor=M run=N reason=...`. The guests:
#   stock (default)  64 MiB: /bench/Image (Debian's arm64 kernel) + /bench/guest.cpio.gz
#                    (busybox, scripts/bench-guest-init.sh); ready: its BENCH-MARKER line
#   app              16 MiB: the sample app `status` as its package carries it (/bench/app/:
#                    the minimal guest kernel's Image, root.erofs as the read-only first disk,
#                    the ext2 disk.img, copied afresh for each run, as the second), with the
#                    devices and command line the agent gives it (virtio-net on a tap,
#                    virtio-rng, virtio-balloon with free page reporting and deflate on OOM,
#                    `ip=`, `root=/dev/vda ro rootfstype=erofs`); ready: its APP-READY line
#                    (HTTP is up). QEMU gets the same devices as virtio-mmio (virt machine).
#                    The consoles differ: ttyS0 (16550) for cpevisor-vmm, ttyAMA0 (PL011) for
#                    QEMU's virt machine.
#
# Method, identical for both monitors, all on the board's clock (tracefs, trace_clock mono, us):
#   start         sched_process_exec of the monitor binary (the process start, before ld.so runs)
#   first_entry   the first kvm:kvm_entry event (a vCPU entering the guest) after that
#   ready         a watcher reading the monitor's console pipe writes trace_marker when the guest's
#                 marker line arrives
# kvm_entry goes to its own trace instance with overwrite off and a small buffer, so the first
# entries stay and the millions that follow are dropped without crowding out the markers.
# Memory: /proc/PID/smaps while the guest idles, 5 s after its marker; the guest RAM mapping is the
# anonymous rw-p mapping of exactly the guest size (QEMU), or, where cpevisor-vmm mapped the
# kernel image copy-on-write from its file over part of it, the run of adjacent rw-p mappings
# (anonymous, or private file mappings: the kernel) around that file mapping that adds up to
# exactly the guest size (the one with most Rss if several).
set -u
MONITOR=${1:-}
RUNS=${2:-3}
GUEST=${3:-stock}
READY_TIMEOUT_S=120
SETTLE_S=5
T=/sys/kernel/tracing
I=$T/instances/bench-entry
W=/tmp/bench

# The tap both monitors' app guests get (the agent's guests have one): created here because
# cpevisor-vmm attaches to an existing tap only; its host side stays down, nothing is sent.
TAP=bench0
# The addresses the agent's first app link gets (agent/src/supervise/net.rs).
APP_NET="ip=10.100.0.6::10.100.0.5:255.255.255.252::eth0:off cpevisor.ip=10.100.0.6/30 cpevisor.gw=10.100.0.5"
DISK_SRC=
DISK=/tmp/bench-app-disk.img
case $GUEST in
stock)
    GUEST_MIB=64
    MARKER=BENCH-MARKER
    CMDLINE="quiet panic=-1 cma=0"
    ;;
app)
    GUEST_MIB=16
    MARKER=APP-READY
    # As the agent writes it: the package's words, its network's, then the root image's.
    CMDLINE="quiet panic=-1 $APP_NET root=/dev/vda ro rootfstype=erofs"
    DISK_SRC=/bench/app/disk.img
    [ "$MONITOR" != vmm-confined ] || { echo "board.sh: vmm-confined runs the stock guest only" >&2; exit 2; }
    ;;
*)
    echo "board.sh: guest must be stock or app, got '$GUEST'" >&2
    exit 2
    ;;
esac

case $MONITOR in
vmm)
    BIN=/usr/bin/cpevisor-vmm
    if [ "$GUEST" = app ]; then
        set -- "$BIN" --kernel /bench/app/Image --disk /bench/app/root.erofs,ro --disk $DISK \
            --net $TAP --rng --balloon --memory $GUEST_MIB --vcpus 1 --console stdout \
            --cmdline "console=ttyS0 $CMDLINE" --shutdown-timeout 0
    else
    # --shutdown-timeout 0: SIGTERM stops at once, as QEMU does (this bench guest has no power
    # button driver; the graceful stop is timed separately, tests/src/bench/graceful.rs).
    set -- "$BIN" --kernel /bench/Image --initrd /bench/guest.cpio.gz --memory $GUEST_MIB \
        --vcpus 1 --console stdout --cmdline "console=ttyS0 $CMDLINE bench_signal=devmem" \
        --shutdown-timeout 0
    fi
    ;;
vmm-confined)
    BIN=/usr/bin/cpevisor-vmm
    CFG=/tmp/bench-vmm-confined.json
    printf '{"kernel": "/bench/Image", "initrd": "/bench/guest.cpio.gz", "memory_mib": %s, "vcpus": 1, "console": "stdout", "cmdline": "console=ttyS0 %s bench_signal=devmem", "shutdown_timeout_ms": 0, "jail": {"uid": 100999, "gid": 100999}}\n' \
        "$GUEST_MIB" "$CMDLINE" >$CFG
    set -- "$BIN" --config $CFG
    ;;
qemu)
    BIN=/usr/bin/qemu-system-aarch64
    # The board's GIC is a GICv3 (gic-version=3): the nested virt machine must ask for the host's.
    set -- "$BIN" -M virt,gic-version=host -cpu host -accel kvm -m $GUEST_MIB -smp 1 \
        -nodefaults -display none -serial stdio -no-reboot
    if [ "$GUEST" = app ]; then
        # virt's virtio-mmio transports: Linux finds the one the last -device took first, so the
        # disks are named in reverse for the root image to be /dev/vda, as under cpevisor-vmm.
        set -- "$@" -kernel /bench/app/Image -append "console=ttyAMA0 $CMDLINE" \
            -drive if=none,id=data,file=$DISK,format=raw -device virtio-blk-device,drive=data \
            -drive if=none,id=root,file=/bench/app/root.erofs,format=raw,readonly=on \
            -device virtio-blk-device,drive=root \
            -netdev tap,id=net0,ifname=$TAP,script=no,downscript=no \
            -device virtio-net-device,netdev=net0 -device virtio-rng-device \
            -device virtio-balloon-device,free-page-reporting=on,deflate-on-oom=on
    else
        set -- "$@" -kernel /bench/Image -initrd /bench/guest.cpio.gz -append "console=ttyAMA0 $CMDLINE"
    fi
    export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu
    ;;
*)
    echo "usage: board.sh vmm|vmm-confined|qemu RUNS [stock|app]" >&2
    exit 2
    ;;
esac
case $RUNS in '' | *[!0-9]*) echo "board.sh: RUNS must be a number, got '$RUNS'" >&2; exit 2 ;; esac
[ -x "$BIN" ] || { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=$BIN-missing"; exit 1; }
[ -e /dev/kvm ] || { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=no-/dev/kvm"; exit 1; }
if [ "$GUEST" = app ]; then
    for f in /bench/app/Image /bench/app/root.erofs $DISK_SRC; do
        [ -f $f ] || { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=$f-missing"; exit 1; }
    done
    [ -e /sys/class/net/$TAP ] || busybox tunctl -t $TAP >/dev/null ||
        { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=no-tap"; exit 1; }
fi

[ -e $T/trace ] || mount -t tracefs nodev $T || { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=no-tracefs"; exit 1; }
[ -d $I ] || mkdir $I
echo mono >$T/trace_clock && echo mono >$I/trace_clock
echo 0 >$I/options/overwrite
echo 64 >$I/buffer_size_kb
echo 1 >$I/events/kvm/kvm_entry/enable || { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=no-kvm_entry-event"; exit 1; }
echo 1 >$T/events/sched/sched_process_exec/enable
mkdir -p $W

# run_once N MONITOR-ARGV...
run_once() {
    n=$1
    shift
    rm -f $W/*
    [ -z "$DISK_SRC" ] || cp $DISK_SRC $DISK
    echo 0 >$T/tracing_on
    echo 0 >$I/tracing_on
    : >$T/trace
    : >$I/trace
    echo 1 >$I/tracing_on
    echo 1 >$T/tracing_on
    # sh -c records its own pid and execs the monitor (same pid); the outer subshell keeps the exit
    # status. The watcher copies the console and marks the moment the guest's line arrives.
    (
        sh -c 'echo $$ >'$W'/pid; exec "$@"' monitor "$@" </dev/null 2>$W/stderr
        echo $? >$W/rc
    ) | (
        while IFS= read -r line; do
            printf '%s\n' "$line" >>$W/console
            case $line in *"$MARKER"*)
                echo bench-ready >$T/trace_marker
                : >$W/ready
                break
                ;;
            esac
        done
        cat >>$W/console
    ) &
    i=0
    while [ ! -e $W/ready ] && [ ! -e $W/rc ] && [ $i -lt $((READY_TIMEOUT_S * 20)) ]; do
        usleep 50000
        i=$((i + 1))
    done
    pid=$(cat $W/pid 2>/dev/null)
    if [ ! -e $W/ready ]; then
        [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null
        wait
        echo "BENCH-ERROR monitor=$MONITOR run=$n reason=no-marker rc=$(cat $W/rc 2>/dev/null)"
        tail -n 5 $W/stderr $W/console 2>/dev/null
        return 1
    fi
    # Let the guest settle into its idle loop before reading memory: 5 s, so that what the app
    # guest freed while booting (init sections, its boot's page cache) has been reported by free
    # page reporting (about 2 s after the free) and given back, as it is for an app that runs on.
    sleep $SETTLE_S
    mem=$(awk -v want=$((GUEST_MIB * 1024)) '
        function piece(j) { return kind[j] == "a" || kind[j] == "f" }
        function take(lo, hi,   j, r, p, h) {
            r = 0; p = 0; h = 0
            for (j = lo; j <= hi; j++) { r += rss[j]; p += pss[j]; h += huge[j] }
            if (!found || r >= grss) { grss = r; gpss = p; ghuge = h; found = 1 }
        }
        /^[0-9a-f]+-[0-9a-f]+ / {
            n++; split($1, r, "-"); st[n] = r[1]; en[n] = r[2]
            kind[n] = "x"; if ($2 == "rw-p") kind[n] = ($5 == "0") ? "a" : "f"
            next
        }
        /^Size:/ { sz[n] = $2; next }
        /^Rss:/ { rss[n] = $2; trss += $2; next }
        /^Pss:/ { pss[n] = $2; tpss += $2; next }
        /^AnonHugePages:/ { huge[n] = $2; next }
        END {
            for (i = 1; i <= n; i++) {
                if (kind[i] == "a" && sz[i] == want) take(i, i)
                if (kind[i] != "f") continue
                lo = i; hi = i; tot = sz[i]
                while (hi < n && en[hi] == st[hi + 1] && piece(hi + 1) && tot + sz[hi + 1] <= want) { hi++; tot += sz[hi] }
                while (lo > 1 && st[lo] == en[lo - 1] && piece(lo - 1) && tot + sz[lo - 1] <= want) { lo--; tot += sz[lo] }
                if (tot == want) take(lo, hi)
            }
            printf "rss_kib=%d pss_kib=%d guest_rss_kib=%d guest_pss_kib=%d guest_huge_kib=%d guest_found=%d", trss, tpss, grss, gpss, ghuge, found
        }
    ' /proc/$pid/smaps)
    # Both monitors exit 0 on SIGTERM; one that does not within 10 s is killed (and its rc shows it).
    kill -TERM "$pid"
    i=0
    while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
        usleep 100000
        i=$((i + 1))
    done
    kill -KILL "$pid" 2>/dev/null
    wait
    echo 0 >$T/tracing_on
    echo 0 >$I/tracing_on
    # The exec event of this pid, the first vCPU entry, the watcher's marker: us since exec.
    times=$( (cat $T/trace; echo "@@ENTRIES@@"; cat $I/trace) | awk -v pid="$pid" -v bin="$BIN" '
        function ts(   i) { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+\.[0-9]+:$/) return substr($i, 1, length($i) - 1) + 0; return -1 }
        /^@@ENTRIES@@/ { entries = 1; next }
        /^#/ { next }
        !entries && /sched_process_exec:/ && index($0, "filename=" bin " pid=" pid " ") { start = ts(); next }
        !entries && /tracing_mark_write: bench-ready/ { ready = ts(); next }
        entries && /kvm_entry:/ { t = ts(); if (t >= 0 && (entry == 0 || t < entry)) entry = t }
        END {
            if (start == 0) { print "error=no-exec-event"; exit }
            printf "first_entry_us=%d ready_us=%d", (entry ? (entry - start) * 1e6 : -1), (ready ? (ready - start) * 1e6 : -1)
        }')
    self=$(sed -n 's/.*first instruction: .* at \([0-9.]*\) ms.*/self_first_ms=\1/p; s/^boot-ready: \([0-9.]*\) ms since VMM start.*/self_ready_ms=\1/p' $W/stderr | tr '\n' ' ')
    # The guest's own clock at its ready line (the app's APP-READY says `uptime=<s>`): how much of
    # the start is the guest's boot, whatever the monitor did before its first instruction.
    up=$(grep -m1 "$MARKER" $W/console | sed -n 's/.* uptime=\([0-9.]*\).*/guest_uptime_s=\1/p')
    echo "BENCH-RESULT monitor=$MONITOR run=$n rc=$(cat $W/rc 2>/dev/null) $times $mem $self $up"
}

n=1
status=0
while [ $n -le "$RUNS" ]; do
    run_once $n "$@" || status=1
    n=$((n + 1))
done
echo 0 >$I/events/kvm/kvm_entry/enable
echo 0 >$T/events/sched/sched_process_exec/enable
exit $status
