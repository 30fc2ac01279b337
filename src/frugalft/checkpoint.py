"""Checkpoints that resume a run exactly: weights, heads, optimizer, scheduler, RNG states and counters.

Layout of one checkpoint directory (written whole to a temp sibling, then renamed):

    step-00000100/
        model.safetensors     trainable weights: the LoRA adapter when the model is a PeftModel, else all
        <head>.safetensors    one file per extra module (value head, ...)
        state.pt              optimizer, scheduler and RNG states
        meta.json             {"step": ..., "counters": {...}}
        manifest.json         written last: size and sha256 of every file above, and ``seq``, the write order

``LATEST`` beside them names the newest complete checkpoint; it is replaced atomically after the directory
is in place, so a crash at any point leaves the previous checkpoint usable. ``latest_checkpoint`` checks the
one LATEST names against its manifest and, when LATEST is missing or names a damaged checkpoint, falls back
to the newest one that verifies (saying which). "Newest" is the write order (``seq``), not the step number:
a run that restarted at a lower step must not see its new checkpoints pruned in favour of old ones.
Checkpoints written before manifests existed load as before (they are older than any manifest one).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from frugalft.atomic import atomic_path, write_text
from frugalft.seeding import rng_state, set_rng_state


class CheckpointError(RuntimeError):
    pass


MANIFEST = "manifest.json"
_log = logging.getLogger("frugalft.checkpoint")


def trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights that training changes: a PeftModel's adapter only, otherwise the full state dict."""
    try:
        from peft import PeftModel, get_peft_model_state_dict

        if isinstance(model, PeftModel):
            return get_peft_model_state_dict(model)
    except ImportError:  # pragma: no cover - peft is a dependency
        pass
    return model.state_dict()


