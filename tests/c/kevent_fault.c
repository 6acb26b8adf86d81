/* An LD_PRELOAD shim for tests/test_kqueue_engine.py: kevent() refuses to add
 * the filter named in $GAIO_KEVENT_FAIL ("read" or "write") with ENOMEM, as a
 * kernel out of knote memory does; every other call goes to the real
 * kevent() (libkqueue's, on Linux). Like a kernel given no event list, it
 * applies the changes before the refused one and then returns -1.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/event.h>

typedef int kevent_fn(int, const struct kevent *, int, struct kevent *, int, const struct timespec *);

int kevent(int kq, const struct kevent *changes, int nchanges, struct kevent *events, int nevents,
           const struct timespec *timeout)
{
    static kevent_fn *real;
    if (!real) {
        /* libkqueue came with gaio._native, dlopen()ed without RTLD_GLOBAL:
         * RTLD_NEXT does not see it, its handle does. A BSD libc: RTLD_NEXT. */
        void *lib = dlopen("libkqueue.so.0", RTLD_LAZY | RTLD_NOLOAD);
        real = (kevent_fn *)dlsym(lib ? lib : RTLD_NEXT, "kevent");
        if (!real)
            abort();
    }
    const char *fail = getenv("GAIO_KEVENT_FAIL");
    if (fail && *fail) {
        short filter = strcmp(fail, "read") == 0 ? EVFILT_READ : EVFILT_WRITE;
        for (int i = 0; i < nchanges; i++) {
            if (!(changes[i].flags & EV_ADD) || changes[i].filter != filter)
                continue;
            if (i > 0 && real(kq, changes, i, NULL, 0, NULL) < 0)
                return -1;
            errno = ENOMEM;
            return -1;
        }
    }
    return real(kq, changes, nchanges, events, nevents, timeout);
}
