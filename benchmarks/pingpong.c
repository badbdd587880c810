/* pingpong: a TCP echo load generator in the style of vmbench's echo client.
 *
 * Rule: no Python, no polyloop; one thread, epoll, non-blocking sockets with TCP_NODELAY.
 *
 *   pingpong echo HOST PORT CONNECTIONS SIZE SECONDS [WARMUP [READ]]
 *       CONNECTIONS connections, each with exactly one SIZE-byte message in flight: send
 *       it (one send() of the whole message, the rest when the kernel takes it), read
 *       SIZE bytes back, send the next. Each recv() asks for what is left of the echo,
 *       or for at most READ bytes if READ is given and not 0 (a client that reads into a
 *       64 KiB buffer: READ 65536). WARMUP seconds (default 0.2) run before
 *       the measured SECONDS and are not counted. A round trip is counted when it
 *       completes (its last echoed byte is read) inside the measured window, whenever it
 *       started (see run_echo). Prints one JSON line: requests/s, MB/s (one direction),
 *       p50/p99 round-trip latency in microseconds of the round trips counted, and the
 *       round trips of the whole run, warm-up included (total_requests).
 *
 *   pingpong idle HOST PORT CONNECTIONS [WINDOW]
 *       Opens CONNECTIONS connections, at most WINDOW (default 64) still unanswered at a
 *       time, and on each sends one byte and waits for its echo: the server has then
 *       accepted and served it. Prints {"accepted": N, "seconds": ...} once all have
 *       answered, keeps them open and idle until stdin is closed or a line is read, then
 *       closes them all and exits.
 *
 * Built by the harness (python -m benchmarks) with gcc -O2; the binary goes to
 * benchmarks/.build/, which git ignores.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int fd;
    size_t sent;     /* bytes of the current message sent */
    size_t received; /* bytes of the current echo received */
    double start;    /* when the current message was first sent */
    int done;        /* idle mode: answered */
} conn_t;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void die(const char *what) {
    fprintf(stderr, "pingpong: %s: %s\n", what, strerror(errno));
    exit(2);
}

static int cmp_u32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return (x > y) - (x < y);
}

static struct sockaddr_in address(const char *host, const char *port) {
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(port));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "pingpong: not an IPv4 address: %s\n", host);
        exit(2);
    }
    return sa;
}

