/*
 * loadgen.c - closed-loop HTTP/1.1 keep-alive load generator for the gateway benchmarks.
 *
 * One thread and one epoll set drive C connections; each connection POSTs the body file, waits for
 * the whole response (Content-Length, chunked or read-until-close) and sends the next request at
 * once. Every request's own latency is kept (no coordinated-omission "correction"), so the
 * percentiles are exact and "peer minus direct" differences stay meaningful. For a streamed answer
 * the time to the first decoded body byte is the time to the first SSE event (TTFB).
 *
 * Non-2xx answers, a missing marker (-m), a timeout (-t) or a connection reset mid-request count as
 * errors; the connection is then reopened and the load goes on.
 *
 * Build:  cc -O2 -o loadgen loadgen.c -lm
 * Usage:  loadgen -c 16 -d 5 -w 2 -b body.json [-H 'Name: value']... [-m marker] [-n requests]
 *                 [-t timeout_s] http://127.0.0.1:8000/v1/chat/completions
 *         -n stops after that many attempts (responses + failed requests); -d 0 with -n = no time bound.
 * Output: one JSON line on stdout; times in microseconds. Only requests completed inside the measured
 * window (after the -w warm-up, for -d seconds) are timed and counted in "requests"; "completed_total"
 * counts every response, and the err_* counters cover the whole run. At the end the requests in
 * flight are left to finish (up to 2 s, uncounted), so servers see no reset connections.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define HEAD_MAX 16384
#define READ_BUF 65536

enum phase { P_BACKOFF, P_CONNECTING, P_SENDING, P_HEAD, P_BODY };
enum body_kind { B_LENGTH, B_CHUNKED, B_UNTIL_CLOSE };
enum chunk_state { C_SIZE, C_DATA, C_DATA_END, C_TRAILER };

typedef struct {
    int fd;
    enum phase phase;
    double started, first_byte, retry_at;
    size_t sent;
    char head[HEAD_MAX];
    size_t head_len;
    int status;
    int keep_alive;
    enum body_kind kind;
    long remaining;                 /* B_LENGTH: bytes left; C_DATA: bytes left of this chunk */
    enum chunk_state cstate;
    char line[128];
    size_t line_len;
    size_t match;                   /* KMP state of the marker search */
    int found;
    int got_body;
} conn_t;

typedef struct {
    double *v;
    size_t n, cap;
} series_t;

static char *req_buf;
static size_t req_len;
static char *marker;
static size_t marker_len;
static size_t *marker_fail;
static struct addrinfo *target;
static int ep;
static double t_warm, t_end, timeout_s = 30.0;
static long max_requests;          /* 0 = bounded by time only */
static long completed_total, measured, ok_count;
static long err_connect, err_read, err_status, err_invalid, err_timeout, reconnects;
static series_t lat, ttfb;

/* -n bounds attempts: responses plus requests lost to connect/read errors and timeouts, so a dead
 * server cannot keep a bounded run going forever */
