/* An LD_PRELOAD shim for tests/test_tls_recv_calls.py: counts the process's
 * recv(), recvfrom() and recvmsg() calls (the native engines' and the python
 * engine's receives alike), every call going on to the real one.
 * gaio_test_recv_calls() returns the count so far and starts it again. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/types.h>

static atomic_long calls;

long gaio_test_recv_calls(void)
{
    return atomic_exchange(&calls, 0);
}

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f)
        abort();
    return f;
}

ssize_t recv(int fd, void *buf, size_t len, int flags)
{
    static ssize_t (*fn)(int, void *, size_t, int);
    if (!fn)
        fn = (ssize_t (*)(int, void *, size_t, int))real("recv");
    atomic_fetch_add(&calls, 1);
    return fn(fd, buf, len, flags);
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
    static ssize_t (*fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
    if (!fn)
        fn = (ssize_t (*)(int, void *, size_t, int, struct sockaddr *, socklen_t *))real("recvfrom");
    atomic_fetch_add(&calls, 1);
    return fn(fd, buf, len, flags, from, fromlen);
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    static ssize_t (*fn)(int, struct msghdr *, int);
    if (!fn)
        fn = (ssize_t (*)(int, struct msghdr *, int))real("recvmsg");
    atomic_fetch_add(&calls, 1);
    return fn(fd, msg, flags);
}
