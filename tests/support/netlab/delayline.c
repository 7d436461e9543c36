/*
 * delayline: an emulated Ethernet link between two TAP devices, for
 * the network lab (tests/support/netlab/delayline.py drives it).
 *
 *   delayline LEFT RIGHT [--queue-frames N] [--granularity-us N]
 *                        [--overhead-bytes N] [--seed N]
 *
 * Creates TAP devices LEFT and RIGHT in the namespace it starts in, prints
 * {"ready": true, ...} and from then on moves every frame read from one
 * device to the other. The caller may move each device into another
 * namespace (the file descriptors keep working), so each device can be a
 * host's own eth0: no bridge or veth in the path.
 *
 * Each direction on its own:
 *
 *   1. a bottleneck of RATE: a frame finishes crossing it at
 *      sent = max(arrival, previous sent) + (bytes + overhead) * 8 / RATE,
 *      where overhead (default 24) is Ethernet's preamble, FCS and gap; a
 *      frame that would find more than QUEUE_BYTES still waiting is dropped
 *      (a router's tail drop);
 *   2. then DELAY plus uniform(-JITTER, +JITTER), drawn per frame; by
 *      default never due before the previous frame of the same direction
 *      (a queue's jitter, order kept); with REORDER 1 each frame keeps its
 *      own draw, so frames overtake each other whenever the jitter exceeds
 *      their spacing (counted as "reordered").
 *
 * Commands on stdin, one per line (answers are JSON lines on stdout):
 *
 *   shape DELAY_US JITTER_US RATE_KBIT QUEUE_BYTES [REORDER]
 *                                                    -> {"shaped": true}
 *       (RATE_KBIT 0: no bottleneck; REORDER 0 or 1, default 0; statistics
 *       start again from zero)
 *   stats                                            -> {"stats": {...}}
 *
 * End of stdin, SIGTERM or SIGINT: print the stats and exit 0; the TAP
 * devices vanish with the process (so a dead parent never leaves it
 * running). Until the first "shape" the link forwards at once.
 *
 * Frames are real wire frames: the devices offer checksum offload only
 * (IFF_VNET_HDR + TUN_F_CSUM, so no checksum is computed just to cross the
 * line) and no segmentation offload, so the sending kernel segments TCP's
 * 64 KB super-frames before they reach the line and each read is one frame
 * of at most MTU + 14 bytes. A longer frame is counted as oversize and
 * dropped.
 *
 * Cost: one read() and one write() per frame and no allocation after start
 * (each direction is a ring of --queue-frames fixed slots; a full ring
 * drops, counted as dropped_full). Frames leave in due order from a binary
 * heap over the ring: with order kept each new frame is due last, so a push
 * costs one comparison and only the pop sifts; a slot is reused once every
 * frame before it has left. Wake-ups are coalesced like a NIC's
 * interrupts: while frames keep arriving the loop sleeps until the next
 * frame is due or for --granularity-us (default 50), whichever is first,
 * without polling, and stamps what it then reads as having arrived half a
 * sleep earlier; when idle it blocks in ppoll(). Frames leave up to half a
 * granularity early and the timer slack is half a granularity, so each
 * delay is exact to about +-25 us; the typical lateness of a timed wake-up
 * (a CPU waking from idle, ~0.1 ms in a VM) is learnt and slept less.
 * Linux only, no dependencies beyond libc.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <linux/virtio_net.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

/* A frame on a 1500-byte-MTU link is at most 1514 bytes (no FCS); a slot
 * holds it after its virtio_net_hdr, with room to spare. */
#define SLOT_BYTES 2048
#define WIRE_FRAME_MAX 1514
#define VNET_HDR_BYTES ((ssize_t)sizeof(struct virtio_net_hdr))
/* Reads per direction per pass before due frames are released again. */
#define READ_BATCH 256
/* Traffic seen this recently keeps the loop in its coalescing mode. */
#define ACTIVE_WINDOW_NS 1000000LL
/* How often the coalescing mode looks at stdin for commands. */
#define COMMAND_CHECK_NS 20000000LL
#define MAX_WAKE_LEAD_NS 1000000LL
#define NS_PER_S 1000000000LL

