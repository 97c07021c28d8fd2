"""Crash-safe training checkpoints and random-number-generator states.

A checkpoint is one ``torch.save`` file named ``checkpoint_<counter>.pt`` (counter zero-padded to
8 digits, so names sort like numbers). :func:`save_checkpoint` writes it to a temporary file in
the same folder, flushes and fsyncs it, then renames it over the final name with ``os.replace``
(atomic on POSIX and Windows) and fsyncs the folder. A crash at any moment therefore leaves
either the previous checkpoints untouched or the new one complete, never a half-written file
under a checkpoint name. Older checkpoints are pruned only after the new one is in place.

:func:`load_checkpoint` loads the newest checkpoint that can be read and falls back to older
ones when the newest is corrupt or truncated (a disk that filled up, a copy cut short).

Loading uses ``torch.load(weights_only=True)`` by default: tensors, numbers, strings, lists,
tuples and dicts only, so opening a checkpoint never runs code. Everything the trainers store
fits in that (the RNG states are converted to plain lists by :func:`get_rng_states`).
"""

import os
import random
import re

import numpy as np
import torch

from ..utils import common_functions as c_f

_NAME = re.compile(r"^checkpoint_(\d+)\.pt$")
_TEMP_PREFIX = ".checkpoint_tmp_"


class CheckpointError(ValueError):
    """No usable checkpoint in a folder (none there, or every one of them unreadable).

    A ``ValueError`` because it means the ``folder`` argument does not hold what the caller needs;
    the message lists every file that was tried and why it was rejected.
    """


def checkpoint_path(folder, counter):
    return os.path.join(folder, f"checkpoint_{int(counter):08d}.pt")


def list_checkpoints(folder):
    """``[(counter, path), ...]`` of the checkpoint files in ``folder``, newest (highest) first."""
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = _NAME.match(name)
        if match:
            found.append((int(match.group(1)), os.path.join(folder, name)))
    return sorted(found, reverse=True)


def _fsync_folder(folder):
    # The rename is durable only once the directory entry itself reaches the disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows cannot open directories; os.replace is still atomic there
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(folder, state, counter, keep=2):
    """Write ``state`` atomically as checkpoint number ``counter``; return its path.

    After the new file is complete, all but the ``keep`` newest checkpoints are deleted (the new
    one always counts among them). Temporary files left behind by a writer that was killed are
    removed as well, so one folder should have one writer at a time.
    """
    if not isinstance(keep, int) or isinstance(keep, bool) or keep < 1:
        raise ValueError(f"keep must be an int >= 1, got {keep!r}")
    if not isinstance(counter, int) or isinstance(counter, bool) or counter < 0:
        raise ValueError(f"counter must be an int >= 0, got {counter!r}")
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(folder):
        if name.startswith(_TEMP_PREFIX):
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
    path = checkpoint_path(folder, counter)
    temp = os.path.join(folder, f"{_TEMP_PREFIX}{counter:08d}_{os.getpid()}")
    try:
        with open(temp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise
    _fsync_folder(folder)
    others = [p for _, p in list_checkpoints(folder) if p != path]
    for old in others[keep - 1 :]:
        try:
            os.remove(old)
        except OSError:
            c_f.LOGGER.warning(f"Could not delete old checkpoint {old}")
    return path


def load_checkpoint(folder, map_location=None, weights_only=True):
    """``(state, path)`` of the newest readable checkpoint in ``folder``.

    A checkpoint that fails to load (truncated, corrupt, not a dict) is skipped with a warning and
    the next older one is tried. Raises :class:`CheckpointError` when the folder holds no
    checkpoint or none of them can be read.
    """
    candidates = list_checkpoints(folder)
    if not candidates:
        raise CheckpointError(f"no checkpoint (checkpoint_<n>.pt) found in folder {folder!r}")
    failures = []
    for _, path in candidates:
        try:
            state = torch.load(path, map_location=map_location, weights_only=weights_only)
        except Exception as err:  # any failure to read means "unusable": fall back to an older one
            failures.append(f"{os.path.basename(path)}: {type(err).__name__}: {err}")
            c_f.LOGGER.warning(f"Skipping unreadable checkpoint {path}: {type(err).__name__}: {err}")
            continue
        if not isinstance(state, dict):
            failures.append(f"{os.path.basename(path)}: holds a {type(state).__name__}, not a dict")
            continue
        return state, path
    details = "; ".join(failures)
    raise CheckpointError(f"no readable checkpoint in folder {folder!r}: {details}")


# ----------------------------------------------------------------------------------------------
# random number generators


def _plain(value):
    """numpy values -> lists/ints/floats, so that ``weights_only`` loading accepts them."""
    if isinstance(value, np.ndarray):
        return {"__ndarray__": value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def _unplain(value):
    if isinstance(value, dict):
        if "__ndarray__" in value:
            return np.asarray(value["__ndarray__"], dtype=value["dtype"])
        return {k: _unplain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_unplain(v) for v in value)
    return value


def _numpy_source_state(source):
    if isinstance(source, np.random.Generator):
        return {"kind": "Generator", "state": _plain(source.bit_generator.state)}
    if isinstance(source, np.random.RandomState):
        return {"kind": "RandomState", "state": _plain(source.get_state())}
    return None


def get_rng_states():
    """States of python's ``random``, numpy's global RNG, ``c_f.NUMPY_RANDOM`` (when it is its
    own generator), torch's CPU RNG and every CUDA device's RNG (when CUDA is available)."""
    states = {
        "python": random.getstate(),
        "numpy": _plain(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    library_source = _numpy_source_state(c_f.NUMPY_RANDOM)
    if library_source is not None:
        states["c_f_numpy"] = library_source
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states):
    """Restore what :func:`get_rng_states` returned; missing entries are left alone."""
    if "python" in states:
        version, internal, gauss = states["python"]
        random.setstate((version, tuple(internal), gauss))
    if "numpy" in states:
        np.random.set_state(tuple(_unplain(states["numpy"])))
    if "torch" in states:
        torch.set_rng_state(states["torch"].cpu())
    source = states.get("c_f_numpy")
    if source is not None:
        if source["kind"] == "Generator" and isinstance(c_f.NUMPY_RANDOM, np.random.Generator):
            c_f.NUMPY_RANDOM.bit_generator.state = _unplain(source["state"])
        elif source["kind"] == "RandomState" and isinstance(c_f.NUMPY_RANDOM, np.random.RandomState):
            c_f.NUMPY_RANDOM.set_state(tuple(_unplain(source["state"])))
        else:
            c_f.LOGGER.warning(
                f"c_f.NUMPY_RANDOM is a {type(c_f.NUMPY_RANDOM).__name__} now but the saved state is "
                f"of a {source['kind']}; its state was not restored"
            )
    if "cuda" in states and torch.cuda.is_available():
        saved = states["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in saved])
        else:
            c_f.LOGGER.warning(
                f"saved CUDA RNG states are for {len(saved)} devices, "
                f"{torch.cuda.device_count()} are visible; CUDA RNG states not restored"
            )
