/* The fleet benchmark's load generator in C (bench/fleet.py builds and runs it): CLIENTS
 * devices at once, each one after the other opening a new TCP connection to 127.0.0.1:PORT,
 * a full TLS 1.2 handshake (a new SSL object each time, no session cache, no ticket: nothing
 * to resume, and a resumed handshake counts as a failure), checking the certificate against
 * CA_FILE and the name ota.local as a device does, offering only CIPHER; then sending the
 * bytes of REQUEST_FILE and reading the whole response, the body counted, not kept. A
 * download counts once SIZE body bytes are in after a 200 with Content-Length SIZE; anything
 * else (an error, a short body, another status, over 60 s) is a failure. One thread, epoll.
 *
 *     loadgen PORT CA_FILE CIPHER CLIENTS DOWNLOADS SIZE REQUEST_FILE
 *
 * prints one line per download, "ok SECONDS" (connect to last byte) or "fail WHY".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT 60.0
#define HEAD_MAX 8192

enum state { IDLE, CONNECTING, HANDSHAKE, REQUEST, RESPONSE };

struct slot {
    enum state state;
    int fd;
    SSL *ssl;
    double start;
    char head[HEAD_MAX];
    size_t head_len;
    int head_done;
    long long body;
};

static SSL_CTX *ctx;
static int epfd, port, started, finished, downloads;
static long long size;
static char *request;
static size_t request_len;
static unsigned char buffer[256 * 1024];

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void watch(struct slot *s, int index, unsigned events, int op) {
    struct epoll_event event = {.events = events, .data.u32 = (unsigned)index};
    epoll_ctl(epfd, op, s->fd, &event);
}

static void close_slot(struct slot *s) {
    if (s->ssl) {
        SSL_shutdown(s->ssl);  /* close_notify, as the client closes once it has the body */
        SSL_free(s->ssl);
        s->ssl = NULL;
    }
    if (s->fd >= 0) {
        close(s->fd);  /* also leaves the epoll set */
        s->fd = -1;
    }
    s->state = IDLE;
}

static void fail(struct slot *s, const char *why) {
    char detail[160];
    unsigned long error = ERR_get_error();
    if (error) {
        ERR_error_string_n(error, detail, sizeof detail);
        printf("fail %s (%s) after %lld body bytes\n", why, detail, s->body);
    } else {
        printf("fail %s (%s) after %lld body bytes\n", why, errno ? strerror(errno) : "-", s->body);
    }
    ERR_clear_error();
    close_slot(s);
    finished++;
}

static void start(struct slot *s, int index) {
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons(port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    memset(s, 0, sizeof *s);
    s->fd = -1;
    s->start = now();
    started++;
    s->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (s->fd < 0) { fail(s, "socket"); return; }
    int one = 1;
    setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(s->fd, (struct sockaddr *)&address, sizeof address) < 0 && errno != EINPROGRESS) {
        fail(s, "connect");
        return;
    }
    s->state = CONNECTING;
    watch(s, index, EPOLLOUT, EPOLL_CTL_ADD);
}

/* Wait for what OpenSSL asked for, or give up on the download. */
static int want(struct slot *s, int index, int result) {
    int error = SSL_get_error(s->ssl, result);
    if (error == SSL_ERROR_WANT_READ) { watch(s, index, EPOLLIN, EPOLL_CTL_MOD); return 1; }
    if (error == SSL_ERROR_WANT_WRITE) { watch(s, index, EPOLLOUT, EPOLL_CTL_MOD); return 1; }
    return 0;
}

static void parse_head(struct slot *s) {
    char *end = memmem(s->head, s->head_len, "\r\n\r\n", 4);
    if (!end) return;
    s->head_done = 1;
    s->body = (long long)(s->head_len - (size_t)(end + 4 - s->head));
    *end = 0;
    int status = 0;
    long long length = -1;
    sscanf(s->head, "HTTP/%*d.%*d %d", &status);
    for (char *line = strstr(s->head, "\r\n"); line; line = strstr(line + 2, "\r\n")) {
        if (strncasecmp(line + 2, "content-length:", 15) == 0) length = atoll(line + 17);
    }
    if (status != 200 || length != size) s->head_done = -1;
}

