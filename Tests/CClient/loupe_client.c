/*
 * A minimal Loupe client in C, as camera firmware would write it: TLS 1.3
 * with a client certificate (OpenSSL), ALPN "loupe/1", frames of a 4-byte
 * big-endian length plus a protobuf-c Envelope.
 *
 * It connects, sends Hello, expects Welcome, exchanges heartbeats and echo
 * requests with the manager, then says Goodbye. Exit status 0 means every
 * step worked; otherwise it prints which step failed and why.
 *
 * usage: loupe-c-client HOST PORT CA_PEM CERT_PEM KEY_PEM [ROUNDS]
 */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "loupe.pb-c.h"

#define MAX_FRAME (16u << 20)

static void fail(const char *step, const char *detail) {
    fprintf(stderr, "loupe-c-client: %s failed: %s\n", step, detail);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static int tcp_connect(const char *host, const char *port) {
    struct addrinfo hints = {0}, *list = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int status = getaddrinfo(host, port, &hints, &list);
    if (status != 0) fail("resolve", gai_strerror(status));
    int fd = -1;
    for (struct addrinfo *entry = list; entry; entry = entry->ai_next) {
        fd = socket(entry->ai_family, entry->ai_socktype, entry->ai_protocol);
        if (fd < 0) continue;
        if (connect(fd, entry->ai_addr, entry->ai_addrlen) == 0) break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(list);
    if (fd < 0) fail("connect", "no address of the host accepted the connection");
    return fd;
}

static void write_all(SSL *ssl, const uint8_t *bytes, size_t count) {
    while (count > 0) {
        int n = SSL_write(ssl, bytes, (int)count);
        if (n <= 0) fail("write", "TLS write failed");
        bytes += n;
        count -= (size_t)n;
    }
}

static void read_all(SSL *ssl, uint8_t *bytes, size_t count) {
    while (count > 0) {
        int n = SSL_read(ssl, bytes, (int)count);
        if (n <= 0) fail("read", "connection closed or TLS read failed");
        bytes += n;
        count -= (size_t)n;
    }
}

static void send_envelope(SSL *ssl, const Loupe__V1__Envelope *envelope) {
    size_t size = loupe__v1__envelope__get_packed_size(envelope);
    uint8_t *frame = malloc(4 + size);
    if (!frame) fail("send", "out of memory");
    frame[0] = (uint8_t)(size >> 24);
    frame[1] = (uint8_t)(size >> 16);
    frame[2] = (uint8_t)(size >> 8);
    frame[3] = (uint8_t)size;
    loupe__v1__envelope__pack(envelope, frame + 4);
    write_all(ssl, frame, 4 + size);
    free(frame);
}

static Loupe__V1__Envelope *receive_envelope(SSL *ssl) {
    uint8_t header[4];
    read_all(ssl, header, 4);
    uint32_t size = ((uint32_t)header[0] << 24) | ((uint32_t)header[1] << 16) | ((uint32_t)header[2] << 8) | header[3];
    if (size == 0 || size > MAX_FRAME) fail("receive", "frame length out of range");
    uint8_t *body = malloc(size);
    if (!body) fail("receive", "out of memory");
    read_all(ssl, body, size);
    Loupe__V1__Envelope *envelope = loupe__v1__envelope__unpack(NULL, size, body);
    free(body);
    if (!envelope) fail("receive", "frame is not a valid Envelope");
    if (envelope->body_case == LOUPE__V1__ENVELOPE__BODY_ERROR) {
        char detail[512];
        snprintf(detail, sizeof detail, "manager sent Error code %d: %s", envelope->error->code, envelope->error->message);
        fail("protocol", detail);
    }
    return envelope;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s HOST PORT CA_PEM CERT_PEM KEY_PEM [ROUNDS]\n", argv[0]);
        return 2;
    }
    const char *host = argv[1], *port = argv[2];
    int rounds = argc > 6 ? atoi(argv[6]) : 3;

    SSL_CTX *context = SSL_CTX_new(TLS_client_method());
    if (!context) fail("TLS setup", "SSL_CTX_new");
    SSL_CTX_set_min_proto_version(context, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(context, TLS1_3_VERSION);
    if (SSL_CTX_load_verify_locations(context, argv[3], NULL) != 1) fail("TLS setup", "cannot load the CA certificate");
    if (SSL_CTX_use_certificate_file(context, argv[4], SSL_FILETYPE_PEM) != 1) fail("TLS setup", "cannot load the client certificate");
    if (SSL_CTX_use_PrivateKey_file(context, argv[5], SSL_FILETYPE_PEM) != 1) fail("TLS setup", "cannot load the private key");
    SSL_CTX_set_verify(context, SSL_VERIFY_PEER, NULL);
    static const unsigned char alpn[] = "\x07loupe/1";
    if (SSL_CTX_set_alpn_protos(context, alpn, sizeof alpn - 1) != 0) fail("TLS setup", "ALPN");

    int fd = tcp_connect(host, port);
    SSL *ssl = SSL_new(context);
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, host);
    if (SSL_set1_host(ssl, host) != 1) fail("TLS setup", "host name check");
    if (SSL_connect(ssl) != 1) fail("TLS handshake", "the manager's certificate or ours was refused");
    const unsigned char *negotiated = NULL;
    unsigned int negotiated_length = 0;
    SSL_get0_alpn_selected(ssl, &negotiated, &negotiated_length);
    if (negotiated_length != 7 || memcmp(negotiated, "loupe/1", 7) != 0) fail("TLS handshake", "ALPN loupe/1 not negotiated");

    /* Hello -> Welcome */
    Loupe__V1__Hello hello = LOUPE__V1__HELLO__INIT;
    hello.protocol_version = 1;
    hello.software_version = "loupe-c-client 1.0";
    Loupe__V1__Envelope request = LOUPE__V1__ENVELOPE__INIT;
    request.request_id = 1;
    request.body_case = LOUPE__V1__ENVELOPE__BODY_HELLO;
    request.hello = &hello;
    send_envelope(ssl, &request);
    Loupe__V1__Envelope *reply = receive_envelope(ssl);
    if (reply->reply_to != 1 || reply->body_case != LOUPE__V1__ENVELOPE__BODY_WELCOME) fail("handshake", "expected Welcome in reply to Hello");
    printf("welcome identity=%s role=%d manager=%s heartbeat_ms=%u\n", reply->welcome->peer_identity, reply->welcome->peer_role,
           reply->welcome->manager_id, reply->welcome->heartbeat_interval_ms);
    loupe__v1__envelope__free_unpacked(reply, NULL);

    /* Heartbeats and echoes */
    int heartbeats_received = 0, echoes = 0;
    for (int round = 0; round < rounds; round++) {
        Loupe__V1__Heartbeat heartbeat = LOUPE__V1__HEARTBEAT__INIT;
        heartbeat.sequence = (uint64_t)round + 1;
        heartbeat.sent_at_unix_ms = (uint64_t)time(NULL) * 1000u;
        Loupe__V1__Envelope beat = LOUPE__V1__ENVELOPE__INIT;
        beat.body_case = LOUPE__V1__ENVELOPE__BODY_HEARTBEAT;
        beat.heartbeat = &heartbeat;
        send_envelope(ssl, &beat);

        char text[64];
        snprintf(text, sizeof text, "round %d from C", round);
        Loupe__V1__Echo echo = LOUPE__V1__ECHO__INIT;
        echo.payload.data = (uint8_t *)text;
        echo.payload.len = strlen(text);
        Loupe__V1__Envelope ask = LOUPE__V1__ENVELOPE__INIT;
        ask.request_id = 100 + (uint64_t)round;
        ask.body_case = LOUPE__V1__ENVELOPE__BODY_ECHO;
        ask.echo = &echo;
        send_envelope(ssl, &ask);
        for (;;) {
            Loupe__V1__Envelope *incoming = receive_envelope(ssl);
            int done = 0;
            if (incoming->body_case == LOUPE__V1__ENVELOPE__BODY_HEARTBEAT) {
                heartbeats_received++;
            } else if (incoming->reply_to == ask.request_id && incoming->body_case == LOUPE__V1__ENVELOPE__BODY_ECHO) {
                if (incoming->echo->payload.len != echo.payload.len ||
                    memcmp(incoming->echo->payload.data, text, echo.payload.len) != 0) fail("echo", "payload differs");
                echoes++;
                done = 1;
            }
            loupe__v1__envelope__free_unpacked(incoming, NULL);
            if (done) break;
        }
    }
    /* Wait for the manager's own heartbeat if none has come yet. */
    while (heartbeats_received == 0) {
        Loupe__V1__Envelope *incoming = receive_envelope(ssl);
        if (incoming->body_case == LOUPE__V1__ENVELOPE__BODY_HEARTBEAT) heartbeats_received++;
        loupe__v1__envelope__free_unpacked(incoming, NULL);
    }
    printf("echoes=%d heartbeats_received=%d\n", echoes, heartbeats_received);

    Loupe__V1__Goodbye goodbye = LOUPE__V1__GOODBYE__INIT;
    goodbye.reason = "C client done";
    Loupe__V1__Envelope bye = LOUPE__V1__ENVELOPE__INIT;
    bye.body_case = LOUPE__V1__ENVELOPE__BODY_GOODBYE;
    bye.goodbye = &goodbye;
    send_envelope(ssl, &bye);
    SSL_shutdown(ssl);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(context);
    printf("goodbye\n");
    return 0;
}
