"""Kernel confinement for the sandbox's child process (standard library and ctypes only: the
child loads this file by path, before any user code runs; nothing here is imported by the
language server itself except for tests).

Three layers, each best-effort (the child reports which ones took):

- **Landlock** (Linux >= 5.13, unprivileged): reads only beneath the interpreter's own paths,
  the system's shared libraries, the workspace; reads and writes only beneath the check's
  temporary directory. From ABI 4 every TCP bind/connect is refused, from ABI 6 signals to
  processes outside the check and abstract UNIX sockets are refused.
- **Capabilities**: all dropped (effective, permitted, inheritable, ambient, bounding set)
  and the securebits locked, so uid 0 means nothing special any more; `no_new_privs` set.
- **seccomp-bpf**: a deny-list filter written here, not with libseccomp. Why by hand: the
  filter is about 350 instructions of a fixed shape (arch check, a compare per syscall, a
  few first-argument checks: "this process only", "threads only"), the child must not depend on a system package (libseccomp.so, python3-
  seccomp) or on a compiled wheel being installable on the user's machine, and the PyPI
  bindings (`seccomp`, `pyseccomp`) either need a C build or wrap that same system library.
  Deny-list rather than allow-list: the interpreter and any extension module the file
  imports may use hundreds of syscalls that differ by libc and Python version; what the
  filter refuses is the short list of ways out (process creation, signals, ptrace, other
  processes' limits and memory, namespaces, mounts, io_uring which bypasses seccomp, kernel
  keyrings and modules, sockets). Other architectures' syscall ABIs on the same kernel
  (i386 `int 0x80`, x32) are refused wholesale, so a number cannot be smuggled through them.
"""
from __future__ import annotations

import ctypes
import os
import platform
import struct

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.prctl.restype = ctypes.c_int

PR_SET_NO_NEW_PRIVS, PR_GET_NO_NEW_PRIVS = 38, 39
PR_CAPBSET_READ, PR_CAPBSET_DROP, PR_SET_SECUREBITS, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 23, 24, 28, 47, 4
SECURE_ALL_LOCKED_NO_KEEP_CAPS = 0xEF  # NOROOT, NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE (+ locks), KEEP_CAPS locked off

# --- seccomp ---------------------------------------------------------------------------------

AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64 = 0xC000003E, 0xC00000B7
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_ALLOW, SECCOMP_RET_ERRNO, SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
EPERM, ENOSYS = 1, 38
SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC = 1, 1
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
CLONE_THREAD = 0x00010000
CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x80

# Refused outright (EPERM). Numbers: x86_64, aarch64 (None where the call does not exist).
DENY = {
    "fork": (57, None), "vfork": (58, None), "execve": (59, 221), "execveat": (322, 281),
    "tkill": (200, 130), "pidfd_open": (434, 434), "pidfd_send_signal": (424, 424), "pidfd_getfd": (438, 438),
    "ptrace": (101, 117), "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "kcmp": (312, 272),
    "process_madvise": (440, 440), "process_mrelease": (448, 448),
    "unshare": (272, 97), "setns": (308, 268), "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41),
    "chroot": (161, 51), "mount_setattr": (442, 442), "move_mount": (429, 429), "open_tree": (428, 428),
    "open_tree_attr": (467, 467), "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432),
    "fspick": (433, 433), "open_by_handle_at": (304, 265),
    "bpf": (321, 280), "perf_event_open": (298, 241), "userfaultfd": (323, 282),
    "io_uring_setup": (425, 425), "io_uring_enter": (426, 426), "io_uring_register": (427, 427),
    "keyctl": (250, 219), "add_key": (248, 217), "request_key": (249, 218),
    "init_module": (175, 105), "finit_module": (313, 273), "delete_module": (176, 106),
    "kexec_load": (246, 104), "kexec_file_load": (320, 294), "reboot": (169, 142), "quotactl": (179, 60),
    "swapon": (167, 224), "swapoff": (168, 225), "acct": (163, 89),
    "setpriority": (141, 140), "ioprio_set": (251, 30),
    "socket": (41, 198), "connect": (42, 203),
}
# Allowed only when the first argument names this process (its pid, or 0 where 0 means "self").
SELF_ONLY = {
    "kill": (62, 129), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138), "rt_tgsigqueueinfo": (297, 240),
}
SELF_OR_ZERO = {
    "prlimit64": (302, 261), "sched_setaffinity": (203, 122), "sched_setscheduler": (144, 119),
    "sched_setparam": (142, 118), "sched_setattr": (314, 274), "migrate_pages": (256, 238),
    "move_pages": (279, 239),
}
CLONE = (56, 220)  # threads only: CLONE_THREAD set and no namespace flag
CLONE3 = (435, 435)  # its flags are in memory seccomp cannot read: ENOSYS, and libc falls back to clone

