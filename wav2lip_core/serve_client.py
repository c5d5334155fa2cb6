"""The one client of `wav2lip serve`: it starts the engine process, checks its hello, sends
protocol.py's requests (under one lock), turns the engine's stdout into typed events in a reader
thread, and holds the one set of rules for an engine that dies or is stopped. Used by the Blender
add-on (blender_addon/engine.py, which loads this file by its path beside a copy of protocol.py)
and by `wav2lip batch` on this machine (jobs/batch_local.py).

Standard library only; it imports protocol.py and nothing else of the core.

The rules:
- The engine runs in a process group of its own (a signal reaches its children too; a terminal's
  Ctrl+C reaches only the caller, which cancels jobs in order). Its stdin is the caller's pipe, so
  even a caller that is killed leaves no engine behind: the engine exits at the end of its input.
- Hello comes first. An engine of another protocol version is refused (sent SIGTERM; every job
  gets the message to re-run install.py), as is one that exits before hello with exit code 3 (it
  refused our version) or 2 (too old to know `serve`).
- A stdout line that is not JSON is ignored (a stray print). A JSON line that is no event of this
  protocol, or a callback that raises, means this side lost track of the engine: `on_lost` hears
  why, and the engine is stopped.
- Once the process has exited and its output is read, `on_exit` gets an EngineExit: one line why,
  and whether the jobs it still held count as cancelled (the caller stopped it) or failed.
- Stopping escalates: a quit request and the end of its input, then SIGTERM, then SIGKILL, `grace`
  seconds apart, in a thread: the caller never waits for the process unless it asks to.
"""

import os
import re
import signal
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, List, Optional, Sequence

from . import protocol as P

MAX_LINE = 4000  # characters of one stderr line kept (a runaway line must not fill memory)
STDERR_LINES = 200  # the last lines of stderr kept, for the one line that says why it stopped


@dataclass(frozen=True)
class EngineExit:
    """How an engine process ended, for the jobs it still held."""

    code: Optional[int]  # the exit status (negative: the signal); None: it never started
    reason: str  # one line: why it takes no more jobs
    stopped: bool  # the caller stopped it: the jobs it held count as cancelled, not failed
    crashed: bool  # it was serving, then died on its own: a fresh engine may well do better


def mismatch_message(engine_protocol: object) -> str:
    """What the caller says about an engine that speaks another version."""
    return (f"the lip-sync engine speaks protocol {engine_protocol}, this add-on {P.PROTOCOL_VERSION}: "
            "the engine and the add-on come from different versions; re-run install.py from the same download")


def error_from_stderr(lines: Sequence[str], returncode: Optional[int], error_line: str = "") -> str:
    """The engine's one-line `error: ...` message, else the last stderr line, else the exit code."""
    if error_line:
        return error_line
    for line in reversed(lines):
        text = line.strip()
        if text.startswith("error:"):
            return text[len("error:"):].strip()
    for line in reversed(lines):
        text = line.strip()
        if text:
            return f"the lip-sync engine failed (exit code {returncode}): {text}"
    return f"the lip-sync engine failed (exit code {returncode}) without a message"


_ENGINE_SPEAKS = re.compile(r"engine speaks protocol (\d+)")


def protocol_refusal(lines: Sequence[str], returncode: Optional[int]) -> Optional[str]:
    """The message when an engine that never said hello refused our protocol (exit 3), or is
    older than `serve` or `--protocol` (argparse's exit 2); None otherwise."""
    text = "\n".join(lines)
    if returncode == P.EXIT_PROTOCOL:
        m = _ENGINE_SPEAKS.search(text)
        return mismatch_message(m.group(1) if m else "another")
    if returncode == P.EXIT_USAGE:
        return mismatch_message(f"older than {P.PROTOCOL_VERSION}")
    return None


def how_it_ended(returncode: int, stderr: Sequence[str], error_line: str = "") -> str:
    """"killed by SIGKILL", or "exit code 1: <its last words>"."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    last = error_line or next((s.strip() for s in reversed(stderr) if s.strip()), "")
    return f"exit code {returncode}" + (f": {last}" if last else "")


def popen_kwargs(env: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """Popen settings for an engine process: UTF-8 pipes whatever the system's code page, no
    Blender Python home, its own process group (a signal reaches its children too)."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env["PYTHONUTF8"] = "1"
    env["PYTHONIOENCODING"] = "utf-8"
    env.pop("PYTHONHOME", None)
    kwargs: Dict[str, Any] = dict(env=env, text=True, encoding="utf-8", errors="replace", bufsize=1)
    if os.name == "posix":
        kwargs["start_new_session"] = True
    else:  # pragma: no cover - Windows
        kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | getattr(
            subprocess, "CREATE_NO_WINDOW", 0)
    return kwargs


