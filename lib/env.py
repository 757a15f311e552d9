"""Strict readers of settings from the environment: a bad value stops start-up."""

import base64
import ipaddress
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import unquote, urlparse


class ConfigError(RuntimeError):
    pass


# Files that show a checkout's var/ holds local data from before the XDG default.
VAR_DIR_DATA = ("stepwell.sqlite3", "secret_key")


def default_var_dir(checkout_var: Path, environ: Mapping[str, str], home: Path) -> Path:
    """Where local state goes when STEPWELL_VAR_DIR is not set: outside the checkout, in
    the XDG state directory, unless the checkout's var/ already holds a database or a
    secret key (kept there before this default), which then stays in use."""
    if any((checkout_var / name).exists() for name in VAR_DIR_DATA):
        return checkout_var
    state_home = environ.get("XDG_STATE_HOME", "")
    # The XDG spec: a relative path is invalid and must be ignored.
    if not os.path.isabs(state_home):
        state_home = str(home / ".local" / "state")
    return Path(state_home) / "stepwell"


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no, on/off)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}={value} is below the minimum of {minimum}")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_ip_list(name: str, refuse: Callable[[str], str | None] | None = None) -> list[str]:
    """Comma-separated IP addresses; empty when unset. `refuse` says why an address will
    not do, or None."""
    items = env_list(name, [])
    for item in items:
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise ConfigError(f"{name}: {item!r} is not an IP address") from None
        why = refuse(item) if refuse else None
        if why:
            raise ConfigError(f"{name}: {item} will not do: {why}")
    return items


def database_from_url(url: str, base_dir: Path) -> dict:
    """Django DATABASES['default'] from a postgres://, postgresql:// or sqlite:/// URL."""
    parsed = urlparse(url)
    if parsed.scheme in ("postgres", "postgresql"):
        name = parsed.path.lstrip("/")
        if not name:
            raise ConfigError(f"DATABASE_URL {url!r} names no database")
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(name),
            "USER": unquote(parsed.username or ""),
            "PASSWORD": unquote(parsed.password or ""),
            "HOST": parsed.hostname or "",
            "PORT": str(parsed.port or ""),
            # A pool per process: an ASGI server runs each sync view in a thread of its
            # own, so connections kept per thread (CONN_MAX_AGE) pile up to the server's
            # limit under load; pooled ones are shared and bounded.
            "CONN_MAX_AGE": 0,
            "OPTIONS": {
                # Only lib.rows binds on the server (the ORM renders values into the
                # SQL text), so this prepares just those few hot statements, each once
                # per connection: PostgreSQL then neither parses nor plans them again.
                "prepare_threshold": 1,
                "pool": {
                    "min_size": 1,
                    "max_size": env_int("DATABASE_POOL_SIZE", 8, minimum=1),
                    "timeout": 20,
                },
            },
        }
    if parsed.scheme == "sqlite":
        path = url[len("sqlite:///") :] if url.startswith("sqlite:///") else ""
        if not path:
            raise ConfigError(
                f"DATABASE_URL {url!r}: use sqlite:///relative.db or sqlite:////abs.db"
            )
        db_path = Path(path) if Path(path).is_absolute() else base_dir / path
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(db_path),
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    raise ConfigError(
        f"DATABASE_URL scheme {parsed.scheme!r} is not supported (postgres://, postgresql://, sqlite:///)"
    )


FERNET_KEY_BYTES = 32


def env_fernet_keys(name: str) -> list[str]:
    """Comma-separated Fernet keys (url-safe base64 of 32 bytes), first the one that
    encrypts; empty when unset. A key that is not one stops start-up, naming its place,
    never its value."""
    keys = env_list(name, [])
    for position, key in enumerate(keys, start=1):
        try:
            raw = base64.urlsafe_b64decode(key.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raw = b""
        if len(raw) != FERNET_KEY_BYTES or len(key) != 44:
            raise ConfigError(
                f"{name}: key {position} is not a Fernet key (url-safe base64 of 32 bytes; "
                f"make one with: python -c 'import base64, os; "
                f"print(base64.urlsafe_b64encode(os.urandom(32)).decode())')"
            )
    return keys


def new_fernet_key() -> str:
    return base64.urlsafe_b64encode(os.urandom(FERNET_KEY_BYTES)).decode("ascii")
