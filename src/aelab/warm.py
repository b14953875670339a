"""Warm start: one background process keeps torch, Lightning and MLflow imported and forks each command from it.

Every `aelab` process used to pay 4-6 s of imports before its work began, and `dvc repro` runs about twenty of
them: on the default digits pipeline that was a third of the wall time. The first command starts a server in the
background and runs cold itself; while the server is up, each later command connects to its Unix socket, hands
over its argv, working folder, environment and terminal (stdin, stdout, stderr), and the server forks a child that
runs the command exactly as `aelab` would and reports its exit code back. Ctrl-C and termination signals sent to
the command are passed on to the child; if the command itself dies, the child is stopped.

A server serves only commands that would import the same code the same way: its socket is named by a digest of the
interpreter, `sys.path`, the environment (without the few variables DVC changes per stage) and the size and time of
every file of the aelab package. Edit the code or change a variable and the next command starts a fresh server; an
idle server exits after `AELAB_WARM_IDLE` seconds (default 60). `AELAB_WARM_START=0` turns all of it off. The socket
sits in a folder only its user may enter, and the server checks the connecting process's user as well.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

SWITCH_ENV = "AELAB_WARM_START"
IDLE_ENV = "AELAB_WARM_IDLE"
DEFAULT_IDLE_S = 60.0
VOLATILE_ENV = frozenset({"DVC_STAGE", "PWD", "OLDPWD", "SHLVL", "_"})
"""Variables that differ from one stage to the next but do not change what an import does."""
CHILD_ENV = ("LOCAL_RANK", "RANK")
"""Set in the processes Lightning and torchrun start (DDP ranks): those stay cold, as do aelab's tune workers."""
FORWARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCONT)
_HEADER = struct.Struct("!Q")
_CODE = struct.Struct("!i")


def enabled(environ: dict[str, str] | None = None) -> bool:
    """On unless switched off, or in a process aelab or Lightning started (Linux only: it needs SO_PEERCRED)."""
    environ = os.environ if environ is None else environ
    return (
        sys.platform == "linux"
        and environ.get(SWITCH_ENV, "1") != "0"
        and not any(environ.get(name) for name in CHILD_ENV)
    )


def socket_folder() -> Path:
    """A folder of this user's only (`$XDG_RUNTIME_DIR` or the temporary folder); refused if anyone else can enter."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    folder = Path(base) / f"aelab-warm-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.stat()
    if info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise PermissionError(f"{folder}: not private to this user")
    return folder


def server_key(package_dir: Path, environ: dict[str, str] | None = None) -> str:
    """What makes two commands import the same things: interpreter, path, environment and the package's files."""
    environ = dict(os.environ if environ is None else environ)
    sources = [p for p in package_dir.rglob("*") if p.suffix in (".py", ".yaml") and "__pycache__" not in p.parts]
    files = sorted((str(p.relative_to(package_dir)), *_stamp(p)) for p in sources)
    content = {
        "python": [sys.executable, sys.version],
        "path": sys.path,
        "env": {k: v for k, v in sorted(environ.items()) if k not in VOLATILE_ENV},
        "files": files,
    }
    return hashlib.sha256(json.dumps(content).encode()).hexdigest()[:20]