static int budget_spent(void) {
    return max_requests && completed_total + err_connect + err_read + err_timeout >= max_requests;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *msg) {
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static void push(series_t *s, double x) {
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 65536;
        s->v = realloc(s->v, s->cap * sizeof(double));
        if (!s->v) die("out of memory");
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* nearest-rank percentile of a sorted series, in microseconds */
static double pct(const series_t *s, double p) {
    if (!s->n) return 0.0;
    size_t k = (size_t)ceil(p / 100.0 * s->n);
    if (k < 1) k = 1;
    if (k > s->n) k = s->n;
    return s->v[k - 1] * 1e6;
}

static void set_events(conn_t *c, unsigned ev) {
    struct epoll_event e = {.events = ev, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e);
}

static void close_conn(conn_t *c) {
    if (c->fd >= 0) {
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        c->fd = -1;
    }
}

static void reset_request(conn_t *c) {
    c->sent = 0;
    c->head_len = 0;
    c->status = 0;
    c->keep_alive = 1;
    c->remaining = 0;
    c->cstate = C_SIZE;
    c->line_len = 0;
    c->match = 0;
    c->found = marker_len == 0;
    c->got_body = 0;
    c->first_byte = 0;
}

static void start_request(conn_t *c) {
    reset_request(c);
    c->started = now();
    c->phase = P_SENDING;
    set_events(c, EPOLLOUT);
}

static void open_conn(conn_t *c) {
    c->fd = socket(target->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket() failed (raise ulimit -n?)");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e);
    reset_request(c);
    c->started = now();
    if (connect(c->fd, target->ai_addr, target->ai_addrlen) == 0) {
        c->phase = P_SENDING;
    } else if (errno == EINPROGRESS) {
        c->phase = P_CONNECTING;
    } else {
        err_connect++;
        close_conn(c);
        c->phase = P_BACKOFF;
        c->retry_at = now() + 0.05;
    }
}

/* A failed request: count it, drop the connection and open a new one. */
static void fail(conn_t *c, long *counter) {
    (*counter)++;
    close_conn(c);
    if (now() >= t_end || budget_spent()) {
        c->phase = P_BACKOFF;
        c->retry_at = INFINITY;
        return;
    }
    reconnects++;
    open_conn(c);
}

static void finish(conn_t *c) {
    double t = now();
    completed_total++;
    int good = c->status >= 200 && c->status < 300;
    if (good && !c->found) err_invalid++;
    else if (!good) err_status++;
    if (t >= t_warm && t < t_end) {
        measured++;
        if (good && c->found) {
            ok_count++;
            push(&lat, t - c->started);
            push(&ttfb, (c->got_body ? c->first_byte : t) - c->started);
        }
    }
    if (budget_spent() || t >= t_end) {  /* done: leave it closed */
        close_conn(c);
        c->phase = P_BACKOFF;
        c->retry_at = INFINITY;
        return;
    }
    if (!c->keep_alive) {
        close_conn(c);
        reconnects++;
        open_conn(c);
        return;
    }
    start_request(c);
}

static void feed_marker(conn_t *c, const char *p, size_t n) {
    if (c->found) return;
    for (size_t i = 0; i < n; i++) {
        while (c->match && marker[c->match] != p[i]) c->match = marker_fail[c->match - 1];
        if (marker[c->match] == p[i]) c->match++;
        if (c->match == marker_len) {
            c->found = 1;
            return;
        }
    }
}

static void body_bytes(conn_t *c, const char *p, size_t n) {
    if (!n) return;
    if (!c->got_body) {
        c->got_body = 1;
        c->first_byte = now();
    }
    feed_marker(c, p, n);
}

/* Decodes chunked framing; returns 1 when the last chunk and trailers are consumed, -1 on bad framing. */
static int chunked(conn_t *c, const char *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        if (c->cstate == C_DATA) {
            size_t take = n - i < (size_t)c->remaining ? n - i : (size_t)c->remaining;
            body_bytes(c, p + i, take);
            i += take;
            c->remaining -= take;
            if (!c->remaining) {
                c->cstate = C_DATA_END;
                c->line_len = 0;
            }
            continue;
        }
        char ch = p[i++];
        if (ch != '\n') {
            if (c->line_len < sizeof c->line - 1) c->line[c->line_len++] = ch;
            continue;
        }
        if (c->line_len && c->line[c->line_len - 1] == '\r') c->line_len--;
        c->line[c->line_len] = 0;
        if (c->cstate == C_SIZE) {
            char *end;
            long size = strtol(c->line, &end, 16);
            if (end == c->line || size < 0) return -1;
            c->line_len = 0;
            if (size == 0) {
                c->cstate = C_TRAILER;
            } else {
                c->cstate = C_DATA;
                c->remaining = size;
            }
        } else if (c->cstate == C_DATA_END) {
            if (c->line_len) return -1;
            c->cstate = C_SIZE;
        } else { /* C_TRAILER: an empty line ends the message */
            if (!c->line_len) return 1;
            c->line_len = 0;
        }
    }
    return 0;
}

static const char *header_value(char *head, const char *name) {
    size_t nlen = strlen(name);
    for (char *line = strstr(head, "\r\n"); line; line = strstr(line, "\r\n")) {
        line += 2;
        if (!strncasecmp(line, name, nlen) && line[nlen] == ':') {
            const char *v = line + nlen + 1;
            while (*v == ' ' || *v == '\t') v++;
            return v;
        }
    }
    return NULL;
}

/* Parses the status line and the framing headers; returns -1 on a malformed head. */
static int parse_head(conn_t *c) {
    if (strncmp(c->head, "HTTP/1.", 7) != 0) return -1;
    c->status = atoi(c->head + 9);
    if (c->status < 100) return -1;
    c->keep_alive = c->head[7] == '1';
    const char *v = header_value(c->head, "connection");
    if (v && !strncasecmp(v, "close", 5)) c->keep_alive = 0;
    if (v && !strncasecmp(v, "keep-alive", 10)) c->keep_alive = 1;
    v = header_value(c->head, "transfer-encoding");
    const char *eol = v ? strstr(v, "\r\n") : NULL;
    const char *hit = v ? strcasestr(v, "chunked") : NULL;
    if (hit && (!eol || hit < eol)) {
        c->kind = B_CHUNKED;
        c->cstate = C_SIZE;
        return 0;
    }
    v = header_value(c->head, "content-length");
    if (v) {
        c->kind = B_LENGTH;
        c->remaining = atol(v);
        return 0;
    }
    c->kind = c->status == 204 || c->status == 304 ? B_LENGTH : B_UNTIL_CLOSE;
    if (c->kind == B_UNTIL_CLOSE) c->keep_alive = 0;
    return 0;
}

/* Body bytes of the current response; returns 1 when complete, -1 on bad framing, 0 for more. */
static int consume_body(conn_t *c, const char *p, size_t n) {
    if (c->kind == B_CHUNKED) return chunked(c, p, n);
    if (c->kind == B_UNTIL_CLOSE) {
        body_bytes(c, p, n);
        return 0;
    }
    size_t take = n < (size_t)c->remaining ? n : (size_t)c->remaining;
    body_bytes(c, p, take);
    c->remaining -= take;
    return c->remaining == 0;
}

static void on_readable(conn_t *c) {
    static char buf[READ_BUF];
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (c->phase == P_BODY && c->kind == B_UNTIL_CLOSE) {
                finish(c);
                return;
            }
            fail(c, &err_read);
            return;
        }
        const char *p = buf;
        size_t len = (size_t)n;
        if (c->phase == P_HEAD) {
            size_t room = HEAD_MAX - 1 - c->head_len;
            size_t take = len < room ? len : room;
            memcpy(c->head + c->head_len, p, take);
            size_t old = c->head_len;
            c->head_len += take;
            c->head[c->head_len] = 0;
            char *end = strstr(c->head, "\r\n\r\n");
            if (!end) {
                if (c->head_len >= HEAD_MAX - 1) fail(c, &err_read);
                continue;
            }
            size_t head_bytes = (size_t)(end - c->head) + 4;
            end[2] = 0;
            if (parse_head(c) < 0) {
                fail(c, &err_read);
                return;
            }
            c->phase = P_BODY;
            p += head_bytes - old;
            len -= head_bytes - old;
            if (c->kind == B_LENGTH && c->remaining == 0) {
                finish(c);
                return;
            }
        }
        if (c->phase != P_BODY) return;
        int r = consume_body(c, p, len);
        if (r < 0) {
            fail(c, &err_read);
            return;
        }
        if (r > 0) {
            finish(c);
            return;
        }
    }
}

