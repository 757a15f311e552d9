"""`event.secrets`: the tenant's secrets for this activation, a read-only mapping."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator


class Secrets:
    """Name to value, as the host decrypted them for this activation (SDK.md).

    A plain class rather than a collections.abc.Mapping: importing collections costs
    every step. Its repr names the secrets and shows no value. A value that reaches the
    host again (in a result, a log, an error) is stored as ``[secret:NAME]``.
    """

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, str] | None = None) -> None:
        object.__setattr__(self, "_values", dict(values or {}))

    def __getitem__(self, name: str) -> str:
        try:
            return self._values[name]
        except KeyError:
            raise KeyError(
                f"no secret named {name!r}: set it with PUT /api/v1/secrets/{name}"
            ) from None

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._values.get(name, default)

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def keys(self) -> list[str]:
        return sorted(self._values)

    def values(self) -> list[str]:
        return [self._values[name] for name in sorted(self._values)]

    def items(self) -> list[tuple[str, str]]:
        return [(name, self._values[name]) for name in sorted(self._values)]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("event.secrets is read-only")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("event.secrets is read-only")

    def expand(self, text: str) -> str:
        """`text` as recorded, each ``[secret:NAME]`` the host put in back to the value,
        so that a replay compares a step's name with the one it was recorded under."""
        if "[secret:" not in text:
            return text
        for name, value in self._values.items():
            text = text.replace(f"[secret:{name}]", value)
        return text

    def __repr__(self) -> str:
        return f"Secrets({sorted(self._values)!r})"