static void step(struct slot *s, int index) {
    if (s->state == CONNECTING) {
        int error = 0;
        socklen_t len = sizeof error;
        getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &error, &len);
        if (error) { errno = error; fail(s, "connect"); return; }
        s->ssl = SSL_new(ctx);
        SSL_set_fd(s->ssl, s->fd);
        SSL_set_tlsext_host_name(s->ssl, "ota.local");
        SSL_set1_host(s->ssl, "ota.local");
        SSL_set_connect_state(s->ssl);
        s->state = HANDSHAKE;
    }
    if (s->state == HANDSHAKE) {
        int result = SSL_do_handshake(s->ssl);
        if (result != 1) { if (!want(s, index, result)) fail(s, "handshake"); return; }
        if (SSL_session_reused(s->ssl)) { fail(s, "resumed a session"); return; }
        s->state = REQUEST;
    }
    if (s->state == REQUEST) {
        int result = SSL_write(s->ssl, request, (int)request_len);
        if (result <= 0) { if (!want(s, index, result)) fail(s, "request"); return; }
        s->state = RESPONSE;
    }
    for (;;) {  /* RESPONSE: read what is there */
        int result = SSL_read(s->ssl, buffer, sizeof buffer);
        if (result <= 0) {
            if (!want(s, index, result)) fail(s, "response");
            return;
        }
        if (!s->head_done) {
            size_t take = (size_t)result < HEAD_MAX - 1 - s->head_len ? (size_t)result : HEAD_MAX - 1 - s->head_len;
            memcpy(s->head + s->head_len, buffer, take);
            s->head_len += take;
            parse_head(s);
            if (s->head_done < 0) { errno = 0; fail(s, "not 200 with Content-Length SIZE"); return; }
            if (!s->head_done && s->head_len == HEAD_MAX - 1) { errno = 0; fail(s, "head too long"); return; }
            if (s->head_done) s->body += result - (long long)take;
        } else {
            s->body += result;
        }
        if (s->head_done && s->body >= size) {
            printf("ok %.6f\n", now() - s->start);
            close_slot(s);
            finished++;
            return;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: loadgen PORT CA_FILE CIPHER CLIENTS DOWNLOADS SIZE REQUEST_FILE\n");
        return 2;
    }
    port = atoi(argv[1]);
    int clients = atoi(argv[4]);
    downloads = atoi(argv[5]);
    size = atoll(argv[6]);
    FILE *file = fopen(argv[7], "rb");
    if (!file) { perror(argv[7]); return 2; }
    request = malloc(HEAD_MAX);
    request_len = fread(request, 1, HEAD_MAX, file);
    fclose(file);

    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (SSL_CTX_set_cipher_list(ctx, argv[3]) != 1 || SSL_CTX_load_verify_locations(ctx, argv[2], NULL) != 1) {
        ERR_print_errors_fp(stderr);
        return 2;
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    epfd = epoll_create1(0);
    if (clients > downloads) clients = downloads;
    struct slot *slots = calloc((size_t)clients, sizeof *slots);
    for (int i = 0; i < clients; i++) start(&slots[i], i);
    struct epoll_event events[256];
    double last_check = now();
    while (finished < downloads) {
        int count = epoll_wait(epfd, events, 256, 1000);
        for (int i = 0; i < count; i++) {
            int index = (int)events[i].data.u32;
            if (slots[index].state != IDLE) step(&slots[index], index);
        }
        if (now() - last_check >= 1.0) {  /* the 60 s limit of each download */
            last_check = now();
            for (int i = 0; i < clients; i++) {
                if (slots[i].state != IDLE && last_check - slots[i].start > TIMEOUT) { errno = 0; fail(&slots[i], "timeout"); }
            }
        }
        for (int i = 0; i < clients; i++) {
            if (slots[i].state == IDLE && started < downloads) start(&slots[i], i);
        }
    }
    return 0;
}
