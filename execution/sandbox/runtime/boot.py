"""The sandbox's entry point: runs inside nsjail on the sandbox interpreter (3.11+, stdlib only).

Protocol (the host depends on it):
- stdin holds one JSON job, ``{"mode": "call" | "workflow", "input": <json>}``, and in a
  fresh jail the tenant's secrets as ``"secrets": {name: value}`` (a warm jail's child
  gets them through a file descriptor of its own instead: see zygote.py);
- ``/code/tenant.py`` is imported as the module ``tenant``;
- mode "call" returns ``tenant.main(input)``; mode "workflow" returns
  ``stepwell._engine.activate(tenant, input)``;
- exactly one JSON document goes to fd 3, the result channel:
  ``{"ok": true, "result": value}`` or
  ``{"ok": false, "error": {"type", "message", "traceback"}}``; then exit 0.

Kept small and lazy: every import here is paid on every activation.
"""

import os
import sys

TENANT_PATH = "/code/tenant.py"
RUNTIME_DIR = "/runtime"
_STARTED_DOC = b'{"started":true}'
STARTED = len(_STARTED_DOC).to_bytes(4, "big") + _STARTED_DOC  # a warm jail's first frame
# The result channel's fd once main() took it: a kept child's pause writes there.
result_channel = None


def take_channel():
    """Move the result channel off fd 3 before any tenant code runs.

    os.dup gives a close-on-exec copy, so children the tenant spawns do not inherit it.
    Tenant code can still find it; the host trusts only validated, size-capped JSON.
    """
    try:
        fd = os.dup(3)
    except OSError:
        return None
    os.close(3)
    return fd


def write_all(fd, data):
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def error_doc(exc):
    import traceback

    tb = exc.__traceback__
    # Drop the runtime's own frames so the tenant sees where its code failed.
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    lines = traceback.format_exception(type(exc), exc, tb)
    message = str(exc) if not isinstance(exc, SyntaxError) else lines[-1].strip()
    return {
        "ok": False,
        "error": {
            "type": type(exc).__name__,
            "message": message or type(exc).__name__,
            "traceback": "".join(lines),
        },
    }


def load_tenant():
    module = type(sys)("tenant")
    module.__file__ = TENANT_PATH
    sys.modules["tenant"] = module
    with open(TENANT_PATH, "rb") as f:
        source = f.read()
    exec(compile(source, TENANT_PATH, "exec"), module.__dict__)
    return module


def send_progress(channel):
    """A sink for progress notes: one compact JSON line each, before the final document."""

    def sink(note):
        if channel is not None:
            write_all(channel, encode({"progress": note}) + b"\n")

    return sink


def run_job(job, channel=None, tenant=None, secrets=None):
    # A warm jail's zygote imported the tenant module once, before forking this process.
    if tenant is None:
        tenant = load_tenant()
    if job["mode"] == "workflow":
        # Not "from stepwell import ...": a package's fromlist runs importlib's Python code.
        from stepwell._engine import activate
        from stepwell._progress import set_sink

        set_sink(send_progress(channel))
        return activate(tenant, job["input"], secrets)
    main = getattr(tenant, "main", None)
    if not callable(main):
        raise AttributeError("the tenant module defines no main(input) function")
    return main(job["input"])


def encode(doc):
    from json_codec import dumps

    return dumps(doc).encode()


def outcome(job_bytes, channel=None, tenant=None, secrets_bytes=None):
    from json_codec import loads

    try:
        job = loads(job_bytes)
        if not isinstance(job, dict) or job.get("mode") not in ("call", "workflow"):
            raise ValueError("bad job document")
        secrets = loads(secrets_bytes) if secrets_bytes else job.pop("secrets", None)
        if secrets is not None and not isinstance(secrets, dict):
            raise ValueError("bad secrets document")
        value = run_job(job, channel, tenant, secrets)
    except BaseException as exc:  # SystemExit and KeyboardInterrupt are step errors too
        return encode(error_doc(exc))
    try:
        return encode({"ok": True, "result": value})
    except (TypeError, ValueError, RecursionError) as exc:
        wrapped = TypeError(f"the step's result is not JSON-serialisable: {exc}")
        return encode(error_doc(wrapped))


def flush_std_streams():
    for stream in (sys.stdout, sys.stderr):
        # A broken stream must not stop the result (contextlib is not worth importing).
        try:  # noqa: SIM105
            stream.flush()
        except BaseException:
            pass


def main(job_bytes=None, tenant=None, secrets_bytes=None):
    """Answer one job; a warm jail's child passes the job, the tenant module it inherited
    and the secrets it read from its own descriptor."""
    global result_channel
    channel = result_channel = take_channel()
    if RUNTIME_DIR not in sys.path:
        sys.path.insert(0, RUNTIME_DIR)
    if job_bytes is None:
        job_bytes = sys.stdin.buffer.read()
    doc = outcome(job_bytes, channel, tenant, secrets_bytes)
    flush_std_streams()
    if channel is not None:
        try:  # noqa: SIM105 - the host reports a missing result
            write_all(channel, doc)
        except BaseException:
            pass
    # Skip interpreter shutdown: tenant atexit hooks and finalizers get no say after the result.
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:] == ["--warm"]:
        # A warm jail: the zygote forks one child per activation, and each child runs
        # this module's main() as __main__, exactly as a fresh jail would. Its first frame,
        # {"started": true}, goes out before its imports: the host then moves it into a
        # cgroup of its own while it loads them (zygote.py).
        write_all(3, STARTED)
        sys.path.insert(0, RUNTIME_DIR)
        import zygote

        zygote.serve(sys.modules[__name__])
    else:
        main()
