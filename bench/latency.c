/* The latency scenario's native parts, so that neither the clock nor the load shares an
 * interpreter with what it measures (bench/run.py compiles this with cc at run time).
 *
 *   latency probe PORT RATE SECONDS INPUT QUEUE...
 *       One thread LPUSHes events acq/plant<i % 10>/<i> into INPUT at RATE/s (open loop:
 *       each at its scheduled time, which is also where its latency counts from, so a
 *       stall is not hidden); another BRPOPs the QUEUEs and notes when each task came.
 *       Prints one line: "sent N received N duplicates N" then the latencies, sorted,
 *       in microseconds, one per line.
 *
 *   latency original PORT INPUT TAKEN set|noset
 *       The original resc's protocol, one event at a time, as it sends it: BRPOPLPUSH
 *       (1 s), [ZSCORE, ZADD if absent,] LPUSH, PUBLISH, LREM, PUBLISH, each a round
 *       trip of its own. The example rule: acq/<plant>/<product> makes the task
 *       trt/<plant>/<product> in trt/<plant>/todo-queue (set trt/<plant>/todo-set).
 *       Runs until SIGTERM.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    char buf[65536];
    size_t start, end;
} conn;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static conn *connect_to(int port) {
    conn *c = calloc(1, sizeof(conn));
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0 || connect(c->fd, (struct sockaddr *)&addr, sizeof addr) < 0) die("connect");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return c;
}

/* Sends one command of argc arguments (each a string). */
static void send_command(conn *c, int argc, const char **argv) {
    char out[8192];
    size_t n = (size_t)snprintf(out, sizeof out, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) {
        size_t len = strlen(argv[i]);
        if (n + len + 32 > sizeof out) {
            fprintf(stderr, "command too long\n");
            exit(2);
        }
        n += (size_t)snprintf(out + n, sizeof out - n, "$%zu\r\n", len);
        memcpy(out + n, argv[i], len);
        n += len;
        out[n++] = '\r';
        out[n++] = '\n';
    }
    for (size_t sent = 0; sent < n;) {
        ssize_t w = write(c->fd, out + sent, n - sent);
        if (w <= 0) die("write");
        sent += (size_t)w;
    }
}

static int fill(conn *c) {
    if (c->start > 0) {
        memmove(c->buf, c->buf + c->start, c->end - c->start);
        c->end -= c->start;
        c->start = 0;
    }
    ssize_t r = read(c->fd, c->buf + c->end, sizeof c->buf - c->end);
    if (r <= 0) return -1;
    c->end += (size_t)r;
    return 0;
}

/* One line of a reply, without its CRLF, copied into line (NUL-terminated). */
static void read_line(conn *c, char *line, size_t size) {
    for (;;) {
        char *crlf = memmem(c->buf + c->start, c->end - c->start, "\r\n", 2);
        if (crlf != NULL) {
            size_t len = (size_t)(crlf - (c->buf + c->start));
            if (len >= size) len = size - 1;
            memcpy(line, c->buf + c->start, len);
            line[len] = 0;
            c->start = (size_t)(crlf - c->buf) + 2;
            return;
        }
        if (fill(c) < 0) die("read");
    }
}

/* Reads one reply. Of a bulk string (or the last bulk string of an array) the text goes
 * into value; returns the reply's type character, or '_' for a nil. */
static char read_reply(conn *c, char *value, size_t size) {
    char line[1024];
    read_line(c, line, sizeof line);
    if (line[0] == '-') {
        fprintf(stderr, "Redis: %s\n", line + 1);
        exit(2);
    }
    if (line[0] == '$') {
        long len = atol(line + 1);
        if (len < 0) return '_';
        while (c->end - c->start < (size_t)len + 2)
            if (fill(c) < 0) die("read");
        size_t copy = (size_t)len < size - 1 ? (size_t)len : size - 1;
        memcpy(value, c->buf + c->start, copy);
        value[copy] = 0;
        c->start += (size_t)len + 2;
        return '$';
    }
    if (line[0] == '*') {
        long items = atol(line + 1);
        if (items < 0) return '_';
        for (long i = 0; i < items; i++) read_reply(c, value, size);
        return '*';
    }
    return line[0];
}

static char call(conn *c, char *value, size_t size, int argc, ...) {
    const char *argv[16];
    va_list args;
    va_start(args, argc);
    for (int i = 0; i < argc; i++) argv[i] = va_arg(args, const char *);
    va_end(args);
    send_command(c, argc, argv);
    return read_reply(c, value, size);
}

static double now_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* --- probe ------------------------------------------------------------------------ */

static long count;
static double *scheduled, *received;
static long duplicates, got;
static int port_g, queues_n;
static char **queues_g;