static void on_writable(conn_t *c) {
    if (c->phase == P_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err) {
            err_connect++;
            close_conn(c);
            c->phase = P_BACKOFF;
            c->retry_at = now() + 0.05;
            return;
        }
        c->phase = P_SENDING;
        c->started = now();
    }
    while (c->sent < req_len) {
        ssize_t n = write(c->fd, req_buf + c->sent, req_len - c->sent);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            fail(c, &err_read);
            return;
        }
        c->sent += (size_t)n;
    }
    c->phase = P_HEAD;
    set_events(c, EPOLLIN);
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) die("cannot open the body file");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (!b || fread(b, 1, (size_t)n, f) != (size_t)n) die("cannot read the body file");
    fclose(f);
    b[n] = 0;
    *len = (size_t)n;
    return b;
}

static void usage(void) {
    fprintf(stderr, "usage: loadgen -c conns -d seconds [-w warmup_s] -b body_file [-H 'Name: value']... "
                    "[-m marker] [-n max_requests] [-t timeout_s] http://host:port/path\n");
    exit(2);
}

int main(int argc, char **argv) {
    int conns = 1;
    double duration = 5.0, warmup = 0.0;
    const char *body_path = NULL;
    char headers[8192] = "";
    size_t hlen = 0;
    int opt;
    while ((opt = getopt(argc, argv, "c:d:w:b:H:m:n:t:")) != -1) {
        switch (opt) {
        case 'c': conns = atoi(optarg); break;
        case 'd': duration = atof(optarg); break;
        case 'w': warmup = atof(optarg); break;
        case 'b': body_path = optarg; break;
        case 'H':
            if (hlen + strlen(optarg) + 3 >= sizeof headers) die("too many headers");
            hlen += (size_t)snprintf(headers + hlen, sizeof headers - hlen, "%s\r\n", optarg);
            break;
        case 'm': marker = optarg; break;
        case 'n': max_requests = atol(optarg); break;
        case 't': timeout_s = atof(optarg); break;
        default: usage();
        }
    }
    if (optind != argc - 1 || !body_path || conns < 1 || (duration <= 0 && !max_requests)) usage();
    const char *url = argv[optind];
    if (strncmp(url, "http://", 7) != 0) die("only http:// URLs");
    char host[256], port[16] = "80";
    const char *hp = url + 7, *path = strchr(hp, '/');
    size_t hostlen = path ? (size_t)(path - hp) : strlen(hp);
    if (!path) path = "/";
    if (hostlen >= sizeof host) die("host too long");
    memcpy(host, hp, hostlen);
    host[hostlen] = 0;
    char *colon = strrchr(host, ':');
    if (colon) {
        snprintf(port, sizeof port, "%s", colon + 1);
        *colon = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    if (getaddrinfo(host, port, &hints, &target) != 0) die("cannot resolve the host");

    if (marker) {
        marker_len = strlen(marker);
        marker_fail = calloc(marker_len ? marker_len : 1, sizeof(size_t));
        for (size_t i = 1, k = 0; i < marker_len; i++) {
            while (k && marker[i] != marker[k]) k = marker_fail[k - 1];
            if (marker[i] == marker[k]) k++;
            marker_fail[i] = k;
        }
    }
    size_t blen;
    char *body = read_file(body_path, &blen);
    int has_ctype = strcasestr(headers, "content-type:") != NULL;
    req_buf = malloc(blen + hlen + 512 + strlen(path) + strlen(host));
    req_len = (size_t)sprintf(req_buf, "POST %s HTTP/1.1\r\nHost: %s:%s\r\n%sContent-Length: %zu\r\n%s\r\n",
                              path, host, port, has_ctype ? "" : "Content-Type: application/json\r\n", blen,
                              headers);
    memcpy(req_buf + req_len, body, blen);
    req_len += blen;

    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < (rlim_t)conns + 64) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    conn_t *cs = calloc((size_t)conns, sizeof(conn_t));
    double t0 = now();
    t_warm = t0 + warmup;
    t_end = duration > 0 ? t_warm + duration : INFINITY;
    for (int i = 0; i < conns; i++) {
        cs[i].fd = -1;
        open_conn(&cs[i]);
    }
    struct epoll_event evs[256];
    double drain_until = INFINITY;
    for (;;) {
        double t = now();
        if (budget_spent()) break;
        if (t >= t_end && drain_until == INFINITY) drain_until = t + 2.0;
        if (t >= drain_until) break;
        if (t >= t_end) {  /* draining: requests in flight finish (uncounted) so servers see no resets */
            int open = 0;
            for (int i = 0; i < conns; i++) open += cs[i].fd >= 0;
            if (!open) break;
        }
        int n = epoll_wait(ep, evs, 256, 10);
        for (int i = 0; i < n && !budget_spent(); i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->fd < 0) continue;
            if (evs[i].events & EPOLLOUT) on_writable(c);
            else if (evs[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
        }
        t = now();
        for (int i = 0; i < conns; i++) {
            conn_t *c = &cs[i];
            if (c->phase == P_BACKOFF && t >= c->retry_at && t < t_end && !budget_spent()) open_conn(c);
            else if (c->fd >= 0 && t - c->started > timeout_s) fail(c, &err_timeout);
        }
    }
    double t_stop = now();
    double elapsed = (t_stop < t_end ? t_stop : t_end) - t_warm;  /* a -n run can end before -d */
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;

    double sum = 0, max = 0;
    for (size_t i = 0; i < lat.n; i++) {
        sum += lat.v[i];
        if (lat.v[i] > max) max = lat.v[i];
    }
    qsort(lat.v, lat.n, sizeof(double), cmp_double);
    qsort(ttfb.v, ttfb.n, sizeof(double), cmp_double);
    long errors = err_connect + err_read + err_status + err_invalid + err_timeout;
    printf("{\"requests\":%ld,\"ok\":%ld,\"errors\":%ld,\"err_connect\":%ld,\"err_read\":%ld,"
           "\"err_status\":%ld,\"err_invalid\":%ld,\"err_timeout\":%ld,\"reconnects\":%ld,"
           "\"completed_total\":%ld,\"conns\":%d,\"duration_s\":%.3f,\"rps\":%.1f,"
           "\"lat_mean_us\":%.1f,\"lat_p50_us\":%.1f,\"lat_p90_us\":%.1f,\"lat_p99_us\":%.1f,"
           "\"lat_p999_us\":%.1f,\"lat_max_us\":%.1f,\"ttfb_p50_us\":%.1f,\"ttfb_p90_us\":%.1f,"
           "\"ttfb_p99_us\":%.1f,\"loadgen_cpu_s\":%.3f}\n",
           measured, ok_count, errors, err_connect, err_read, err_status, err_invalid, err_timeout, reconnects,
           completed_total, conns, elapsed, elapsed > 0 ? measured / elapsed : 0.0,
           lat.n ? sum / lat.n * 1e6 : 0.0, pct(&lat, 50), pct(&lat, 90), pct(&lat, 99), pct(&lat, 99.9),
           max * 1e6, pct(&ttfb, 50), pct(&ttfb, 90), pct(&ttfb, 99), cpu);
    return 0;
}
