"""Resource limits for one sandboxed step."""

from dataclasses import asdict, dataclass

MiB = 2**20


@dataclass(frozen=True)
class Limits:
    """What one activation may use; built from the tenant's quota."""

    memory_bytes: int = 256 * MiB
    cpu_seconds: float = 30
    wall_seconds: float = 30
    pids: int = 64
    output_bytes: int = 1 * MiB  # cap for stdout and for stderr, each
    result_bytes: int = 1 * MiB  # cap for the result channel
    tmp_bytes: int = 16 * MiB  # size of the tmpfs /tmp, and of the work dir
    open_files: int = 64
    network: bool = False

    def __post_init__(self) -> None:
        for name in ("memory_bytes", "pids", "output_bytes", "result_bytes", "tmp_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{name} must be a positive int, not {value!r}")
        for name in ("cpu_seconds", "wall_seconds"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ValueError(f"Limits.{name} must be a positive number, not {value!r}")
        if not isinstance(self.open_files, int) or self.open_files < 16:
            raise ValueError("Limits.open_files must be an int of at least 16")
        if self.memory_bytes < 16 * MiB:
            raise ValueError("Limits.memory_bytes must be at least 16 MiB")

    def to_json(self) -> dict:
        return asdict(self)


def describe_bytes(n: int) -> str:
    """256 MiB, 1.5 GiB, 1000 bytes: for error messages."""
    for unit, size in (("GiB", 2**30), ("MiB", MiB), ("KiB", 1024)):
        if n >= size:
            value = n / size
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def describe_seconds(s: float) -> str:
    return f"{s:g} s"