struct direction {
    const char *name;
    int source, target;
    uint8_t *slots; /* queue_frames * SLOT_BYTES: virtio_net_hdr + frame */
    uint32_t *lengths;
    int64_t *due_ns, *arrival_ns;
    uint64_t head, tail; /* ever-growing counters; slot = counter & queue_mask */
    uint64_t *heap;      /* counters of the frames still held, by (due, counter) */
    uint64_t heap_size;
    uint8_t *has_left;   /* per slot: written (or dropped) ahead of its turn */
    uint64_t next_in_order; /* the counter after the latest-arrived frame written */
    int64_t last_due_ns;
    int64_t link_free_ns; /* when the bottleneck has sent all it holds */
    /* statistics, since the last "shape" */
    uint64_t frames_in, frames_out, bytes_out;
    uint64_t dropped_queue, dropped_full, dropped_write, oversize;
    uint64_t max_frame, max_queue, late_over_1ms;
    uint64_t reordered; /* frames written after one that arrived later */
    int64_t held_ns_total, held_ns_max; /* arrival to write: queue + delay */
    int64_t late_ns_total, late_ns_max; /* write time - due time: our own error */
};

struct shape {
    int64_t delay_ns, jitter_ns, rate_bps, queue_bytes;
    int is_reordering;
};

static volatile sig_atomic_t stop_requested;
static struct shape link_shape;
static uint64_t queue_frames = 16384, queue_mask;
static int64_t granularity_ns = 50000, overhead_bytes = 24;
static uint64_t rng_state;
/* The mean lateness of timed wake-ups; waits are shortened by it. */
static int64_t wake_lead_ns;

static void on_stop(int sig) {
    (void)sig;
    stop_requested = 1;
}

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static struct timespec to_timespec(int64_t ns) {
    struct timespec ts = {.tv_sec = ns / NS_PER_S, .tv_nsec = ns % NS_PER_S};
    return ts;
}

/* xorshift64*: fast, and good enough for jitter draws. */
static uint64_t next_random(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ULL;
}

static int64_t hold_ns(void) {
    if (link_shape.jitter_ns <= 0) return link_shape.delay_ns;
    uint64_t span = (uint64_t)(2 * link_shape.jitter_ns + 1);
    return link_shape.delay_ns - link_shape.jitter_ns + (int64_t)(next_random() % span);
}

static void learn_lateness(int64_t target, int64_t woke) {
    int64_t late = woke - target;
    if (late < 0) late = 0;
    if (late > MAX_WAKE_LEAD_NS) late = MAX_WAKE_LEAD_NS;
    wake_lead_ns += (late - wake_lead_ns) / 8;
}

static void die(const char *what) {
    perror(what);
    exit(1);
}

static int open_tap(const char *name) {
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) die("open /dev/net/tun");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) die("TUNSETIFF");
    /* Checksum offload only: no TSO/GSO, so frames stay wire-sized. */
    if (ioctl(fd, TUNSETOFFLOAD, (unsigned long)TUN_F_CSUM) < 0) die("TUNSETOFFLOAD");
    return fd;
}

static void *allocate(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) die("mmap");
    return p;
}

static void init_direction(struct direction *d, const char *name, int source, int target) {
    memset(d, 0, sizeof *d);
    d->name = name;
    d->source = source;
    d->target = target;
    d->slots = allocate(queue_frames * SLOT_BYTES);
    d->lengths = allocate(queue_frames * sizeof(uint32_t));
    d->due_ns = allocate(queue_frames * sizeof(int64_t));
    d->arrival_ns = allocate(queue_frames * sizeof(int64_t));
    d->heap = allocate(queue_frames * sizeof(uint64_t));
    d->has_left = allocate(queue_frames);
}

static void reset_statistics(struct direction *d) {
    d->frames_in = d->frames_out = d->bytes_out = 0;
    d->dropped_queue = d->dropped_full = d->dropped_write = d->oversize = 0;
    d->max_frame = d->max_queue = d->late_over_1ms = d->reordered = 0;
    d->held_ns_total = d->held_ns_max = d->late_ns_total = d->late_ns_max = 0;
}

/* Does the frame with counter a leave before the one with counter b? */
static int leaves_before(const struct direction *d, uint64_t a, uint64_t b) {
    int64_t due_a = d->due_ns[a & queue_mask], due_b = d->due_ns[b & queue_mask];
    return due_a < due_b || (due_a == due_b && a < b);
}

static void heap_push(struct direction *d, uint64_t counter) {
    uint64_t i = d->heap_size++;
    while (i > 0) {
        uint64_t parent = (i - 1) / 2;
        if (!leaves_before(d, counter, d->heap[parent])) break;
        d->heap[i] = d->heap[parent];
        i = parent;
    }
    d->heap[i] = counter;
}

