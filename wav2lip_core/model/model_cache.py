"""The disk cache of converted (OpenVINO) models: only the first run on a checkpoint converts it.

An entry is a folder `<key>/model.xml + model.bin + meta.json`, plus `compiled/`: OpenVINO's own
cache of the model compiled for this CPU (CACHE_DIR), written by the first run that compiles it.
The key hashes what makes the converted model differ: the checkpoint's content (not its name),
the cache format, OpenVINO's version (its IR and kernels change between releases), the
precision, NNCF's version for int8 (its quantization does), and the model's input shapes. Computing the key imports neither torch
nor NNCF (NNCF imports torch, ~4 s): a run whose model is cached starts without them.

Engines share the folder. An entry is made under its lock (`.locks/<key>.lock`, an OS file lock
that a killed process releases) in a temp folder renamed into place, so a second engine on a
cold cache waits for the first one's conversion and takes its entry instead of converting too;
pruning spares entries used in the last minutes and entries whose lock another process holds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from ..errors import Cancelled, Wav2LipError
from ..files import write_atomic
from .checkpoint import FACE_SHAPE, MEL_SHAPE

T = TypeVar("T")

# Bump when what is written to the model cache changes meaning (graph, inputs, quantization).
MODEL_CACHE_VERSION = 1
# OpenVINO's compiled-model cache inside an entry (pruned with it).
COMPILED = "compiled"
# The folder for converted models; tests point every process of a session at one folder.
ENV_MODEL_CACHE = "WAV2LIP_MODEL_CACHE"
# Entries kept (least recently used go first): an fp32 entry is ~290 MB with its compiled blob,
# an int8 one ~80 MB, and a user has one or two checkpoints.
MAX_ENTRIES = 4
# Pruning spares entries used or written this recently: another process may be reading or
# compiling one it just converted or found.
PRUNE_GRACE_S = 600
# A writer's temp folder older than this, its entry unlocked, was left by a killed process.
STALE_TEMP_S = 3600
# How often a process waiting for another's conversion looks at its cancel flag.
LOCK_POLL_S = 0.1
LOCKS = ".locks"
INT8_NEEDS = ("--precision int8 needs NNCF: install the int8 extra "
              '(pip install "wav2lip-blender[int8]") or use --precision fp32')


def default_model_folder() -> Path:
    env = os.environ.get(ENV_MODEL_CACHE)
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("wav2lip-blender")) / "models"


def nncf_version() -> str:
    """NNCF's version, found without importing it; Wav2LipError when it is not installed."""
    from importlib import metadata  # ~30 ms, for int8 runs only

    if importlib.util.find_spec("nncf") is None:
        raise Wav2LipError(INT8_NEEDS)
    try:
        return metadata.version("nncf")
    except metadata.PackageNotFoundError:  # importable without metadata (a source tree)
        return "unknown"


