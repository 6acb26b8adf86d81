"""What /proc says about a server process: memory, threads, descriptors.

(Its CPU time is read by the load generator itself, over its measured window.)
"""
import os


def _status_field(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split()[1]
    raise KeyError(field)


def rss_bytes(pid):
    """Resident set size now (VmRSS)."""
    return int(_status_field(pid, "VmRSS")) * 1024


def peak_rss_bytes(pid):
    """Largest resident set size so far (VmHWM)."""
    return int(_status_field(pid, "VmHWM")) * 1024


def threads(pid):
    return int(_status_field(pid, "Threads"))


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))