static void heap_pop(struct direction *d) {
    uint64_t last = d->heap[--d->heap_size], i = 0;
    for (;;) {
        uint64_t child = 2 * i + 1;
        if (child >= d->heap_size) break;
        if (child + 1 < d->heap_size && leaves_before(d, d->heap[child + 1], d->heap[child]))
            child++;
        if (!leaves_before(d, d->heap[child], last)) break;
        d->heap[i] = d->heap[child];
        i = child;
    }
    d->heap[i] = last;
}

/* The frame with counter has left: free its slot and every one before it. */
static void mark_left(struct direction *d, uint64_t counter) {
    d->has_left[counter & queue_mask] = 1;
    while (d->head != d->tail && d->has_left[d->head & queue_mask]) {
        d->has_left[d->head & queue_mask] = 0;
        d->head++;
    }
}

/* When the frame has crossed the bottleneck, or -1 if its queue is full. */
static int64_t cross_bottleneck(struct direction *d, int64_t arrival, ssize_t frame_bytes) {
    if (link_shape.rate_bps <= 0) return arrival;
    int64_t start = d->link_free_ns > arrival ? d->link_free_ns : arrival;
    int64_t waiting_bytes =
        (int64_t)((__int128)(start - arrival) * link_shape.rate_bps / (8 * NS_PER_S));
    if (waiting_bytes + frame_bytes > link_shape.queue_bytes) return -1;
    int64_t bits = (frame_bytes + overhead_bytes) * 8;
    d->link_free_ns =
        start + (int64_t)(((__int128)bits * NS_PER_S + link_shape.rate_bps / 2) /
                          link_shape.rate_bps);
    return d->link_free_ns;
}

/* Read until EAGAIN or READ_BATCH frames; returns 1 if the batch filled. */
static int read_frames(struct direction *d, int64_t stamp_shift_ns) {
    static uint8_t scratch[65536];
    for (int i = 0; i < READ_BATCH; i++) {
        int is_full = d->tail - d->head >= queue_frames;
        uint8_t *buffer = is_full ? scratch : d->slots + (d->tail & queue_mask) * SLOT_BYTES;
        ssize_t n = read(d->source, buffer, is_full ? sizeof scratch : SLOT_BYTES);
        if (n < 0) {
            if (errno == EINTR) continue;
            return 0; /* EAGAIN, or the device is going away */
        }
        if (n < VNET_HDR_BYTES) continue; /* never: the header always comes first */
        int64_t arrival = now_ns() - stamp_shift_ns;
        const struct virtio_net_hdr *vnet = (const struct virtio_net_hdr *)buffer;
        ssize_t frame_bytes = n - VNET_HDR_BYTES;
        d->frames_in++;
        if ((uint64_t)frame_bytes > d->max_frame) d->max_frame = (uint64_t)frame_bytes;
        if (is_full) {
            d->dropped_full++;
            continue;
        }
        if (frame_bytes > WIRE_FRAME_MAX || vnet->gso_type != VIRTIO_NET_HDR_GSO_NONE) {
            d->oversize++;
            continue;
        }
        int64_t sent = cross_bottleneck(d, arrival, frame_bytes);
        if (sent < 0) {
            d->dropped_queue++;
            continue;
        }
        int64_t due = sent + hold_ns();
        if (due < sent) due = sent;
        if (!link_shape.is_reordering && due < d->last_due_ns) due = d->last_due_ns;
        d->last_due_ns = due;
        uint64_t slot = d->tail & queue_mask;
        d->lengths[slot] = (uint32_t)n;
        d->due_ns[slot] = due;
        d->arrival_ns[slot] = arrival;
        heap_push(d, d->tail);
        d->tail++;
        if (d->tail - d->head > d->max_queue) d->max_queue = d->tail - d->head;
    }
    return 1;
}

static void release_frames(struct direction *d, int64_t now) {
    /* Release early by up to what a wake-up is typically late by: a frame
     * due within it would leave later still if we slept again. */
    int64_t early = granularity_ns / 2 > wake_lead_ns ? granularity_ns / 2 : wake_lead_ns;
    while (d->heap_size > 0) {
        uint64_t counter = d->heap[0], slot = counter & queue_mask;
        if (d->due_ns[slot] > now + early) break;
        int64_t written = now_ns(); /* before: the write runs the receiving stack */
        ssize_t n = write(d->target, d->slots + slot * SLOT_BYTES, d->lengths[slot]);
        if (n < 0 && errno == EINTR) continue;
        heap_pop(d);
        mark_left(d, counter);
        if (n < 0) {
            d->dropped_write++;
            continue;
        }
        if (counter < d->next_in_order) d->reordered++;
        else d->next_in_order = counter + 1;
        int64_t held = written - d->arrival_ns[slot];
        int64_t late = written - d->due_ns[slot];
        d->frames_out++;
        d->bytes_out += d->lengths[slot] - VNET_HDR_BYTES;
        d->held_ns_total += held;
        if (held > d->held_ns_max) d->held_ns_max = held;
        d->late_ns_total += late;
        if (late > d->late_ns_max) d->late_ns_max = late;
        if (late > 1000000) d->late_over_1ms++;
    }
}

