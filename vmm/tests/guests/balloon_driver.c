/* A freestanding x86_64 guest for kvm_balloon.rs (raw-x86-64: long mode at 0x100000, the first
 * 4 GiB identity-mapped, no interrupt controller). It drives the first virtio-mmio device as a
 * balloon driver would, by polling, and takes one-letter commands on COM1:
 *   a  touch every page of the 32 MiB at ALLOC (writes), then print "PEAK"
 *   f  free it: report it on the free page reporting queue (8 ranges of 4 MiB, as Linux's
 *      page reporting sends blocks), then print "FREED" and whether the guest now reads zeros
 *   i  free it through the inflate queue instead (PFN lists of 256, as Linux sends)
 * Without a balloon at the first slot it prints "NODEV" and frees nothing on the host side. */

typedef unsigned long u64;
typedef unsigned int u32;
typedef unsigned short u16;
typedef unsigned char u8;

#define MMIO 0xd0000000UL
#define ALLOC 0x1000000UL
#define ALLOC_LEN (32UL << 20)
#define QSIZE 32
#define QBASE(q) (0x300000UL + (u64)(q) * 0x10000UL)
#define PFN_LIST 0x400000UL

__asm__(".section .text.entry,\"ax\"\n"
        ".globl _start\n"
        "_start:\n"
        "  mov $0x200000, %rsp\n"
        "  call guest_main\n"
        "1: hlt\n"
        "  jmp 1b\n"
        ".previous\n");

static inline void outb(u16 port, u8 v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }
static inline u8 inb(u16 port) {
    u8 v;
    __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
    return v;
}
static void say(const char *s) {
    while (*s)
        outb(0x3f8, (u8)*s++);
}
static char getc_serial(void) {
    while (!(inb(0x3fd) & 1))
        ;
    return (char)inb(0x3f8);
}
static void w32(u64 off, u32 v) { *(volatile u32 *)(MMIO + off) = v; }
static u32 r32(u64 off) { return *(volatile u32 *)(MMIO + off); }

struct desc {
    u64 addr;
    u32 len;
    u16 flags;
    u16 next;
};

static u16 avail_idx[3];

static void setup_queue(int q) {
    w32(0x30, (u32)q);
    w32(0x38, QSIZE);
    w32(0x80, (u32)QBASE(q));
    w32(0x84, 0);
    w32(0x90, (u32)(QBASE(q) + 0x1000));
    w32(0x94, 0);
    w32(0xa0, (u32)(QBASE(q) + 0x2000));
    w32(0xa4, 0);
    w32(0x44, 1);
}

/* Publishes the chain at descriptor 0 of queue q, notifies, waits for the device to use it
 * (the notify exit is served before the write returns, so this does not spin for long). */
static void submit(int q) {
    volatile u16 *avail = (volatile u16 *)(QBASE(q) + 0x1000);
    volatile u16 *used = (volatile u16 *)(QBASE(q) + 0x2000);
    avail[2 + avail_idx[q] % QSIZE] = 0;
    __asm__ volatile("mfence" ::: "memory");
    avail_idx[q]++;
    avail[1] = avail_idx[q];
    __asm__ volatile("mfence" ::: "memory");
    w32(0x50, (u32)q);
    while (used[1] != avail_idx[q])
        ;
}

static void report(void) {
    volatile struct desc *d = (volatile struct desc *)QBASE(2);
    for (int i = 0; i < 8; i++) {
        d[i].addr = ALLOC + (u64)i * (4UL << 20);
        d[i].len = 4U << 20;
        d[i].flags = 2 /* WRITE */ | (i < 7 ? 1 /* NEXT */ : 0);
        d[i].next = (u16)(i + 1);
    }
    submit(2);
}

static void inflate(void) {
    volatile struct desc *d = (volatile struct desc *)QBASE(0);
    volatile u32 *pfns = (volatile u32 *)PFN_LIST;
    for (u64 first = ALLOC >> 12; first < (ALLOC + ALLOC_LEN) >> 12; first += 256) {
        for (u32 i = 0; i < 256; i++)
            pfns[i] = (u32)(first + i);
        d[0].addr = PFN_LIST;
        d[0].len = 256 * 4;
        d[0].flags = 0;
        d[0].next = 0;
        submit(0);
    }
}

void guest_main(void) {
    int have = r32(0) == 0x74726976 && r32(8) == 5;
    if (have) {
        w32(0x70, 0);
        w32(0x70, 1);
        w32(0x70, 3);
        w32(0x24, 1);
        w32(0x20, 1); /* VIRTIO_F_VERSION_1 */
        w32(0x24, 0);
        w32(0x20, (1U << 5) | (1U << 2)); /* REPORTING, DEFLATE_ON_OOM */
        w32(0x70, 0xb);
        if (!(r32(0x70) & 8)) {
            say("FEATURES REFUSED\n");
            return;
        }
        for (int q = 0; q < 3; q++)
            setup_queue(q);
        w32(0x70, 0xf);
        if (r32(0x70) & 0x40) {
            say("DEVICE FAILED\n");
            return;
        }
    } else {
        say("NODEV\n");
    }
    say("READY\n");
    for (;;) {
        char c = getc_serial();
        if (c == 'a') {
            for (u64 p = ALLOC; p < ALLOC + ALLOC_LEN; p += 4096)
                *(volatile u64 *)p = p | 1;
            say("PEAK\n");
        } else if (c == 'f' || c == 'i') {
            if (have && c == 'f')
                report();
            if (have && c == 'i')
                inflate();
            if (r32(0x70) & 0x40)
                say("DEVICE FAILED\n");
            say(*(volatile u64 *)(ALLOC + 4096) == 0 ? "FREED zero\n" : "FREED kept\n");
        }
    }
}
