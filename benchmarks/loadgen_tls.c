/* loadgen_tls.c - OpenSSL client sessions for tls_loadgen (see loadgen_tls.h).
 *
 * Read-ahead is on: a recv() takes every record the socket holds at once
 * instead of a 5-byte header and then its body, so the client spends fewer
 * system calls per echo than the servers it measures. Records read ahead
 * sit in OpenSSL's buffer where epoll cannot see them, which is why
 * tls_recv() decrypts all of them before it returns.
 */
#define _GNU_SOURCE
#include "loadgen_tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct tls_session {
    SSL *ssl;
    bool more; /* tls_recv() stopped with its buffer full and records left */
};

static SSL_CTX *client_ctx;
static const char *verify_host;
static char last_error[256];

const char *tls_last_error(void) { return last_error; }

static void remember_error(const char *what, int ssl_error)
{
    unsigned long code = ERR_get_error();
    if (code) {
        char reason[200];
        ERR_error_string_n(code, reason, sizeof reason);
        snprintf(last_error, sizeof last_error, "%s: %s", what, reason);
    } else if (ssl_error == SSL_ERROR_SYSCALL && errno) {
        snprintf(last_error, sizeof last_error, "%s: %s", what, strerror(errno));
    } else {
        snprintf(last_error, sizeof last_error, "%s: the peer closed the connection "
                 "without close_notify (SSL error %d)", what, ssl_error);
    }
    ERR_clear_error();
    errno = EPROTO;
}

void tls_setup(const char *cafile, const char *host)
{
    client_ctx = SSL_CTX_new(TLS_client_method());
    if (!client_ctx) {
        fprintf(stderr, "tls_loadgen: SSL_CTX_new failed\n");
        exit(1);
    }
    SSL_CTX_set_mode(client_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE
                                 | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_read_ahead(client_ctx, 1);
    /* Every connection is a full handshake: the servers are measured fresh. */
    SSL_CTX_set_session_cache_mode(client_ctx, SSL_SESS_CACHE_OFF);
    if (cafile) {
        if (SSL_CTX_load_verify_locations(client_ctx, cafile, NULL) != 1) {
            fprintf(stderr, "tls_loadgen: cannot load CA file %s\n", cafile);
            exit(1);
        }
        SSL_CTX_set_verify(client_ctx, SSL_VERIFY_PEER, NULL);
        verify_host = host;
    }
}

struct tls_session *tls_attach(int fd)
{
    struct tls_session *s = calloc(1, sizeof *s);
    if (!s || !(s->ssl = SSL_new(client_ctx)) || SSL_set_fd(s->ssl, fd) != 1) {
        fprintf(stderr, "tls_loadgen: out of memory for a session\n");
        exit(1);
    }
    if (verify_host)
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(s->ssl), verify_host);
    SSL_set_connect_state(s->ssl);
    return s;
}

int tls_handshake(struct tls_session *s, bool *wants_write)
{
    ERR_clear_error();
    int r = SSL_do_handshake(s->ssl);
    if (r == 1) return 1;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        *wants_write = e == SSL_ERROR_WANT_WRITE;
        return 0;
    }
    remember_error("handshake", e);
    return -1;
}

ssize_t tls_send(struct tls_session *s, const void *buf, size_t n)
{
    ERR_clear_error();
    int r = SSL_write(s->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
    if (r > 0) return r;
    int e = SSL_get_error(s->ssl, r);
    if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
        errno = EAGAIN;
        return -1;
    }
    remember_error("SSL_write", e);
    return -1;
}

ssize_t tls_recv(struct tls_session *s, void *buf, size_t n)
{
    size_t got = 0;
    s->more = false;
    do {
        ERR_clear_error();
        size_t room = n - got;
        int r = SSL_read(s->ssl, (char *)buf + got, room > INT_MAX ? INT_MAX : (int)room);
        if (r > 0) {
            got += (size_t)r;
            continue;
        }
        int e = SSL_get_error(s->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) break;
        if (got) return (ssize_t)got; /* the end or the error again on the next call */
        if (e == SSL_ERROR_ZERO_RETURN) return 0;
        remember_error("SSL_read", e);
        return -1;
    } while (got < n && SSL_has_pending(s->ssl));
    if (!got) {
        errno = EAGAIN;
        return -1;
    }
    s->more = got == n && SSL_has_pending(s->ssl);
    return (ssize_t)got;
}

bool tls_pending(const struct tls_session *s) { return s->more; }

const char *tls_describe(const struct tls_session *s)
{
    static char text[128];
    snprintf(text, sizeof text, "%s %s", SSL_get_version(s->ssl),
             SSL_CIPHER_get_name(SSL_get_current_cipher(s->ssl)));
    return text;
}