def _load_trainable(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    from peft import PeftModel, set_peft_model_state_dict

    if isinstance(model, PeftModel):
        result = set_peft_model_state_dict(model, state)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise CheckpointError(f"checkpoint has adapter keys the model lacks: {unexpected[:5]}")
        return
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied weights (lm_head = embeddings) are saved once; anything else missing is a mismatch.
    missing = [k for k in missing if not k.endswith("lm_head.weight")]
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


def _contiguous(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors refuses shared storage (tied weights); clone keeps the first name of each.
    seen: set[int] = set()
    out = {}
    for k, v in state.items():
        ptr = v.data_ptr()
        if ptr in seen and v.numel() > 0:
            continue
        seen.add(ptr)
        out[k] = v.detach().contiguous().cpu().clone()
    return out


def save_checkpoint(
    directory: str | Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    heads: dict[str, torch.nn.Module] | None = None,
    counters: dict[str, Any] | None = None,
    keep: int | None = 3,
) -> Path:
    """Write ``directory/step-<step>`` atomically, point ``LATEST`` at it, keep the newest ``keep`` (by write
    order; never the one just written). A failed write is a CheckpointError naming the path and the cause."""
    directory = Path(directory)
    final = directory / f"step-{step:08d}"
    try:
        seq = 1 + max((_seq(p) for p in _step_dirs(directory)), default=0)
        with atomic_path(final) as tmp:
            tmp.mkdir()
            save_file(_contiguous(trainable_state_dict(model)), str(tmp / "model.safetensors"))
            for name, head in (heads or {}).items():
                save_file(_contiguous(head.state_dict()), str(tmp / f"{name}.safetensors"))
            torch.save(
                {
                    "optimizer": optimizer.state_dict() if optimizer is not None else None,
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "rng": rng_state(),
                },
                tmp / "state.pt",
            )
            (tmp / "meta.json").write_text(json.dumps({"step": step, "counters": counters or {}}, indent=2))
            files = _write_manifest(tmp, step, seq)  # last: a manifest means every file before it is whole
        _VERIFIED[_verified_key(final, files)] = True  # just hashed: resuming from it need not hash it again
        write_text(directory / "LATEST", final.name + "\n")
    except (OSError, RuntimeError, SafetensorError) as e:
        raise CheckpointError(f"could not write checkpoint {final}: {_write_failure(e, directory)}") from e
    if keep:
        for p in [p for p in _newest_first(directory) if p != final][keep - 1:]:
            shutil.rmtree(p, ignore_errors=True)
    return final


def _write_failure(e: BaseException, directory: Path) -> str:
    """One line on why a write failed: the OS error by name (ENOSPC...) and, as torch.save reports a full disk
    as a bare RuntimeError, the space left."""
    if isinstance(e, OSError) and e.errno:
        what = f"{e.strerror or os.strerror(e.errno)} [{errno.errorcode.get(e.errno, e.errno)}]"
        if e.filename:
            what += f" ({e.filename})"
    else:
        lines = str(e).strip().splitlines()
        what = f"{type(e).__name__}: {lines[0] if lines else ''}".rstrip(": ")
    with suppress(OSError):
        what += f"; {shutil.disk_usage(directory).free / 2**20:.0f} MiB free there"
    return what


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _write_manifest(folder: Path, step: int, seq: int) -> list[str]:
    files = {}
    for p in sorted(folder.iterdir()):
        with open(p, "rb") as f:
            os.fsync(f.fileno())  # on disk before the rename makes the checkpoint visible
        files[p.name] = {"size": p.stat().st_size, "sha256": _sha256(p)}
    manifest = {"step": step, "seq": seq, "written": round(time.time(), 3), "files": files}
    with open(folder / MANIFEST, "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return list(files)


def _step_dirs(directory: Path) -> list[Path]:
    return [p for p in directory.glob("step-*") if p.is_dir()] if directory.is_dir() else []


def _seq(path: Path) -> int:
    """The write order of a checkpoint (0: none recorded, a checkpoint from before manifests)."""
    try:
        return int(json.loads((path / MANIFEST).read_text())["seq"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _newest_first(directory: Path) -> list[Path]:
    return sorted(_step_dirs(directory), key=lambda p: (_seq(p), p.name), reverse=True)


_VERIFIED: dict[tuple, bool] = {}  # checkpoints whose hashes matched, keyed by their files' (name, size, mtime)


def verify_checkpoint(path: str | Path) -> str | None:
    """None when ``path`` is a whole checkpoint (every file its manifest lists, with that size and sha256),
    else what is wrong with it. One without a manifest (written before manifests) needs meta.json only."""
    path = Path(path)
    if not path.is_dir():
        return "missing"
    if not (path / "meta.json").is_file():
        return "incomplete (no meta.json)"
    if not (path / MANIFEST).is_file():
        return None if (path / "model.safetensors").is_file() else "incomplete (no model.safetensors)"
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        key = _verified_key(path, files)
    except FileNotFoundError as e:
        return f"{Path(str(e.filename)).name} is missing"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"unreadable manifest ({e})"
    if key in _VERIFIED:
        return None
    for name, want in files.items():
        size = (path / name).stat().st_size
        if size != want["size"]:
            return f"{name} is truncated or damaged ({size} bytes, the manifest says {want['size']})"
        if _sha256(path / name) != want["sha256"]:
            return f"{name} does not match its checksum"
    _VERIFIED[key] = True
    return None


def _verified_key(path: Path, names) -> tuple:
    stats = {name: (path / name).stat() for name in names}
    return str(path.resolve()), tuple((n, s.st_size, s.st_mtime_ns) for n, s in sorted(stats.items()))


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint to resume from: the one ``LATEST`` names when it verifies, else the newest one that does
    (with a warning naming both); None when there is none at all. A CheckpointError when checkpoints exist but
    none of them is whole."""
    directory = Path(directory)
    pointer = directory / "LATEST"
    named, problem = None, "is missing"
    if pointer.exists():
        named = directory / pointer.read_text().strip()
        reason = verify_checkpoint(named)
        if reason is None:
            return named
        problem = f"names {named.name}, which is missing or incomplete" + ("" if reason == "missing" else
                                                                           f" ({reason})")
    broken = []
    for path in _newest_first(directory):
        if path == named:
            continue
        reason = verify_checkpoint(path)
        if reason is None:
            _warn(directory, f"{pointer} {problem}; resuming from {path.name}, the newest checkpoint that verifies")
            return path
        broken.append(f"{path.name}: {reason}")
    if named is None and not broken:
        return None  # nothing saved yet
    raise CheckpointError(f"{pointer} {problem}, and no other checkpoint in {directory} verifies"
                          + (f" ({'; '.join(broken)})" if broken else "")
                          + "; rerun with --restart to start over")


def _warn(directory: Path, message: str) -> None:
    """To stderr, and to the run's run.log when this is a run directory's checkpoints folder."""
    _log.warning(message)
    run_log = logging.getLogger(f"frugalft.run.{directory.parent.resolve()}")
    if run_log.handlers:
        run_log.warning(message)


def load_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    heads: dict[str, torch.nn.Module] | None = None,
    restore_rng: bool = True,
) -> dict[str, Any]:
    """Load what ``save_checkpoint`` wrote into the given objects; returns ``{"step", "counters"}``."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise CheckpointError(f"no checkpoint at {path} (expected {meta_path.name} there)")
    reason = verify_checkpoint(path)
    if reason is not None:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt: {reason}")
    try:
        meta = json.loads(meta_path.read_text())
        _load_trainable(model, load_file(str(path / "model.safetensors")))
        for name, head in (heads or {}).items():
            head.load_state_dict(load_file(str(path / f"{name}.safetensors")))
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except (OSError, SafetensorError, json.JSONDecodeError, RuntimeError, EOFError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt: {e}") from e
    if optimizer is not None:
        if state["optimizer"] is None:
            raise CheckpointError(f"checkpoint {path} has no optimizer state")
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"] is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return {"step": meta["step"], "counters": meta.get("counters", {})}
