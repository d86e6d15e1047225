#!/bin/sh
# Runs INSIDE the qemu-virt-a53 board (busybox sh), from the bench overlay as /bench/board.sh:
#   sh /bench/board.sh vmm|vmm-confined|qemu RUNS
# boots the same 64 MiB guest (/bench/Image + /bench/guest.cpio.gz, 1 vCPU) RUNS times under
# cpevisor-vmm, cpevisor-vmm jailed as the agent starts it (`"jail"` in its VM description:
# own namespaces and empty root, unprivileged uid, no capabilities, seccomp) or
# qemu-system-aarch64 -accel kvm and prints one line per run:
#   BENCH-RESULT monitor=M run=N rc=.. first_entry_us=.. ready_us=.. rss_kib=.. pss_kib=..
#                guest_rss_kib=.. guest_pss_kib=.. [self_first_ms=.. self_ready_ms=..]
# or `BENCH-ERROR monitor=M run=N reason=...`.
#
# Method, identical for both monitors, all on the board's clock (tracefs, trace_clock mono, us):
#   start         sched_process_exec of the monitor binary (the process start, before ld.so runs)
#   first_entry   the first kvm:kvm_entry event (a vCPU entering the guest) after that
#   ready         a watcher reading the monitor's console pipe writes trace_marker when the guest's
#                 BENCH-MARKER line arrives
# kvm_entry goes to its own trace instance with overwrite off and a small buffer, so the first
# entries stay and the millions that follow are dropped without crowding out the markers.
# Memory: /proc/PID/smaps while the guest idles after its marker; the guest RAM mapping is the
# anonymous rw-p mapping of exactly the guest size (QEMU), or, where cpevisor-vmm mapped the
# kernel image copy-on-write from its file over part of it, the run of adjacent rw-p mappings
# (anonymous, or private file mappings: the kernel) around that file mapping that adds up to
# exactly the guest size (the one with most Rss if several).
set -u
MONITOR=${1:-}
RUNS=${2:-3}
GUEST_MIB=64
CMDLINE="quiet panic=-1 cma=0"
READY_TIMEOUT_S=120
T=/sys/kernel/tracing
I=$T/instances/bench-entry
W=/tmp/bench

case $MONITOR in
vmm)
    BIN=/usr/bin/cpevisor-vmm
    # --shutdown-timeout 0: SIGTERM stops at once, as QEMU does (this bench guest has no power
    # button driver; the graceful stop is timed separately, tests/src/bench/graceful.rs).
    set -- "$BIN" --kernel /bench/Image --initrd /bench/guest.cpio.gz --memory $GUEST_MIB \
        --vcpus 1 --console stdout --cmdline "console=ttyS0 $CMDLINE bench_signal=devmem" \
        --shutdown-timeout 0
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
        -nodefaults -display none -serial stdio -no-reboot \
        -kernel /bench/Image -initrd /bench/guest.cpio.gz -append "console=ttyAMA0 $CMDLINE"
    export LD_LIBRARY_PATH=/lib/aarch64-linux-gnu:/usr/lib/aarch64-linux-gnu
    ;;
*)
    echo "usage: board.sh vmm|vmm-confined|qemu RUNS" >&2
    exit 2
    ;;
esac
case $RUNS in '' | *[!0-9]*) echo "board.sh: RUNS must be a number, got '$RUNS'" >&2; exit 2 ;; esac
[ -x "$BIN" ] || { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=$BIN-missing"; exit 1; }
[ -e /dev/kvm ] || { echo "BENCH-ERROR monitor=$MONITOR run=0 reason=no-/dev/kvm"; exit 1; }

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
            case $line in *BENCH-MARKER*)
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
    # Let the guest settle into its idle loop before reading memory.
    sleep 1
    mem=$(awk -v want=$((GUEST_MIB * 1024)) '
        function piece(j) { return kind[j] == "a" || kind[j] == "f" }
        function take(lo, hi,   j, r, p) {
            r = 0; p = 0
            for (j = lo; j <= hi; j++) { r += rss[j]; p += pss[j] }
            if (!found || r >= grss) { grss = r; gpss = p; found = 1 }
        }
        /^[0-9a-f]+-[0-9a-f]+ / {
            n++; split($1, r, "-"); st[n] = r[1]; en[n] = r[2]
            kind[n] = "x"; if ($2 == "rw-p") kind[n] = ($5 == "0") ? "a" : "f"
            next
        }
        /^Size:/ { sz[n] = $2; next }
        /^Rss:/ { rss[n] = $2; trss += $2; next }
        /^Pss:/ { pss[n] = $2; tpss += $2; next }
        END {
            for (i = 1; i <= n; i++) {
                if (kind[i] == "a" && sz[i] == want) take(i, i)
                if (kind[i] != "f") continue
                lo = i; hi = i; tot = sz[i]
                while (hi < n && en[hi] == st[hi + 1] && piece(hi + 1) && tot + sz[hi + 1] <= want) { hi++; tot += sz[hi] }
                while (lo > 1 && st[lo] == en[lo - 1] && piece(lo - 1) && tot + sz[lo - 1] <= want) { lo--; tot += sz[lo] }
                if (tot == want) take(lo, hi)
            }
            printf "rss_kib=%d pss_kib=%d guest_rss_kib=%d guest_pss_kib=%d guest_found=%d", trss, tpss, grss, gpss, found
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
    echo "BENCH-RESULT monitor=$MONITOR run=$n rc=$(cat $W/rc 2>/dev/null) $times $mem $self"
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
