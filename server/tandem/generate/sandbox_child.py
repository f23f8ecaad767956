"""Runs inside the sandbox process (standard library only; see sandbox.py for the guarantees
and the threat model).

Order matters, and is the point of this file:
1. read the job (one JSON line on stdin) and import everything the harness needs, while
   `sys.path` holds only the interpreter's own directories (`-I`: no script folder, no
   user site, no PYTHON* variables);
2. confine: rlimits, network + mount namespaces, no_new_privs, Landlock, capabilities
   dropped, seccomp (confine.py), then the audit hook;
3. only then append the document's folder to `sys.path` (after the standard library and
   site-packages, so a `token.py` or `ast.py` beside the document never replaces theirs);
4. run the module's statements, then answer the parent one example at a time: the parent
   sends an example's source with a fresh nonce, the child replies with that nonce, the
   output and the exception line. The expected output never enters this process; the parent
   compares, and ignores every line that does not carry the nonce it is waiting for.
"""
import ast  # noqa: F401  (imported before any user path exists, like everything below)
import doctest
import importlib.util
import io
import json
import os
import resource
import sys
import traceback

CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID = 0x10000000, 0x00020000, 0x40000000, 0x20000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 1, 2, 4, 8, 4096, 16384, 1 << 18
AT_FDCWD, AT_RECURSIVE, MOUNT_ATTR_RDONLY = -100, 0x8000, 1
SYS_MOUNT_SETATTR = 442  # same number on x86_64 and arm64
AF_UNIX = 1
MAX_GOT = 64 * 1024  # the parent treats longer output as a failure; it never needs more


def _load_confine():
    spec = importlib.util.spec_from_file_location("_tandem_confine", os.path.join(os.path.dirname(__file__),
                                                                                  "confine.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _limit(memory_mb: int, cpu_s: int, file_mb: int) -> None:
    for res, value in ((resource.RLIMIT_AS, memory_mb << 20), (resource.RLIMIT_CPU, cpu_s),
                       (resource.RLIMIT_FSIZE, file_mb << 20), (resource.RLIMIT_CORE, 0),
                       (resource.RLIMIT_NOFILE, 256)):
        try:
            resource.setrlimit(res, (value, value))
        except (ValueError, OSError):
            pass


def _namespaces(work: str, chan: "_Channel") -> list[str]:
    """New network namespace (no interfaces but a down loopback), PID namespace (this
    process forks once: the child, pid 1 there, runs the check; when it ends the kernel kills
    anything left in the namespace) and a mount namespace where every mount is read-only
    except `work`, with a /proc of the new PID namespace. Returns the layers achieved."""
    import ctypes

    class MountAttr(ctypes.Structure):
        _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                    ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]

    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    uid, gid = os.getuid(), os.getgid()
    base = CLONE_NEWNS | CLONE_NEWNET
    for flags in (base | CLONE_NEWPID, base, CLONE_NEWUSER | base | CLONE_NEWPID, CLONE_NEWUSER | base):
        if libc.unshare(flags) == 0:
            break
    else:
        return []
    if flags & CLONE_NEWUSER:  # not privileged: a user namespace grants these for ourselves only
        for path, text in (("/proc/self/setgroups", "deny"), ("/proc/self/uid_map", f"{uid} {uid} 1"),
                           ("/proc/self/gid_map", f"{gid} {gid} 1")):
            try:
                with open(path, "w") as f:
                    f.write(text)
            except OSError:
                pass
    layers = ["network"]
    if flags & CLONE_NEWPID:
        _become_init(chan)
        layers.append("pid")
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        return layers
    if flags & CLONE_NEWPID:  # a /proc that shows this namespace only (best effort)
        libc.mount(b"proc", b"/proc", b"proc", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    ro = MountAttr(MOUNT_ATTR_RDONLY, 0, 0, 0)
    if libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, b"/", AT_RECURSIVE, ctypes.byref(ro), ctypes.sizeof(ro)) != 0:
        return layers
    w = work.encode()
    rw = MountAttr(0, MOUNT_ATTR_RDONLY, 0, 0)
    if libc.mount(w, w, None, MS_BIND, None) != 0 or \
            libc.syscall(SYS_MOUNT_SETATTR, AT_FDCWD, w, 0, ctypes.byref(rw), ctypes.sizeof(rw)) != 0:
        return layers + ["read-only"]
    return layers + ["filesystem"]


def _become_init(chan: "_Channel") -> None:
    """After unshare(CLONE_NEWPID): fork; the child goes on as pid 1 of the new namespace,
    this process only waits for it and exits with its status. It lets go of the channel first,
    so the parent sees end-of-file as soon as the check process is gone."""
    pid = os.fork()
    if pid == 0:
        return
    os.close(chan.rfd)
    os.close(chan.wfd)
    try:
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
    except OSError:
        code = 1
    os._exit(code if code >= 0 else 128 - code)


# Read-only for everyone's checks: shared libraries an extension module may load, the dynamic
# loader's cache, time zones, random devices. Nothing here is a user's file.
SYSTEM_READ = ["/lib", "/lib64", "/usr/lib", "/usr/lib64", "/usr/local/lib", "/etc/ld.so.cache", "/etc/localtime",
               "/usr/share/zoneinfo", "/dev/zero", "/dev/urandom", "/dev/random"]


def _interpreter_paths(home: str | None) -> list[str]:
    """This interpreter's own directories (standard library, lib-dynload, site-packages and
    what their .pth files add, libpython's folder), as `-I` left them: no user path yet.
    A directory that is the root, the home folder or above it is never granted whole."""
    import sysconfig

    found = [p for p in sys.path if os.path.isabs(p)]
    found += [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    found += [d for d in (sysconfig.get_config_var("LIBDIR"),) if d]
    home = os.path.realpath(home) if home else None
    out = []
    for p in found:
        r = os.path.realpath(p)
        if r == "/" or (home and (home == r or home.startswith(r.rstrip("/") + "/"))):
            continue
        out.append(r)
    return out


def _confine(job: dict, confine, chan: "_Channel") -> list[str]:
    """Every kernel layer, in the order they need each other (namespaces need capabilities,
    Landlock wants no_new_privs, seccomp comes last so the calls above are still allowed).
    A layer the kernel (or the platform) refuses is left out of the answer, not fatal."""
    work = job["work"]

    def attempt(f, *args):
        try:
            return f(*args)
        except Exception:  # noqa: BLE001  (no prctl/unshare in this libc, an unknown kernel...)
            return None

    layers = attempt(_namespaces, work, chan) or []
    attempt(confine.no_new_privs)
    if attempt(confine.landlock, _interpreter_paths(job.get("home")) + SYSTEM_READ + job.get("read", []),
               [work, os.devnull]):
        layers.append("landlock")
    if attempt(confine.drop_capabilities):
        layers.append("caps")
    if attempt(confine.install_seccomp):
        layers.append("seccomp")
    return layers


def _install_guard(work: str) -> None:
    """An audit hook that refuses what a checked function has no business doing, with a clear
    message. Not the boundary (the kernel layers are); it also covers kernels without them."""
    root = os.path.realpath(work)
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    path_events = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.link",
                   "os.symlink", "os.truncate", "os.utime", "shutil.rmtree", "os.mkfifo", "os.mknod"}
    refused = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
               "os.forkpty", "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind",
               "socket.getaddrinfo", "socket.sendto", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata",
               "resource.setrlimit", "resource.prlimit", "sys.addaudithook", "os.setuid", "os.chroot",
               "pty.spawn"}

    def inside(path) -> bool:
        if isinstance(path, int):
            return True  # an fd we already hold
        try:
            p = os.path.realpath(os.fsdecode(path))
        except Exception:
            return False
        return p == root or p.startswith(root + os.sep)

    def hook(event, args):
        if event == "socket.__new__" and len(args) > 1 and args[1] == AF_UNIX:
            return  # socketpair() for asyncio's event loop; connect/bind stay refused
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