def _stamp(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_mtime_ns, info.st_size


def socket_path(package_dir: Path) -> Path:
    return socket_folder() / f"{server_key(package_dir)}.sock"


# -- the command's side --------------------------------------------------------------------------------------------


def forward(argv: list[str], package_dir: Path, server_command: list[str]) -> int | None:
    """Run `argv` in the warm server and return its exit code; None: no server here, run cold (one is started)."""
    if not enabled():
        return None
    try:
        path = socket_path(package_dir)
    except OSError:
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        start_server(path, server_command)
        return None
    with conn:
        try:
            pid = _send_request(conn, argv)
        except OSError:  # a server that is just exiting, or a closed stdin/stdout/stderr: run cold
            pid = None
        return None if pid is None else _wait(conn, pid)


def start_server(path: Path, server_command: list[str]) -> None:
    """Start a server for `path` in its own session, detached from this terminal (it exits when idle).

    Not when a server for the same key found it could not serve (`<socket>.off`, with the reason): each command
    would otherwise start one that imports for seconds beside the command's own work, only to give up.
    """
    if path.with_suffix(".off").exists():
        return
    with contextlib.suppress(OSError), open(path.with_suffix(".log"), "ab") as log:
        subprocess.Popen(
            [*server_command, str(path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
        )


def _send_request(conn: socket.socket, argv: list[str]) -> int | None:
    """Hand the command over; the pid of the child that runs it, or None if the server did not take it."""
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
    socket.send_fds(conn, [_HEADER.pack(len(request))], [0, 1, 2])
    conn.sendall(request)
    answer = _receive(conn, _CODE.size)
    return _CODE.unpack(answer)[0] if len(answer) == _CODE.size else None


def _wait(conn: socket.socket, pid: int) -> int:
    """The child's exit code; meanwhile the signals this process gets go to the child.

    Ctrl-Z (SIGTSTP) stops the child and then this process, as it would stop a cold command; the shell's `fg`
    (SIGCONT) resumes both. SIGSTOP and SIGKILL cannot be caught: SIGSTOP stops this process only, and after a
    SIGKILL the server sees the connection close and stops the child with SIGTERM.
    """
    previous = {sig: signal.signal(sig, lambda signum, frame: _kill(pid, signum)) for sig in FORWARDED_SIGNALS}
    previous[signal.SIGTSTP] = signal.signal(signal.SIGTSTP, lambda signum, frame: _suspend(pid))
    try:
        answer = _receive(conn, _CODE.size)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if len(answer) != _CODE.size:
        print("aelab: error: the warm aelab process ended before the command did", file=sys.stderr)
        return 1
    return _CODE.unpack(answer)[0]


def _suspend(pid: int) -> None:
    """SIGSTOP, not SIGTSTP, for the child: outside any terminal's session the kernel would drop a SIGTSTP."""
    _kill(pid, signal.SIGSTOP)
    os.kill(os.getpid(), signal.SIGSTOP)


def _kill(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _receive(conn: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes, or fewer if the other side closed the connection."""
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


# -- the server's side ---------------------------------------------------------------------------------------------


def serve(path: Path, preload: Iterable[str], run: Callable[[list[str]], int], idle_s: float | None = None) -> None:
    """Import `preload`, then fork a child per connection that runs `run(argv[1:])`; return after `idle_s` idle."""
    idle_s = float(os.environ.get(IDLE_ENV, DEFAULT_IDLE_S)) if idle_s is None else idle_s
    with open(path.with_suffix(".lock"), "a+") as lock:  # held for the server's life
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another server is starting or serving here
        if _ready(path, preload):
            os.chdir("/")  # hold no project folder (DVC deletes its experiment copies); children go to their own
            _listen(path, run, idle_s)


def _ready(path: Path, preload: Iterable[str]) -> bool:
    """Import `preload`; if that fails or leaves threads or CUDA behind, say so in `<socket>.off` (no server)."""
    import importlib

    try:
        for name in preload:
            importlib.import_module(name)
        if threading.active_count() != 1 or _cuda_initialized():
            raise RuntimeError("the imports started threads or CUDA: forking would not be safe")
    except Exception as err:  # noqa: BLE001 - any failure here means: no server for this key, commands run cold
        path.with_suffix(".off").write_text(f"{type(err).__name__}: {err}\n")
        _log(f"not serving: {err}")
        return False
    return True


def _listen(path: Path, run: Callable[[list[str]], int], idle_s: float) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # left by a server that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(16)
    _log(f"serving {path.name} (pid {os.getpid()}, {len(sys.modules)} modules imported)")
    try:
        _serve_loop(listener, run, idle_s)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        listener.close()
        _log(f"idle for {idle_s:g} s: exiting")
        for leftover in (path.with_suffix(".log"), path.with_suffix(".lock")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _log(message: str) -> None:
    """A line in the server's log (its stderr: `<socket>.log`, removed when the server exits)."""
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def _serve_loop(listener: socket.socket, run: Callable[[list[str]], int], idle_s: float) -> None:
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.set_wakeup_fd(wake_write)
    children: dict[int, socket.socket] = {}
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(wake_read, selectors.EVENT_READ)
    last_active = time.monotonic()
    while children or time.monotonic() - last_active < idle_s:
        for key, _ in selector.select(timeout=1.0):
            if key.fileobj is listener:
                conn, _ = listener.accept()
                pid = _start_child(conn, listener, children, (wake_read, wake_write), run)
                if pid is not None:
                    children[pid] = conn
                    selector.register(conn, selectors.EVENT_READ, pid)
                else:
                    conn.close()
            elif key.fileobj == wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_read, 512)
            else:  # the command's side closed its connection while its child runs: stop the child
                _kill(key.data, signal.SIGTERM)
                selector.unregister(key.fileobj)
        for pid, code in _reaped(children):
            conn = children.pop(pid)
            with contextlib.suppress(KeyError):
                selector.unregister(conn)
            with contextlib.suppress(OSError):
                conn.sendall(_CODE.pack(code))
            conn.close()
            last_active = time.monotonic()


def _reaped(children: dict[int, socket.socket]) -> list[tuple[int, int]]:
    done = []
    for pid in list(children):
        with contextlib.suppress(ChildProcessError):
            finished, status = os.waitpid(pid, os.WNOHANG)
            if finished:
                done.append((pid, os.waitstatus_to_exitcode(status)))
    return [(pid, code if code >= 0 else 128 - code) for pid, code in done]


def _start_child(
    conn: socket.socket,
    listener: socket.socket,
    children: dict[int, socket.socket],
    wake: tuple[int, int],
    run: Callable[[list[str]], int],
) -> int | None:
    """Read one request and fork its child; None if the request was not one (or came from another user)."""
    try:
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        if struct.unpack("3i", creds)[1] != os.getuid():
            return None
        header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
        if len(header) != _HEADER.size or len(fds) != 3:
            return None
        request: dict[str, Any] = json.loads(_receive(conn, _HEADER.unpack(header)[0]))
    except (OSError, ValueError):
        return None
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 1
        try:
            listener.close()
            for other in children.values():
                other.close()
            signal.set_wakeup_fd(-1)
            for fd in wake:
                os.close(fd)
            conn.close()
            code = _run_child(request, fds, run)
        finally:
            os._exit(code)
    for fd in fds:
        os.close(fd)
    with contextlib.suppress(OSError):
        conn.sendall(_CODE.pack(pid))
    _log(f"pid {pid}: aelab {' '.join(request['argv'][1:2])}")  # the subcommand only: a --set may hold a secret
    return pid


def _run_child(request: dict[str, Any], fds: list[int], run: Callable[[list[str]], int]) -> int:
    """Become the command: its terminal, folder, environment, argv and default signal handling, then run it."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = list(request["argv"])
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(AttributeError, OSError, ValueError):
            stream.reconfigure(line_buffering=stream.isatty())  # type: ignore[union-attr]
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()  # a fresh process draws its own global NumPy state; forked ones would share one
    return run(sys.argv[1:])