LD_W_ABS, JA, JEQ_K, JGE_K, JSET_K, RET_K = 0x20, 0x05, 0x15, 0x35, 0x45, 0x06
OFF_NR, OFF_ARCH, OFF_ARG0 = 0, 4, 16  # struct seccomp_data; args are little-endian u64, low word first


def _ins(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _arch_block(which: int, pid: int) -> list[bytes]:
    """Instructions for one architecture (which: 0 x86_64, 1 aarch64), starting with the
    syscall number load; every path ends in a return."""
    p = [_ins(LD_W_ABS, OFF_NR)]
    if which == 0:
        p += [_ins(JGE_K, X32_SYSCALL_BIT, 0, 1), _ins(RET_K, SECCOMP_RET_ERRNO | EPERM)]
    for nrs in DENY.values():
        if nrs[which] is not None:
            p += [_ins(JEQ_K, nrs[which], 0, 1), _ins(RET_K, SECCOMP_RET_ERRNO | EPERM)]
    p += [_ins(JEQ_K, CLONE3[which], 0, 1), _ins(RET_K, SECCOMP_RET_ERRNO | ENOSYS)]
    for nrs in SELF_ONLY.values():  # nr? -> load arg0; == pid -> allow; else deny; then reload nr
        p += [_ins(JEQ_K, nrs[which], 0, 4), _ins(LD_W_ABS, OFF_ARG0), _ins(JEQ_K, pid, 0, 1),
              _ins(RET_K, SECCOMP_RET_ALLOW), _ins(RET_K, SECCOMP_RET_ERRNO | EPERM)]
    for nrs in SELF_OR_ZERO.values():
        p += [_ins(JEQ_K, nrs[which], 0, 5), _ins(LD_W_ABS, OFF_ARG0), _ins(JEQ_K, pid, 1, 0),
              _ins(JEQ_K, 0, 0, 1), _ins(RET_K, SECCOMP_RET_ALLOW), _ins(RET_K, SECCOMP_RET_ERRNO | EPERM)]
    # clone: a thread (CLONE_THREAD) that creates no namespace is allowed; a process is not.
    p += [_ins(JEQ_K, CLONE[which], 0, 4), _ins(LD_W_ABS, OFF_ARG0), _ins(JSET_K, CLONE_NS_FLAGS, 1, 0),
          _ins(JSET_K, CLONE_THREAD, 1, 0), _ins(RET_K, SECCOMP_RET_ERRNO | EPERM)]
    p += [_ins(RET_K, SECCOMP_RET_ALLOW)]
    return p


def seccomp_program(pid: int) -> bytes:
    """The whole BPF program: dispatch on the architecture, refuse any other ABI."""
    x86, arm = _arch_block(0, pid), _arch_block(1, pid)
    # 0 load arch; 1 x86_64? -> 5; 2 aarch64? -> 4; 3 anything else (i386 int 0x80, ...) dies;
    # 4 jump over the x86_64 block to the aarch64 one (BPF jumps only forward).
    head = [_ins(LD_W_ABS, OFF_ARCH),
            _ins(JEQ_K, AUDIT_ARCH_X86_64, 3, 0),
            _ins(JEQ_K, AUDIT_ARCH_AARCH64, 1, 0),
            _ins(RET_K, SECCOMP_RET_KILL_PROCESS),
            _ins(JA, len(x86))]
    return b"".join(head + x86 + arm)


def install_seccomp() -> bool:
    machine = platform.machine()
    if machine not in ("x86_64", "aarch64", "arm64"):
        return False
    prog = seccomp_program(os.getpid())
    n = len(prog) // 8
    buf = ctypes.create_string_buffer(prog, len(prog))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(n, ctypes.cast(buf, ctypes.c_void_p))
    nr = 317 if machine == "x86_64" else 277
    if libc.syscall(nr, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)) == 0:
        return True
    return libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