static int open_socket(int blocking) {
    int fd = socket(AF_INET, SOCK_STREAM | (blocking ? 0 : SOCK_NONBLOCK), 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Send what is left of the message; 0 when all sent, 1 if the kernel is full. */
static int pump_send(conn_t *c, const char *msg, size_t size) {
    while (c->sent < size) {
        ssize_t n = send(c->fd, msg + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) return 1;
            die("send");
        }
        c->sent += (size_t)n;
    }
    return 0;
}

static int run_echo(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr,
                "usage: pingpong echo HOST PORT CONNECTIONS SIZE SECONDS [WARMUP [READ]]\n");
        return 2;
    }
    struct sockaddr_in sa = address(argv[2], argv[3]);
    int nconn = atoi(argv[4]);
    size_t size = (size_t)atol(argv[5]);
    double seconds = atof(argv[6]);
    double warmup = argc > 7 ? atof(argv[7]) : 0.2;
    size_t read_cap = argc > 8 ? (size_t)atol(argv[8]) : 0;
    if (nconn < 1 || size < 1 || seconds <= 0) {
        fprintf(stderr, "pingpong: bad arguments\n");
        return 2;
    }
    char *msg = malloc(size), *buf = malloc(size < 65536 ? 65536 : size);
    memset(msg, 'x', size);
    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    for (int i = 0; i < nconn; i++) {
        int fd = open_socket(1);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect");
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        conns[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &conns[i]};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl");
    }
    size_t cap = 1 << 20, count = 0, total = 0;
    uint32_t *lat = malloc(cap * sizeof *lat);
    double t0 = now(), measure_from = t0 + warmup, deadline = measure_from + seconds;
    for (int i = 0; i < nconn; i++) {
        conns[i].start = t0;
        if (pump_send(&conns[i], msg, size)) {
            struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = &conns[i]};
            epoll_ctl(ep, EPOLL_CTL_MOD, conns[i].fd, &ev);
        }
    }
    struct epoll_event events[256];
    double t = t0;
    while (t < deadline) {
        /* Wait no later than the deadline (rounded up: epoll never returns early), so the
         * run ends when the window does, not up to a timeout later. */
        int n = epoll_wait(ep, events, 256, (int)((deadline - t) * 1e3) + 1);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        t = now();
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            if (events[k].events & EPOLLOUT) {
                if (!pump_send(c, msg, size)) {
                    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
            }
            if (!(events[k].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
            for (;;) {
                size_t want = size - c->received;
                if (read_cap && want > read_cap) want = read_cap;
                ssize_t r = recv(c->fd, buf, want, 0);
                if (r < 0) {
                    if (errno == EAGAIN || errno == EINTR) break;
                    die("recv");
                }
                if (r == 0) {
                    fprintf(stderr, "pingpong: the server closed a connection\n");
                    return 1;
                }
                c->received += (size_t)r;
                if (c->received < size) continue;
                /* One round trip done: count it if measured, then the next message.
                 *
                 * Counted: every round trip that *completes* inside [measure_from, deadline],
                 * whenever it started. Each connection is a renewal process (one message in
                 * flight, the next sent as the echo ends), so the expected number of
                 * completions in a window is the window over the mean round trip: the count
                 * over `seconds` is the rate, unbiased. Counting only round trips that also
                 * *started* inside the window drops the one each connection has in flight
                 * when the window opens: CONNECTIONS requests too few in every run, a bias
                 * of CONNECTIONS / (rps x seconds) that grows as a server gets slower (over
                 * 5 % at 4,500 req/s x 100 connections x 0.4 s), so a slow server looked
                 * slower still beside a fast one. The trip in flight at the deadline is not
                 * counted: it has not completed in the window. A completion is timed when
                 * its last byte is read (now(), not the epoll batch's time, which is stale
                 * by the time the batch's later events are read). */
                double done = now();
                total++;
                if (done >= measure_from && done <= deadline) {
                    if (count == cap) {
                        cap *= 2;
                        lat = realloc(lat, cap * sizeof *lat);
                    }
                    lat[count++] = (uint32_t)((done - c->start) * 1e6);
                }
                c->received = c->sent = 0;
                c->start = done;
                if (pump_send(c, msg, size)) {
                    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
                    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                }
                break;
            }
        }
    }
    double elapsed = seconds;
    qsort(lat, count, sizeof *lat, cmp_u32);
    uint32_t p50 = count ? lat[count / 2] : 0;
    uint32_t p99 = count ? lat[(size_t)(count * 0.99)] : 0;
    printf("{\"connections\": %d, \"size\": %zu, \"read\": %zu, \"seconds\": %.3f, "
           "\"requests\": %zu, \"total_requests\": %zu, \"rps\": %.1f, \"mbps\": %.3f, "
           "\"p50_us\": %u, \"p99_us\": %u}\n",
           nconn, size, read_cap, elapsed, count, total, count / elapsed,
           count * (double)size / elapsed / 1e6, p50, p99);
    for (int i = 0; i < nconn; i++) close(conns[i].fd);
    return 0;
}

static int run_idle(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: pingpong idle HOST PORT CONNECTIONS [WINDOW]\n");
        return 2;
    }
    struct sockaddr_in sa = address(argv[2], argv[3]);
    int nconn = atoi(argv[4]);
    int window = argc > 5 ? atoi(argv[5]) : 64;
    conn_t *conns = calloc((size_t)nconn, sizeof *conns);
    int ep = epoll_create1(0);
    if (ep < 0) die("epoll_create1");
    int opened = 0, answered = 0, pending = 0;
    char byte = 'x', buf[16];
    double t0 = now();
    struct epoll_event events[256];
    while (answered < nconn) {
        while (opened < nconn && pending < window) {
            conn_t *c = &conns[opened++];
            c->fd = open_socket(0);
            if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS)
                die("connect");
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            if (epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev) < 0) die("epoll_ctl");
            pending++;
        }
        int n = epoll_wait(ep, events, 256, 10000);
        if (n < 0) {
            if (errno == EINTR) continue;
            die("epoll_wait");
        }
        if (n == 0) {
            fprintf(stderr, "pingpong: no progress for 10 s (%d answered)\n", answered);
            return 1;
        }
        for (int k = 0; k < n; k++) {
            conn_t *c = events[k].data.ptr;
            if (c->sent == 0) { /* connected (or failed): send the one byte */
                int err = 0;
                socklen_t len = sizeof err;
                getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err) {
                    errno = err;
                    die("connect");
                }
                if (send(c->fd, &byte, 1, MSG_NOSIGNAL) != 1) die("send");
                c->sent = 1;
                struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
                epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
                continue;
            }
            ssize_t r = recv(c->fd, buf, sizeof buf, 0);
            if (r < 0 && (errno == EAGAIN || errno == EINTR)) continue;
            if (r <= 0) {
                fprintf(stderr, "pingpong: a connection ended before its echo\n");
                return 1;
            }
            epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
            c->done = 1;
            answered++;
            pending--;
        }
    }
    printf("{\"accepted\": %d, \"seconds\": %.4f}\n", answered, now() - t0);
    fflush(stdout);
    /* Idle until the harness has read the server's memory. */
    ssize_t r;
    while ((r = read(0, buf, sizeof buf)) > 0 && !memchr(buf, '\n', (size_t)r)) {
    }
    for (int i = 0; i < nconn; i++) close(conns[i].fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "echo") == 0) return run_echo(argc, argv);
    if (argc > 1 && strcmp(argv[1], "idle") == 0) return run_idle(argc, argv);
    fprintf(stderr, "usage: pingpong echo|idle HOST PORT CONNECTIONS ...\n");
    return 2;
}