static void print_direction(const struct direction *d) {
    double frames = d->frames_out ? (double)d->frames_out : 1.0;
    printf("\"%s\": {\"frames_in\": %llu, \"frames_out\": %llu, \"bytes_out\": %llu, "
           "\"dropped_queue\": %llu, \"dropped_full\": %llu, \"dropped_write\": %llu, "
           "\"oversize\": %llu, \"max_frame\": %llu, \"max_queue\": %llu, "
           "\"held_ms_mean\": %.4f, \"held_ms_max\": %.4f, "
           "\"late_ms_mean\": %.4f, \"late_ms_max\": %.4f, \"late_over_1ms\": %llu, "
           "\"reordered\": %llu}",
           d->name, (unsigned long long)d->frames_in, (unsigned long long)d->frames_out,
           (unsigned long long)d->bytes_out, (unsigned long long)d->dropped_queue,
           (unsigned long long)d->dropped_full, (unsigned long long)d->dropped_write,
           (unsigned long long)d->oversize, (unsigned long long)d->max_frame,
           (unsigned long long)d->max_queue, (double)d->held_ns_total / frames / 1e6,
           (double)d->held_ns_max / 1e6, (double)d->late_ns_total / frames / 1e6,
           (double)d->late_ns_max / 1e6, (unsigned long long)d->late_over_1ms,
           (unsigned long long)d->reordered);
}

static void print_stats(const struct direction *dirs) {
    printf("{\"stats\": {");
    print_direction(&dirs[0]);
    printf(", ");
    print_direction(&dirs[1]);
    printf(", \"wake_lead_us\": %.1f}}\n", (double)wake_lead_ns / 1e3);
    fflush(stdout);
}

/* Handle every complete line on stdin; returns 0 at end of input. */
static int read_commands(struct direction *dirs) {
    static char buffer[4096];
    static size_t used;
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buffer + used, sizeof buffer - 1 - used);
        if (n == 0) return 0;
        if (n < 0) return errno == EAGAIN || errno == EINTR;
        used += (size_t)n;
        buffer[used] = '\0';
        char *line = buffer, *end;
        while ((end = strchr(line, '\n')) != NULL) {
            *end = '\0';
            long long delay_us, jitter_us, rate_kbit, queue, reorder = 0;
            if (sscanf(line, "shape %lld %lld %lld %lld %lld", &delay_us, &jitter_us,
                       &rate_kbit, &queue, &reorder) >= 4) {
                link_shape.delay_ns = delay_us * 1000;
                link_shape.jitter_ns = jitter_us * 1000;
                link_shape.rate_bps = rate_kbit * 1000;
                link_shape.queue_bytes = queue;
                link_shape.is_reordering = reorder != 0;
                reset_statistics(&dirs[0]);
                reset_statistics(&dirs[1]);
                printf("{\"shaped\": true}\n");
                fflush(stdout);
            } else if (strcmp(line, "stats") == 0) {
                print_stats(dirs);
            } else if (*line) {
                printf("{\"error\": \"unknown command\"}\n");
                fflush(stdout);
            }
            line = end + 1;
        }
        used = strlen(line);
        memmove(buffer, line, used);
        if (used == sizeof buffer - 1) used = 0; /* an absurd line: forget it */
    }
}

static long long parse_number(const char *flag, const char *text) {
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || *end || value < 0) {
        fprintf(stderr, "delayline: bad value for %s: %s\n", flag, text);
        exit(2);
    }
    return value;
}

