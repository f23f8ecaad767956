"""Runs inside the sandbox process (standard library only; see sandbox.py for the guarantees).

Reads a JSON job on stdin, confines itself before any untrusted code runs, executes the
module's statements and then the examples, and writes one JSON line per finished example
to the result file that the parent opened for it, so a timeout still leaves partial results.
"""
import ctypes
import json
import os
import resource
import sys

CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET = 0x10000000, 0x00020000, 0x40000000
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
SYS_MOUNT_SETATTR = 442  # same number on x86_64 and arm64


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _limit(memory_mb: int, cpu_s: int, file_mb: int) -> None:
    for res, value in ((resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu_s),
                       (resource.RLIMIT_FSIZE, file_mb << 20), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NOFILE, 256)):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def _confine_kernel(work: str) -> str:
    """New network namespace (no interfaces but a down loopback) and a mount namespace where
    every mount is read-only except `work`. Returns what was achieved."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long

    def ok(r: int) -> bool:
        return r == 0

    uid, gid = os.getuid(), os.getgid()
    if not ok(libc.unshare(CLONE_NEWNS | CLONE_NEWNET)):
        # Not privileged: a user namespace grants these for ourselves only, where allowed.
        if not ok(libc.unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET)):
            return "none"
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                           ("/proc/self/gid_map", f"{gid} {gid} 1")):
            try:
                with open(path, "w") as f:
                    f.write(text)
            except OSError:
                pass
    if not ok(libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None)):
        return "network"
    ro = _MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(ro), ctypes.sizeof(ro)) != 0:
        return "network"
    w = work.encode()
    rw = _MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    if not ok(libc.mount(w, w, None, MS_BIND, None)) or \
            libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, w, 0, ctypes.byref(rw), ctypes.sizeof(rw)) != 0:
        return "network+read-only (no writable work dir)"
    return "network+filesystem"


def _install_guard(work: str) -> None:
    """An audit hook that refuses what a checked function has no business doing. It also
    covers kernels where the namespaces above are not allowed."""
    root = os.path.realpath(work)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "os.mkfifo", "os.mknod"}
    refused = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind",
               "socket.getaddrinfo", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
               "resource.setrlimit", "sys.addaudithook", "os.setuid", "os.chroot", "pty.spawn"}

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an fd we already hold
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep)

    def hook(event, args):
        if event in refused:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or \
                      (isinstance(flags, int) and flags & write_flags)
            if writing and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} is not allowed (only inside the sandbox)")
        elif event in path_events:
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                    raise PermissionError(f"sandbox: {event} on {a!r} is not allowed")

    sys.addaudithook(hook)


def main() -> None:
    job = json.loads(sys.stdin.read())
    out = open(job["result"], "w", buffering=1)
    _limit(job["memory_mb"], job["cpu_s"], job["file_mb"])
    isolation = _confine_kernel(job["work"]) if job.get("namespaces", True) else "none"
    os.chdir(job["work"])
    os.environ.update(HOME=job["work"], TMPDIR=job["work"], TMP=job["work"], TEMP=job["work"])
    sys.dont_write_bytecode = True
    sys.path[:0] = job.get("paths", [])
    import ast
    import doctest  # noqa: F401  (everything the runner needs is imported before the guard)
    import io  # noqa: F401
    import traceback
    _install_guard(job["work"])
    out.write(json.dumps({"isolation": isolation}) + "\n")

    namespace = {"__name__": "__tandem_check__", "__builtins__": __builtins__}
    for stmt in job["setup"]:
        try:
            exec(compile(stmt["code"], stmt.get("name", "<file>"), "exec"), namespace)
        except BaseException as e:  # noqa: BLE001  (the user's code may raise anything)
            out.write(json.dumps({"setup_error": f"{stmt.get('what', 'statement')}: "
                                  f"{type(e).__name__}: {str(e)[:300]}", "fatal": stmt.get("fatal", False)}) + "\n")
            if stmt.get("fatal"):
                return

    class Runner(doctest.DocTestRunner):
        def report_success(self, o, test, example, got):
            out.write(json.dumps({"example": test.examples.index(example), "ok": True}) + "\n")

        def report_failure(self, o, test, example, got):
            out.write(json.dumps({"example": test.examples.index(example), "ok": False,
                                  "got": got[-300:]}) + "\n")

        def report_unexpected_exception(self, o, test, example, exc_info):
            err = traceback.format_exception_only(exc_info[0], exc_info[1])[-1].strip()
            out.write(json.dumps({"example": test.examples.index(example), "ok": False, "got": err[:300]}) + "\n")

    class Checker(doctest.OutputChecker):
        """doctest's comparison, then equal values: `["a"]` in a docstring matches `['a']`."""

        def check_output(self, want, got, optionflags):
            if super().check_output(want, got, optionflags):
                return True
            try:
                a, b = ast.literal_eval(want.strip()), ast.literal_eval(got.strip())
            except Exception:
                return False
            return type(a) is type(b) and a == b  # `True` is not `1`, `2.0` is not `2`

    examples = [doctest.Example(e["source"], e["want"], exc_msg=e.get("exc_msg"), lineno=e.get("line", 0),
                                options={int(k): bool(v) for k, v in e.get("options", [])}) for e in job["examples"]]
    test = doctest.DocTest(examples, namespace, "docstring examples", "<docstring>", 0, None)
    runner = Runner(checker=Checker(), verbose=False, optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda s: None, clear_globs=False)
    out.write(json.dumps({"done": True}) + "\n")


if __name__ == "__main__":
    main()