class _Channel:
    """The harness's private ends of the parent's pipes; fds 0 and 1 become /dev/null so that
    user code reading stdin or printing to fd 1 cannot touch the protocol by accident."""

    def __init__(self) -> None:
        self.wfd = os.dup(1)  # fd 3, the 'result descriptor' hostile code tries first
        self.rfd = os.dup(0)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
        self.buf = b""

    def read(self) -> dict | None:
        while b"\n" not in self.buf:
            chunk = os.read(self.rfd, 1 << 16)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def write(self, rec: dict) -> None:
        data = (json.dumps(rec) + "\n").encode()
        while data:
            data = data[os.write(self.wfd, data):]


def _run_one(source: str, namespace: dict, flags: int) -> tuple[str, str | None]:
    """doctest's way of running one example: 'single' mode, stdout captured, the last line of
    an exception's traceback. Returns (output, exception line or None)."""
    buf = io.StringIO()
    saved = sys.stdout
    sys.stdout = buf
    sys.displayhook = sys.__displayhook__
    exc = None
    try:
        exec(compile(source, "<doctest>", "single", flags, True), namespace)
    except BaseException as e:  # noqa: BLE001  (the user's code may raise anything, SystemExit too)
        exc = traceback.format_exception_only(type(e), e)[-1]
    finally:
        sys.stdout = saved
    got = buf.getvalue()
    if got and not got.endswith("\n"):
        got += "\n"
    return got[:MAX_GOT + 1], (exc[:MAX_GOT + 1] if exc is not None else None)


def main() -> None:
    chan = _Channel()
    job = chan.read()
    if job is None:
        return
    confine = _load_confine()
    _limit(job["memory_mb"], job["cpu_s"], job["file_mb"])
    layers = _confine(job, confine, chan) if job.get("kernel", True) else []
    os.chdir(job["work"])
    os.environ.update(HOME=job["work"], TMPDIR=job["work"], TMP=job["work"], TEMP=job["work"])
    sys.dont_write_bytecode = True
    sink = open(os.devnull, "w")  # opened before the hook, which refuses writing outside the directory
    if job.get("audit_hook", True):
        _install_guard(job["work"])
    sys.path.extend(job.get("paths", []))  # after the standard library and site-packages
    chan.write({"nonce": job["nonce"], "layers": layers})  # before any user code has run

    namespace = {"__name__": "__tandem_check__", "__builtins__": __builtins__}
    errors, fatal = [], False
    sys.stdout = sink  # what the module prints while it loads goes nowhere
    for stmt in job["setup"]:
        try:
            exec(compile(stmt["code"], stmt.get("name", "<file>"), "exec"), namespace)
        except BaseException as e:  # noqa: BLE001
            line = traceback.format_exception_only(type(e), e)[-1].strip()  # survives a failing __str__
            errors.append(f"{stmt.get('what', 'statement')}: {line[:300]}")
            if stmt.get("fatal"):
                fatal = True
                break
    sys.stdout = sys.__stdout__
    chan.write({"nonce": job["setup_nonce"], "setup_errors": errors, "fatal": fatal})
    if fatal:
        return
    flags = doctest._extract_future_flags(namespace)
    while (req := chan.read()) is not None:
        got, exc = _run_one(req["source"], namespace, flags)
        chan.write({"nonce": req["nonce"], "got": got, "exc": exc})


if __name__ == "__main__":
    main()