def signal_group(proc: "subprocess.Popen[str]", sig: int) -> None:
    """Send `sig` to the engine's process group (Windows: terminate or kill the process)."""
    if proc.poll() is not None:
        return
    try:
        if os.name == "posix":
            os.killpg(proc.pid, sig)
        elif sig == signal.SIGTERM:  # pragma: no cover - Windows
            proc.terminate()
        else:  # pragma: no cover
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        try:
            proc.kill()
        except OSError:
            pass


_stoppers: List[threading.Thread] = []  # engines being stopped, seen through by join_stoppers
_stoppers_lock = threading.Lock()


def join_stoppers(timeout: float) -> None:
    """Wait for every engine being stopped to be gone (a caller about to exit: the stopping threads
    are daemons, which would die before their SIGTERM or SIGKILL went out)."""
    with _stoppers_lock:
        stoppers = list(_stoppers)
    for t in stoppers:
        t.join(timeout)


class ServeClient:
    """One `<python> -m wav2lip_core serve` process. `on_event(event)` gets every event but hello,
    `on_lost(reason)` a reader's failure, `on_exit(EngineExit)` the end; all on reader threads."""

    def __init__(self, python: str, *, on_event: Callable[[Any], None],
                 on_exit: Optional[Callable[[EngineExit], None]] = None,
                 on_lost: Optional[Callable[[str], None]] = None,
                 env: Optional[Dict[str, str]] = None, cwd: Optional[str] = None) -> None:
        self.python = python
        self.argv = [python, "-m", "wav2lip_core", P.SERVE_COMMAND]
        self._on_event, self._on_exit, self._on_lost = on_event, on_exit, on_lost
        self._env, self._cwd = env, cwd
        self.proc: "Optional[subprocess.Popen[str]]" = None
        self._lock = threading.Lock()  # the state below
        self._write_lock = threading.Lock()  # stdin: one request at a time, never under _lock
        self._stderr: Deque[str] = deque(maxlen=STDERR_LINES)
        self._error_line = ""
        self.hello: Optional[P.Hello] = None
        self.refusal: Optional[str] = None  # it speaks another protocol version
        self.lost: Optional[str] = None  # this side could not follow its output
        self.exit: Optional[EngineExit] = None
        self.stopping = False
        self._stopper: Optional[threading.Thread] = None
        self._greeted = threading.Event()  # hello, or the end
        self._exited = threading.Event()

    def start(self) -> "ServeClient":
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, cwd=self._cwd, **popen_kwargs(self._env))
        except OSError as exc:
            why = f"cannot start the lip-sync engine '{self.python}': {exc.strerror or exc}"
            self._ended(EngineExit(None, why, stopped=False, crashed=False))
            return self
        out_t = threading.Thread(target=self._read_stdout, name="wav2lip-engine-stdout", daemon=True)
        err_t = threading.Thread(target=self._read_stderr, name="wav2lip-engine-stderr", daemon=True)
        for t in (out_t, err_t):
            t.start()
        threading.Thread(target=self._wait_exit, args=(out_t, err_t), name="wav2lip-engine-wait", daemon=True).start()
        return self

    # -- state -----------------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        """Running, greeted or not yet, and good for new jobs (not refused, lost or stopping)."""
        return (self.proc is not None and self.proc.poll() is None and self.exit is None
                and not self.stopping and self.refusal is None and self.lost is None)

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc is not None else None

    @property
    def unusable(self) -> Optional[str]:
        """Why no job can go to this engine (one line), or None."""
        return self.lost or self.refusal or (self.exit.reason if self.exit is not None else None)

    def wait_hello(self, timeout: Optional[float] = None) -> bool:
        """Whether the engine said hello in our protocol (False: it did not, or it ended first:
        `unusable` says why)."""
        self._greeted.wait(timeout)
        return self.hello is not None and self.refusal is None and self.exit is None

    def wait_exit(self, timeout: Optional[float] = None) -> Optional[EngineExit]:
        self._exited.wait(timeout)
        return self.exit

    # -- requests --------------------------------------------------------------------------------
    def send(self, request: P.Message) -> None:
        """One request line; an engine that is gone is not an error here (the reader sees its end)."""
        proc = self.proc
        if proc is None or proc.stdin is None:
            return
        try:
            with self._write_lock:
                proc.stdin.write(request.to_json() + "\n")
                proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def stop(self, grace: float = 2.0, wait: bool = False) -> None:
        """Quit (the running job is cancelled), then SIGTERM, then SIGKILL, `grace` seconds apart,
        in a thread; the caller waits only with `wait`. From now on its jobs count as cancelled."""
        with self._lock:
            self.stopping = True
            proc, stopper = self.proc, self._stopper
            if proc is not None and stopper is None:
                stopper = self._stopper = threading.Thread(target=self._escalate, args=(proc, grace),
                                                           name="wav2lip-engine-stop", daemon=True)
                stopper.start()
                with _stoppers_lock:
                    _stoppers[:] = [t for t in _stoppers if t.is_alive()] + [stopper]
        if wait and stopper is not None:
            stopper.join()
            self._exited.wait(grace)

    def terminate(self) -> None:
        """SIGTERM now (a second Ctrl+C): the engine cancels and exits; the escalation goes on."""
        with self._lock:
            self.stopping = True
        if self.proc is not None:
            signal_group(self.proc, signal.SIGTERM)

    def _escalate(self, proc: "subprocess.Popen[str]", grace: float) -> None:
        self.send(P.QuitRequest())
        try:
            with self._write_lock:
                if proc.stdin is not None:
                    proc.stdin.close()
        except OSError:
            pass
        for sig in (signal.SIGTERM, getattr(signal, "SIGKILL", signal.SIGTERM)):
            try:
                proc.wait(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                signal_group(proc, sig)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:  # pragma: no cover - unkillable process
            pass

    # -- reader threads --------------------------------------------------------------------------
    def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        stream = self.proc.stdout
        try:
            for line in stream:
                if not line.lstrip().startswith("{"):
                    continue  # a stray print, not meant for us
                event = P.parse_event(line)
                if isinstance(event, P.Hello):
                    self._greet(event)
                else:
                    self._on_event(event)
        except Exception as exc:  # noqa: BLE001 - a ProtocolError or a callback's bug: never a frozen job
            self._lose(exc)
            _drain(stream)

    def _greet(self, hello: P.Hello) -> None:
        self.hello = hello
        if hello.protocol != P.PROTOCOL_VERSION:  # another version: stop it
            self.refusal = mismatch_message(hello.protocol)
            assert self.proc is not None
            signal_group(self.proc, signal.SIGTERM)
        self._greeted.set()

    def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        stream = self.proc.stderr
        try:
            for line in stream:
                text = line.rstrip("\n")
                if len(text) > MAX_LINE:
                    text = text[:MAX_LINE] + " ..."
                with self._lock:
                    self._stderr.append(text)
                    if text.startswith("error:"):
                        self._error_line = text[len("error:"):].strip()
        except Exception as exc:  # noqa: BLE001 - as in _read_stdout
            self._lose(exc)
            _drain(stream)

    def _lose(self, exc: BaseException) -> None:
        what = " ".join(str(exc).split())[:200]
        with self._lock:
            if self.lost is None:
                self.lost = f"lost track of the lip-sync engine ({type(exc).__name__}{': ' + what if what else ''})"
            lost = self.lost
        try:
            if self._on_lost is not None:
                self._on_lost(lost)
        finally:
            self.stop(grace=0.5)

    def _wait_exit(self, out_t: threading.Thread, err_t: threading.Thread) -> None:
        assert self.proc is not None
        rc = self.proc.wait()
        out_t.join()
        err_t.join()
        with self._lock:
            stderr, error_line = list(self._stderr), self._error_line
        if self.hello is None and not self.lost:  # it never served: another version, or a broken install
            self.refusal = protocol_refusal(stderr, rc)
        stopped = self.stopping and not (self.refusal or self.lost)
        if self.lost or self.refusal:
            why = self.lost or self.refusal or ""
        elif self.hello is None:
            why = error_from_stderr(stderr, rc, error_line)
        elif stopped:
            why = "the lip-sync engine was stopped"
        else:
            why = f"the lip-sync engine stopped unexpectedly ({how_it_ended(rc, stderr, error_line)})"
        crashed = self.hello is not None and not (stopped or self.refusal or self.lost)
        self._ended(EngineExit(rc, why, stopped=stopped, crashed=crashed))

    def _ended(self, exit: EngineExit) -> None:
        self.exit = exit
        self._greeted.set()
        try:
            if self._on_exit is not None:
                self._on_exit(exit)
        finally:
            self._exited.set()


def _drain(stream) -> None:
    """Read a pipe to its end, so an engine whose output is no longer followed never blocks on it."""
    try:
        for _ in stream:
            pass
    except Exception:  # noqa: BLE001 - the pipe is going away anyway
        pass