# --- no_new_privs and capabilities ------------------------------------------------------------

def no_new_privs() -> bool:
    libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return libc.prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1


def drop_capabilities() -> bool:
    """Every capability gone for good; True when /proc says so (or there were none)."""
    libc.prctl(PR_SET_SECUREBITS, SECURE_ALL_LOCKED_NO_KEEP_CAPS, 0, 0, 0)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(64):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 and ctypes.get_errno() == 22:  # EINVAL: past the last
            break

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]

    data = (Data * 2)()
    header = Header(0x20080522, 0)
    libc.capset(ctypes.byref(header), data)
    # Check with capget and the bounding set itself (/proc may be out of reach under Landlock).
    got = (Data * 2)()
    if libc.capget(ctypes.byref(header), got) != 0:
        return False
    if any(d.effective or d.permitted or d.inheritable for d in got):
        return False
    return all(libc.prctl(PR_CAPBSET_READ, cap, 0, 0, 0) != 1 for cap in range(64))


# --- Landlock ----------------------------------------------------------------------------------

LL_CREATE, LL_ADD_RULE, LL_RESTRICT = 444, 445, 446  # same numbers on x86_64 and aarch64
LANDLOCK_CREATE_RULESET_VERSION, LANDLOCK_RULE_PATH_BENEATH = 1, 1
FS_EXECUTE, FS_WRITE_FILE, FS_READ_FILE, FS_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
FS_REFER, FS_TRUNCATE, FS_IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1, 2
FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV  # those a file rule may hold
O_PATH, O_CLOEXEC = 0o10000000, 0o2000000


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def landlock_abi() -> int:
    r = libc.syscall(LL_CREATE, None, 0, LANDLOCK_CREATE_RULESET_VERSION)
    return int(r) if r > 0 else 0


def landlock(read: list[str], read_write: list[str]) -> str | None:
    """Restrict this process (and threads started later) to reading beneath `read` and
    reading/writing beneath `read_write`. Returns a description of what is enforced, or None
    when the kernel has no Landlock."""
    abi = landlock_abi()
    if abi < 1:
        return None
    fs = (1 << 13) - 1  # EXECUTE .. MAKE_SYM (ABI 1)
    if abi >= 2:
        fs |= FS_REFER
    if abi >= 3:
        fs |= FS_TRUNCATE
    if abi >= 5:
        fs |= FS_IOCTL_DEV
    net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = _RulesetAttr(fs, net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(LL_CREATE, ctypes.byref(attr), size, 0)
    if ruleset < 0:
        return None
    try:
        reading = FS_READ_FILE | FS_READ_DIR
        for rights, paths in ((reading, read), (fs, read_write)):
            for path in paths:
                try:
                    fd = os.open(path, O_PATH | O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = rights if os.path.isdir(path) else rights & FILE_RIGHTS
                    rule = _PathBeneath(allowed & fs, fd)
                    libc.syscall(LL_ADD_RULE, int(ruleset), LANDLOCK_RULE_PATH_BENEATH, ctypes.byref(rule), 0)
                finally:
                    os.close(fd)
        if libc.syscall(LL_RESTRICT, int(ruleset), 0) != 0:
            return None
    finally:
        os.close(int(ruleset))
    return f"landlock abi {abi}" + (" (tcp refused)" if net else "") + (" (signals scoped)" if scoped else "")
