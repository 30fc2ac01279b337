"""Checkpoints that resume a run exactly: weights, heads, optimizer, scheduler, RNG states and counters.

Layout of one checkpoint directory (written whole to a temp sibling, then renamed):

    step-00000100/
        model.safetensors     trainable weights: the LoRA adapter when the model is a PeftModel, else all
        <head>.safetensors    one file per extra module (value head, ...)
        state.pt              optimizer, scheduler and RNG states
        meta.json             {"step": ..., "counters": {...}}

``LATEST`` beside them names the newest complete checkpoint; it is replaced atomically after the directory
is in place, so a crash at any point leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from frugalft.atomic import atomic_path, write_text
from frugalft.seeding import rng_state, set_rng_state


class CheckpointError(RuntimeError):
    pass


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
    """Write ``directory/step-<step>`` atomically, point ``LATEST`` at it, keep the newest ``keep``."""
    directory = Path(directory)
    final = directory / f"step-{step:08d}"
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
    write_text(directory / "LATEST", final.name + "\n")
    if keep:
        old = sorted(p for p in directory.glob("step-*") if p.is_dir())[:-keep]
        for p in old:
            shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(directory: str | Path) -> Path | None:
    """The checkpoint ``LATEST`` names, or None when there is none yet."""
    directory = Path(directory)
    pointer = directory / "LATEST"
    if not pointer.exists():
        return None
    path = directory / pointer.read_text().strip()
    if not (path / "meta.json").exists():
        raise CheckpointError(f"{pointer} names {path.name}, which is missing or incomplete")
    return path


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