static void *consume(void *unused) {
    (void)unused;
    conn *c = connect_to(port_g);
    const char *argv[64];
    argv[0] = "BRPOP";
    for (int i = 0; i < queues_n; i++) argv[1 + i] = queues_g[i];
    argv[1 + queues_n] = "10";
    char value[1024];
    while (got < count) {
        send_command(c, queues_n + 2, argv);
        if (read_reply(c, value, sizeof value) == '_') break; /* 10 s without a task */
        double at = now_us();
        char *slash = strrchr(value, '/');
        long i = slash ? atol(slash + 1) : -1;
        if (i < 0 || i >= count) {
            fprintf(stderr, "unexpected task %s\n", value);
            exit(2);
        }
        if (received[i] != 0)
            duplicates++;
        else
            received[i] = at;
        got++;
    }
    return NULL;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int probe(int argc, char **argv) {
    if (argc < 6) return 2;
    port_g = atoi(argv[2]);
    double rate = atof(argv[3]), seconds = atof(argv[4]);
    const char *input = argv[5];
    queues_g = argv + 6;
    queues_n = argc - 6;
    count = (long)(rate * seconds);
    /* Wake at the scheduled time, not up to 50 us later (the default timer slack). */
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    scheduled = calloc((size_t)count, sizeof(double));
    received = calloc((size_t)count, sizeof(double));
    pthread_t consumer;
    pthread_create(&consumer, NULL, consume, NULL);
    conn *c = connect_to(port_g);
    char value[64], event[64];
    double start = now_us() + 100000;
    for (long i = 0; i < count; i++) {
        double at = start + (double)i * 1e6 / rate;
        double wait = at - now_us();
        if (wait > 0) {
            struct timespec ts = {(time_t)(wait / 1e6), (long)((wait - (long)(wait / 1e6) * 1e6) * 1e3)};
            nanosleep(&ts, NULL);
        }
        scheduled[i] = at;
        snprintf(event, sizeof event, "acq/plant%ld/%ld", i % 10, i);
        call(c, value, sizeof value, 3, "LPUSH", input, event);
    }
    pthread_join(consumer, NULL);
    long arrived = 0;
    double *latencies = calloc((size_t)count, sizeof(double));
    for (long i = 0; i < count; i++)
        if (received[i] != 0) latencies[arrived++] = received[i] - scheduled[i];
    qsort(latencies, (size_t)arrived, sizeof(double), cmp);
    printf("sent %ld received %ld duplicates %ld\n", count, arrived, duplicates);
    for (long i = 0; i < arrived; i++) printf("%.1f\n", latencies[i]);
    return 0;
}

/* --- original --------------------------------------------------------------------- */

static volatile sig_atomic_t stopping;

static void on_term(int signum) {
    (void)signum;
    stopping = 1;
}

static int original(int argc, char **argv) {
    if (argc < 6) return 2;
    conn *c = connect_to(atoi(argv[2]));
    const char *input = argv[3], *taken = argv[4];
    int with_set = strcmp(argv[5], "set") == 0;
    signal(SIGTERM, on_term);
    char event[1024], value[1024], task[1100], queue[1100], set[1100], message[2400];
    while (!stopping) {
        if (call(c, event, sizeof event, 4, "BRPOPLPUSH", input, taken, "1") == '_') continue;
        char plant[512], product[512];
        if (sscanf(event, "acq/%511[^/]/%511s", plant, product) != 2) continue;
        snprintf(task, sizeof task, "trt/%s/%s", plant, product);
        snprintf(queue, sizeof queue, "trt/%s/todo-queue", plant);
        snprintf(set, sizeof set, "trt/%s/todo-set", plant);
        int push = 1;
        if (with_set) {
            push = call(c, value, sizeof value, 3, "ZSCORE", set, task) == '_';
            if (push) {
                char score[32];
                snprintf(score, sizeof score, "%ld", (long)time(NULL));
                call(c, value, sizeof value, 4, "ZADD", set, score, task);
            }
        }
        if (push) {
            call(c, value, sizeof value, 3, "LPUSH", queue, task);
            snprintf(message, sizeof message, "%s TRIGGER %s -> %s", taken, event, task);
            call(c, value, sizeof value, 3, "PUBLISH", "events", message);
        }
        call(c, value, sizeof value, 4, "LREM", taken, "1", event);
        snprintf(message, sizeof message, "%s DONE %s", taken, event);
        call(c, value, sizeof value, 3, "PUBLISH", "events", message);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "probe") == 0) return probe(argc, argv);
    if (argc > 1 && strcmp(argv[1], "original") == 0) return original(argc, argv);
    fprintf(stderr, "usage: latency probe PORT RATE SECONDS INPUT QUEUE...\n"
                    "       latency original PORT INPUT TAKEN set|noset\n");
    return 2;
}