def file_state(path: str) -> list[int]:
    """What tells a file changed without reading it: size, mtime and inode (a replaced file)."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class LoadedFiles:
    """Objects loaded from files, kept for the next job in a long-lived process (the warm engine,
    a Ray worker): `get` loads a file once per `extra` key (runtime, device, ...) and hands the
    same object back until the file changes on disk (file_state); an object of a changed file is
    dropped at once (its old weights are dead). Keeps the `keep` most recently used."""

    def __init__(self, keep: int):
        self.keep = keep
        self._loaded: OrderedDict[tuple, object] = OrderedDict()

    @staticmethod
    def _key(path: str | os.PathLike, extra: tuple) -> tuple:
        real = os.path.realpath(path)
        try:
            state = tuple(file_state(real))
        except OSError:
            state = None  # the loader names the problem
        return (real, state, *extra)

    def has(self, path: str | os.PathLike, *extra) -> bool:
        """Whether `get` would hand back an object already loaded (the file unchanged)."""
        return self._key(path, extra) in self._loaded

    def get(self, path: str | os.PathLike, *extra, load: Callable[[], T]) -> T:
        key = self._key(path, extra)
        obj = self._loaded.get(key)
        if obj is None:
            obj = load()
            for old in [k for k in self._loaded if k[0] == key[0] and k[1] != key[1]]:
                del self._loaded[old]
            self._loaded[key] = obj
            while len(self._loaded) > self.keep:
                self._loaded.popitem(last=False)
        else:
            self._loaded.move_to_end(key)
        return obj  # type: ignore[return-value]


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ModelCache:
    """Converted models on disk. A folder is written beside its final place and renamed into it,
    so a reader never sees a partial one; a folder whose files do not read back (or whose
    checksums differ) is a miss.

    Checkpoints are keyed by the sha256 of their whole content (a released file is 436 MB, ~2 s
    to hash), remembered in `checkpoints.json` by path and file state (size, mtime, inode): a
    later run on the same file reads the hash back instead of reading the file again, and a file
    changed in place (new mtime) is hashed again."""

    INDEX = "checkpoints.json"
    _memo: dict[str, tuple[list[int], str]] = {}  # shared in a process: an engine serving many jobs

    def __init__(self, folder: str | os.PathLike | None = None):
        self.folder = Path(folder) if folder is not None else default_model_folder()

    def checkpoint_hash(self, checkpoint: str | os.PathLike) -> str:
        path = os.path.realpath(checkpoint)
        state = file_state(path)
        known = self._memo.get(path)
        if known is not None and known[0] == state:
            return known[1]
        index = self._read_index()
        entry = index.get(path)
        if isinstance(entry, dict) and entry.get("state") == state and isinstance(entry.get("sha256"), str):
            digest = entry["sha256"]
        else:
            digest = sha256_file(path)
            index[path] = {"state": state, "sha256": digest}
            self._write_index(index)
        self._memo[path] = (state, digest)
        return digest

    def _read_index(self) -> dict:
        try:
            data = json.loads((self.folder / self.INDEX).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_index(self, index: dict) -> None:
        # Files that are gone need no hash; losing a race with another process costs one re-hash.
        index = {p: e for p, e in index.items() if os.path.exists(p)}
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            write_atomic(self.folder / self.INDEX, json.dumps(index).encode("utf-8"))
        except OSError:
            pass  # only a speed-up: the next run hashes the file again

    def key(self, checkpoint: str | os.PathLike, precision: str) -> str:
        import openvino

        fields = {"cache": MODEL_CACHE_VERSION, "content": self.checkpoint_hash(checkpoint), "precision": precision,
                  "openvino": openvino.__version__, "mel": MEL_SHAPE, "face": FACE_SHAPE}
        if precision == "int8":
            fields["nncf"] = nncf_version()
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:40]

    def path(self, key: str) -> Path:
        return self.folder / key

    def intact(self, key: str) -> bool:
        """Whether the entry is complete (its files match the checksums written with them)."""
        return self._intact(self.path(key))

    def _intact(self, d: Path) -> bool:
        try:
            meta = json.loads((d / "meta.json").read_text())
            if "xml_crc32" in meta and file_crc32(d / "model.xml") != (meta["xml_size"], meta["xml_crc32"]):
                return False
            return file_crc32(d / "model.bin") == (meta["bin_size"], meta["bin_crc32"])
        except Exception:
            return False

    @staticmethod
    def _used(d: Path) -> None:
        try:
            os.utime(d)  # recently used: pruned last
        except OSError:
            pass

    def load(self, core, key: str):
        """The cached ov.Model, or None when absent or unreadable."""
        d = self.path(key)
        if not self._intact(d):
            return None
        try:
            # Read, not memory-mapped: another process may replace or prune the entry meanwhile.
            model = core.read_model(str(d / "model.xml"), config={"ENABLE_MMAP": False})
        except Exception:
            return None
        self._used(d)
        return model

    def compile(self, core, key: str, config: dict):
        """The cached model compiled for the CPU with `config`, or None when absent or unreadable.

        Compiled from its files with OpenVINO's compiled-model cache in the entry: from the
        second run on a checkpoint this loads the compiled blob instead of reading and compiling
        the model (fp32 on the 2-core test machine: ~0.15 s instead of ~0.45 s). A blob that does
        not load is compiled again by OpenVINO; a folder it cannot write falls back to the plain
        compile. `core` should have ENABLE_MMAP off (see load)."""
        d = self.path(key)
        if not self._intact(d):
            return None
        try:
            compiled = core.compile_model(str(d / "model.xml"), "CPU", {**config, "CACHE_DIR": str(d / COMPILED)})
        except Exception:
            model = self.load(core, key)
            return None if model is None else core.compile_model(model, "CPU", config)
        self._used(d)
        return compiled

    @contextmanager
    def writing(self, key: str, stop: Callable[[], bool] | None = None) -> Iterator[None]:
        """Hold the entry's lock (one file per key, locked by the OS, so a killed holder frees it):
        one process at a time makes an entry; another waits, then finds it made. Raises
        Cancelled when `stop()` turns true while waiting, OSError when the folder is unwritable."""
        (self.folder / LOCKS).mkdir(parents=True, exist_ok=True)
        f = open(self.folder / LOCKS / f"{key}.lock", "a+b")
        try:
            while not _try_lock(f):
                if stop is not None and stop():
                    raise Cancelled("cancelled")
                time.sleep(LOCK_POLL_S)
            try:
                yield
            finally:
                _unlock(f)
        finally:
            f.close()

    def new_temp(self, key: str) -> Path:
        """A folder to write the entry in, beside its final place (same filesystem: renamed in)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=self.folder))

    def commit(self, tmp: Path, key: str) -> None:
        """Rename a fully written entry folder into place; the caller holds writing(key). An
        intact entry already there (made by another process) is kept and `tmp` dropped."""
        final = self.path(key)
        if self._intact(final):
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            if final.exists():  # a bad folder left from before (load missed): replace it
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        self._used(final)
        self.prune(keep=final)

    def save(self, ov_model, key: str) -> None:
        tmp = None
        try:
            with self.writing(key):
                if self._intact(self.path(key)):
                    return
                tmp = self.new_temp(key)
                write_entry(ov_model, tmp)
                self.commit(tmp, key)
                tmp = None
        except OSError as exc:
            warnings.warn(f"converted model not cached in {self.folder}: {exc}", stacklevel=2)
        finally:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)

    def prune(self, keep: Path) -> None:
        """Keep the MAX_ENTRIES most recently used entries, `keep` among them. Never removes an
        entry used in the last PRUNE_GRACE_S or one another process holds the lock of (being
        written); removes writers' temp folders left by killed processes."""
        now = time.time()
        entries = []
        for p in self.folder.iterdir():
            try:
                if not p.is_dir() or p == keep or p.name == LOCKS:
                    continue
                age = now - p.stat().st_mtime
            except OSError:
                continue
            if p.name.startswith("."):
                if p.name.endswith(".tmp") and age > STALE_TEMP_S:
                    self._remove_unlocked(p, p.name[1:].split(".")[0])
            elif age > PRUNE_GRACE_S:
                entries.append((age, p))
        entries.sort()
        for _, old in entries[MAX_ENTRIES - 1:]:
            self._remove_unlocked(old, old.name)

    def _remove_unlocked(self, d: Path, key: str) -> None:
        try:
            f = open(self.folder / LOCKS / f"{key}.lock", "a+b")
        except OSError:
            return
        with f:
            if _try_lock(f):
                try:
                    shutil.rmtree(d, ignore_errors=True)
                finally:
                    _unlock(f)


def write_entry(ov_model, folder: Path) -> None:
    """An entry's files (model.xml, model.bin, meta.json with their checksums) in `folder`."""
    import openvino as ov

    ov.save_model(ov_model, str(folder / "model.xml"), compress_to_fp16=False)
    meta = {}
    for name in ("bin", "xml"):
        meta[f"{name}_size"], meta[f"{name}_crc32"] = file_crc32(folder / f"model.{name}")
    # Written last and whole: an entry whose meta.json reads back has all its files (_intact).
    write_atomic(folder / "meta.json", json.dumps(meta).encode("utf-8"))


if sys.platform == "win32":
    import msvcrt

    def _try_lock(f) -> bool:
        try:
            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(f) -> None:
        f.seek(0)
        msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(f) -> bool:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError:
            return False

    def _unlock(f) -> None:
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def file_crc32(path: Path) -> tuple[int, int]:
    crc, size = 0, 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            crc = zlib.crc32(chunk, crc)
            size += len(chunk)
    return size, crc