int main(int argc, char **argv) {
    const char *left = NULL, *right = NULL;
    uint64_t seed = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32);
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "delayline: %s needs a value\n", arg);
                return 2;
            }
            long long value = parse_number(arg, argv[++i]);
            if (!strcmp(arg, "--queue-frames")) queue_frames = (uint64_t)value;
            else if (!strcmp(arg, "--granularity-us")) granularity_ns = value * 1000;
            else if (!strcmp(arg, "--overhead-bytes")) overhead_bytes = value;
            else if (!strcmp(arg, "--seed")) seed = (uint64_t)value;
            else {
                fprintf(stderr, "delayline: unknown option %s\n", arg);
                return 2;
            }
        } else if (!left) {
            left = arg;
        } else if (!right) {
            right = arg;
        } else {
            fprintf(stderr, "delayline: too many arguments\n");
            return 2;
        }
    }
    if (!left || !right) {
        fprintf(stderr, "usage: delayline LEFT RIGHT [--queue-frames N] [--granularity-us N] "
                        "[--overhead-bytes N] [--seed N]\n");
        return 2;
    }
    uint64_t frames = 64;
    while (frames < queue_frames) frames <<= 1;
    queue_frames = frames;
    queue_mask = frames - 1;
    rng_state = seed ? seed : 0x9E3779B97F4A7C15ULL;
    if (granularity_ns < 1000) granularity_ns = 1000;
    /* Timer slack is how late the kernel may wake us: half a granularity. */
    prctl(PR_SET_TIMERSLACK, (unsigned long)(granularity_ns / 2), 0, 0, 0);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fcntl(STDIN_FILENO, F_SETFL, fcntl(STDIN_FILENO, F_GETFL) | O_NONBLOCK);

    int left_fd = open_tap(left), right_fd = open_tap(right);
    struct direction dirs[2];
    init_direction(&dirs[0], "left_to_right", left_fd, right_fd);
    init_direction(&dirs[1], "right_to_left", right_fd, left_fd);
    printf("{\"ready\": true, \"left\": \"%s\", \"right\": \"%s\", \"queue_frames\": %llu, "
           "\"seed\": %llu}\n",
           left, right, (unsigned long long)queue_frames, (unsigned long long)seed);
    fflush(stdout);

    struct pollfd fds[3] = {{.fd = left_fd, .events = POLLIN},
                            {.fd = right_fd, .events = POLLIN},
                            {.fd = STDIN_FILENO, .events = POLLIN}};
    int64_t stamp_shift_ns = 0; /* how much earlier than read the next frames arrived */
    int64_t last_arrival = 0, last_command_check = 0;
    while (!stop_requested) {
        int is_busy = 0, has_read = 0;
        for (int k = 0; k < 2; k++) {
            uint64_t before = dirs[k].frames_in;
            is_busy |= read_frames(&dirs[k], stamp_shift_ns);
            has_read |= dirs[k].frames_in != before;
        }
        int64_t now = now_ns();
        if (has_read) last_arrival = now;
        release_frames(&dirs[0], now);
        release_frames(&dirs[1], now);
        stamp_shift_ns = 0;
        if (is_busy) continue;
        int64_t next_due = INT64_MAX;
        for (int k = 0; k < 2; k++) {
            if (dirs[k].heap_size > 0) {
                int64_t due = dirs[k].due_ns[dirs[k].heap[0] & queue_mask];
                if (due < next_due) next_due = due;
            }
        }
        now = now_ns();
        /* Wake for the next due frame a little early (see learn_lateness). */
        int64_t due_wait = next_due == INT64_MAX ? INT64_MAX : next_due - wake_lead_ns - now;
        if (now - last_arrival < ACTIVE_WINDOW_NS) {
            /* Traffic is flowing: sleep without polling (coalesce arrivals). */
            if (now - last_command_check > COMMAND_CHECK_NS) {
                last_command_check = now;
                if (!read_commands(dirs)) break;
            }
            int64_t wait = due_wait < granularity_ns ? due_wait : granularity_ns;
            if (wait > 0) {
                struct timespec ts = to_timespec(wait);
                nanosleep(&ts, NULL);
                if (wait == due_wait) learn_lateness(now + wait, now_ns());
                stamp_shift_ns = wait / 2; /* the mean wait of what arrived meanwhile */
            }
            continue;
        }
        /* Idle: block until a frame or a command arrives, or one is due. */
        struct timespec ts, *timeout = NULL;
        if (due_wait != INT64_MAX) {
            ts = to_timespec(due_wait > 0 ? due_wait : 0);
            timeout = &ts;
        }
        int ready = ppoll(fds, 3, timeout, NULL);
        if (ready == 0 && timeout && due_wait > 0) learn_lateness(now + due_wait, now_ns());
        if (ready > 0 && fds[2].revents && !read_commands(dirs)) break;
    }
    print_stats(dirs);
    return 0;
}
