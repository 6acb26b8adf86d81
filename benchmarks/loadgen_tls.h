/* loadgen_tls.h - the TLS transport of tls_loadgen (loadgen.c built with
 * -DLOADGEN_TLS and loadgen_tls.c, linked with OpenSSL's libssl).
 *
 * The calls mirror the socket calls they replace in loadgen.c, so the rr and
 * stream loops stay the same code: -1 with errno EAGAIN when the session
 * must wait for the socket, 0 at the peer's end. A failure sets errno EPROTO
 * and tls_last_error() says what OpenSSL said.
 */
#ifndef LOADGEN_TLS_H
#define LOADGEN_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct tls_session;

/* The one client context: verify the server against `cafile` (and `host`, an
 * IP address) when cafile is not NULL, else accept any certificate. */
void tls_setup(const char *cafile, const char *host);

/* A client session on the connected, non-blocking socket fd. */
struct tls_session *tls_attach(int fd);

/* One step of the handshake: 1 done, 0 waiting (*wants_write: for the socket
 * to take bytes, else for bytes to arrive), -1 failed. */
int tls_handshake(struct tls_session *s, bool *wants_write);

ssize_t tls_send(struct tls_session *s, const void *buf, size_t n);

/* Plaintext into buf, as much as the socket and the session hold (up to n). */
ssize_t tls_recv(struct tls_session *s, void *buf, size_t n);

/* Plaintext the session decrypted and has not handed out: epoll will not
 * report it, so the caller reads again. */
bool tls_pending(const struct tls_session *s);

/* "TLSv1.3 TLS_AES_256_GCM_SHA384" once handshaken. */
const char *tls_describe(const struct tls_session *s);

const char *tls_last_error(void);

#endif
