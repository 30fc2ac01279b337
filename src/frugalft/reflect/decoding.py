"""A reflection decoder built for the GPU: static KV cache, uniforms from a counter-based hash, CUDA graphs.

The loop decoder ``generate`` (below; the reference) runs transformers' forward once per token: a growing KV cache, mask
building in Python, and (with the per-episode generators) one uniform per row drawn on the host, so the
device waits for the host at every token. Here a decode step is a fixed set of tensor ops:

- **uniforms without the host**: row j gets one 63-bit key per reflection (one draw from its episode's
  generator: the key is a function of (seed, episode id, how far the episode has played)), and its t-th
  token's uniform is Philox4x32-10(counter = (t, 0, 0, 0), key) (Salmon et al., SC 2011; Random123's
  known-answer vectors are tested), computed for all tokens at once with integer tensor ops on the device.
  A row's tokens depend on its own key only, never on its batch mates or on when they stop;
- **static KV cache**: preallocated (batch, heads, prompt + new tokens, head dim) buffers per layer, written
  in place at the step's slot; the step attends over the whole buffer under a key mask;
- **CUDA graphs** (on CUDA, by default): one decode step (forward, sampling, end-of-sequence bookkeeping) is
  captured once per (batch bucket, length bucket) and replayed per token; the host checks for "every row
  has ended" every ``check_every`` tokens only.

Implemented for GPT-2-architecture models (the embedded ``tiny*`` models, ``gpt2-xl-shape``, GPT-2
checkpoints); ``supports(model)`` says so, and ``Reflector`` falls back to the loop decoder (fed the same
counter uniforms) for other models. Sampling is ``sample_from_logits`` (inverse CDF) in both
decoders, so given the same uniforms they pick the same tokens up to float rounding of the logits.
On CPU the same step code runs eagerly (no graphs, no buckets); tests check it there.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from frugalft.models.decode import DecodeStep, decode
from frugalft.reflect.policy import attention_backends


# ---- sampling and the loop decoder (frugalft.models.decode: transformers' forward once per token) ----------
def sample_from_logits(logits: torch.Tensor, temperature: float, generators: Sequence[torch.Generator] | None = None,
                       live: Sequence[bool] | None = None, u: torch.Tensor | None = None) -> torch.Tensor:
    """One token per row: greedy when ``temperature <= 0``, else a draw by inverse CDF from softmax(logits/T).

    With ``generators``, row j's uniform comes from ``generators[j]``, and only rows that are ``live`` draw
    (an ended row's stream must not advance, or its neighbours' lengths would shift it). ``u``: (batch, 1)
    uniforms given instead (on the logits' device; no draw, no host sync)."""
    if temperature <= 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits.float() / temperature, -1).cumsum(-1)
    if u is None and generators is None:
        u = torch.rand((logits.shape[0], 1), device=logits.device)
    elif u is None:
        live = live if live is not None else [True] * len(generators)
        u = torch.tensor([[float(torch.rand(1, generator=g)) if on else 0.0] for g, on in zip(generators, live,
                                                                                              strict=True)],
                         device=logits.device)
    return torch.searchsorted(cdf, u * cdf[:, -1:]).squeeze(-1).clamp(max=logits.shape[-1] - 1)


@torch.no_grad()
def generate(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
             temperature: float, eos_id: int, pad_id: int,
             generators: Sequence[torch.Generator] | None = None,
             uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Batched sampling with a KV cache from left-padded prompts: (batch, <= max_new_tokens) new token ids.

    Rows that have emitted eos are padded with ``pad_id`` (eos included once); the loop stops when every row
    has ended or at the cap. ``generators``: one per row, see ``sample_from_logits``; ``uniforms``: (batch,
    >= max_new_tokens) precomputed instead, token t of row j drawn with ``uniforms[j, t]`` (the hook that
    compares this decoder with ``decoding.StaticDecoder``).
    """
    with attention_backends(input_ids.device):
        return _decode(model, input_ids, attention_mask, max_new_tokens, temperature, eos_id, pad_id, generators,
                       uniforms)


def _decode(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
            temperature: float, eos_id: int, pad_id: int,
            generators: Sequence[torch.Generator] | None = None,
            uniforms: torch.Tensor | None = None) -> torch.Tensor:
    if uniforms is not None:
        uniforms = uniforms.to(device=input_ids.device, dtype=torch.float32)

    def choose(step: DecodeStep) -> torch.Tensor:
        if uniforms is not None:
            return sample_from_logits(step.logits, temperature, u=uniforms[:, step.t:step.t + 1])
        live = step.live.tolist() if generators is not None else None  # an ended row's stream must not advance
        return sample_from_logits(step.logits, temperature, generators, live)

    return decode(model, input_ids, attention_mask, max_new_tokens, choose, [eos_id], pad_id)


# ---- counter-based uniforms ------------------------------------------------------------------------------
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # Philox4x32 multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # Weyl key increments
_MASK32 = 0xFFFFFFFF


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit words of ``a * m`` for ``a`` < 2^32 held in int64, without int64 overflow: ``m`` is
    split into 16-bit halves so every partial product stays below 2^49."""
    p = a * (m >> 16)
    q = a * (m & 0xFFFF)
    s = ((p & 0xFFFF) << 16) + q  # product = (p >> 16) * 2^32 + s
    return (p >> 16) + (s >> 32), s & _MASK32


def philox4x32(counter: torch.Tensor, key: torch.Tensor, rounds: int = 10) -> torch.Tensor:
    """Philox4x32-``rounds`` of (..., 4) counter words and (..., 2) key words (int64 holding uint32 values)."""
    c0, c1, c2, c3 = counter.unbind(-1)
    k0, k1 = key.unbind(-1)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, _M0)
        hi1, lo1 = _mulhilo(c2, _M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return torch.stack([c0, c1, c2, c3], -1)


def counter_uniforms(keys: torch.Tensor, n: int) -> torch.Tensor:
    """(batch, n) float32 uniforms in [0, 1): token t of row j from Philox(counter (t, 0, 0, 0), key keys[j]).

    ``keys``: (batch,) int64, non-negative (63 bits used); the result is on ``keys``' device, computed there.
    24 bits per uniform (exact in float32, never 1.0)."""
    keys = keys.to(torch.int64)
    key = torch.stack([keys & _MASK32, keys >> 32], -1)[:, None, :].expand(-1, n, -1)
    t = torch.arange(n, device=keys.device, dtype=torch.int64)[None, :].expand(keys.shape[0], -1)
    zero = torch.zeros_like(t)
    words = philox4x32(torch.stack([t, zero, zero, zero], -1), key)
    return (words[..., 0] >> 8).to(torch.float32) * (1.0 / (1 << 24))


def row_keys(generators: Sequence[torch.Generator] | None, batch: int) -> torch.Tensor:
    """One 63-bit key per row (CPU int64): a draw from row j's generator (its episode's stream), else from the
    global RNG. One draw per row per reflection, however many tokens it gets."""
    if generators is None:
        return torch.randint(0, 2**63 - 1, (batch,), dtype=torch.int64)
    return torch.cat([torch.randint(0, 2**63 - 1, (1,), dtype=torch.int64, generator=g) for g in generators])


# ---- the decoder -----------------------------------------------------------------------------------------
def supports(model: nn.Module) -> bool:
    """Whether ``StaticDecoder`` implements ``model``'s architecture (GPT-2 self-attention blocks)."""
    from transformers import GPT2LMHeadModel

    cfg = getattr(model, "config", None)
    return (isinstance(model, GPT2LMHeadModel) and not getattr(cfg, "add_cross_attention", False)
            and not getattr(cfg, "scale_attn_by_inverse_layer_idx", False)
            and not getattr(cfg, "reorder_and_upcast_attn", False))


@dataclass
class _State:
    """The buffers a decode step reads and writes in place (static addresses: a CUDA graph replays on them)."""

    tok: torch.Tensor  # (B,) the token to feed
    pos: torch.Tensor  # (B,) its position id
    slot: torch.Tensor  # (1,) its cache slot (the same for every row: prompts are left-padded)
    t: torch.Tensor  # (1,) index of the token this step samples
    done: torch.Tensor  # (B,) bool: the row has emitted eos (or is batch padding)
    bias: torch.Tensor  # (B, 1, 1, L) additive attention mask in the model's dtype: 0 where a row may attend
    keys: list[torch.Tensor]  # per layer (B, H, L, D)
    values: list[torch.Tensor]
    u: torch.Tensor  # (B, T) float32 uniforms
    out: torch.Tensor  # (B, T) sampled tokens (pad after eos)


class StaticDecoder:
    """Batched sampling for a GPT-2-architecture model with a static KV cache (and CUDA graphs on CUDA).

    ``graphs``: capture the decode step in a CUDA graph (default: on CUDA); ``check_every``: tokens between
    host checks for "every row ended" (default 8 on CUDA, 1 elsewhere); ``max_graphs``: captured (batch,
    length) buckets kept (each holds its own KV buffers); ``compile``: run the decode step through
    ``torch.compile`` (the forward, not the sampling; the first call per shape compiles, tens of seconds);
    ``attention``: the step's single-query attention as ``sdpa`` (one fused kernel) or ``matmul`` (two
    batched matrix-vector products and a softmax)."""

    def __init__(self, model: nn.Module, graphs: bool | None = None, check_every: int | None = None,
                 max_graphs: int = 4, compile: bool = False, attention: str = "sdpa"):
        if not supports(model):
            raise ValueError(f"StaticDecoder implements GPT-2 self-attention models, not {type(model).__name__}")
        self.model = model
        self.device = next(model.parameters()).device
        cuda = self.device.type == "cuda"
        self.graphs = cuda if graphs is None else graphs
        if self.graphs and not cuda:
            raise ValueError("CUDA graphs need the model on a CUDA device")
        self.check_every = check_every or (8 if cuda else 1)
        self.max_graphs = max_graphs
        if attention not in ("sdpa", "matmul"):
            raise ValueError(f"attention must be sdpa or matmul, not {attention!r}")
        self.attention = attention
        self._forward = torch.compile(self._step_logits, dynamic=False) if compile else self._step_logits
        self._captured: OrderedDict[tuple, tuple[_State, torch.cuda.CUDAGraph]] = OrderedDict()
        cfg = model.config
        self.n_head = cfg.n_head
        self.head_dim = cfg.n_embd // cfg.n_head
        self.scale = self.head_dim ** -0.5 if getattr(cfg, "scale_attn_weights", True) else 1.0  # as GPT2Attention

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, max_new_tokens: int,
                 temperature: float, eos_id: int, pad_id: int, uniforms: torch.Tensor) -> torch.Tensor:
        """As ``reflection.generate`` with ``uniforms`` (batch, >= max_new_tokens): (batch, <= max_new_tokens)."""

        batch, width = input_ids.shape
        if max_new_tokens <= 0:
            return torch.zeros((batch, 0), dtype=torch.long, device=input_ids.device)
        with attention_backends(self.device):
            if self.graphs and max_new_tokens > 1:  # shapes rounded up, so one capture serves many calls
                rows = 1 << (batch - 1).bit_length()
                length = -(-(width + max_new_tokens) // 64) * 64
                state, graph = self._graph(rows, length, max_new_tokens, temperature, eos_id, pad_id)
            else:
                rows, length, graph = batch, width + max_new_tokens, None
                state = self._new_state(rows, length, max_new_tokens)
            first = self._prefill(state, input_ids, attention_mask, uniforms[:, :max_new_tokens], temperature,
                                  eos_id)
            state.out[:batch, 0] = first
            steps = 1
            while steps < max_new_tokens:
                if steps % self.check_every == 0 and bool(state.done[:batch].all()):
                    break
                if graph is not None:
                    graph.replay()
                else:
                    self._step(state, temperature, eos_id, pad_id)
                steps += 1
            out = state.out[:batch, :steps].clone()
        ended = (out == eos_id).cumsum(1) > 0  # the loop decoder stops once every row has emitted eos
        stop = ended.all(0).nonzero()
        n = int(stop[0]) + 1 if len(stop) else steps
        return out[:, :n]

    # -- the pieces: one prefill (eager, variable shape), then one step per token (fixed shape) --
    def _new_state(self, rows: int, length: int, new_tokens: int) -> _State:
        dev, dtype = self.device, next(self.model.parameters()).dtype
        long = {"dtype": torch.long, "device": dev}
        shape = (rows, self.n_head, length, self.head_dim)
        layers = len(self.model.transformer.h)
        return _State(
            tok=torch.zeros(rows, **long), pos=torch.zeros(rows, **long), slot=torch.zeros(1, **long),
            t=torch.ones(1, **long), done=torch.ones(rows, dtype=torch.bool, device=dev),
            bias=torch.full((rows, 1, 1, length), float("-inf"), dtype=dtype, device=dev),
            keys=[torch.zeros(shape, dtype=dtype, device=dev) for _ in range(layers)],
            values=[torch.zeros(shape, dtype=dtype, device=dev) for _ in range(layers)],
            u=torch.zeros((rows, new_tokens), dtype=torch.float32, device=dev),
            out=torch.zeros((rows, new_tokens), **long))

    def _qkv(self, block: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = block.attn.c_attn(block.ln_1(x)).split(self.n_head * self.head_dim, dim=2)
        shape = (x.shape[0], x.shape[1], self.n_head, self.head_dim)
        return q.view(shape).transpose(1, 2), k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)

    def _block_out(self, block: nn.Module, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        x = block.attn.c_proj(attn.transpose(1, 2).reshape(x.shape)) + x  # GPT2Block's residual order
        return x + block.mlp(block.ln_2(x))

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(self.model.transformer.ln_f(x))

    def _prefill(self, st: _State, ids: torch.Tensor, mask: torch.Tensor, uniforms: torch.Tensor,
                 temperature: float, eos_id: int) -> torch.Tensor:
        """Run the prompts, fill the cache rows ``:batch``, sample token 0; reset the step's buffers."""

        tr = self.model.transformer
        batch, width = ids.shape
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        x = tr.wte(ids) + tr.wpe(positions)
        valid = mask.bool()
        causal = torch.ones((width, width), dtype=torch.bool, device=ids.device).tril()
        # Causal over the row's own tokens; a padding query sees itself only (a fully masked row would be NaN).
        attend = (causal & valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=ids.device)
        for layer, block in enumerate(tr.h):
            q, k, v = self._qkv(block, x)
            st.keys[layer][:batch, :, :width] = k
            st.values[layer][:batch, :, :width] = v
            a = F.scaled_dot_product_attention(q, k, v, attn_mask=attend[:, None], scale=self.scale)
            x = self._block_out(block, x, a)
        u = uniforms.to(device=self.device, dtype=torch.float32)
        first = sample_from_logits(self._logits(x[:, -1]), temperature, u=u[:, :1])
        st.bias.fill_(float("-inf"))
        st.bias[:batch, 0, 0, :width].masked_fill_(valid, 0.0)
        st.bias[batch:, 0, 0, 0] = 0.0  # batch padding attends to one (zero) slot: finite, then ignored
        st.u.zero_()
        st.u[:batch] = u
        st.done.fill_(True)
        st.done[:batch] = first == eos_id
        st.tok.zero_()
        st.tok[:batch] = first
        st.pos.zero_()
        st.pos[:batch] = positions[:, -1] + 1
        st.slot.fill_(width)
        st.t.fill_(1)
        st.out.zero_()
        return first

    def _step_logits(self, st: _State) -> torch.Tensor:
        """Feed ``tok`` at ``slot`` (cache written in place): the next token's logits."""
        tr = self.model.transformer
        x = (tr.wte(st.tok) + tr.wpe(st.pos))[:, None]
        # One additive mask for every layer (a boolean one would be converted by each attention call).
        st.bias.index_fill_(3, st.slot, 0.0)
        for layer, block in enumerate(tr.h):
            q, k, v = self._qkv(block, x)
            keys, values = st.keys[layer], st.values[layer]
            keys.index_copy_(2, st.slot, k)
            values.index_copy_(2, st.slot, v)
            if self.attention == "sdpa":
                a = F.scaled_dot_product_attention(q, keys, values, attn_mask=st.bias, scale=self.scale)
            else:  # one query per row: scores and mixing are batched matrix-vector products
                scores = torch.matmul(q, keys.transpose(-1, -2)).mul_(self.scale).add_(st.bias)
                a = torch.matmul(torch.softmax(scores, -1, dtype=torch.float32).to(values.dtype), values)
            x = self._block_out(block, x, a)
        return self._logits(x[:, -1])

    def _step(self, st: _State, temperature: float, eos_id: int, pad_id: int) -> None:
        """Feed ``tok`` at ``slot``, sample token ``t`` into ``out``, advance: in place, no host reads."""

        token = sample_from_logits(self._forward(st), temperature, u=st.u.index_select(1, st.t))
        token = torch.where(st.done, torch.full_like(token, pad_id), token)
        st.out.index_copy_(1, st.t, token[:, None])
        st.done.logical_or_(token == eos_id)
        st.tok.copy_(token)
        st.pos.add_(1)
        st.slot.add_(1)
        st.t.add_(1)

    def _graph(self, rows: int, length: int, new_tokens: int, temperature: float, eos_id: int,
               pad_id: int) -> tuple[_State, torch.cuda.CUDAGraph]:
        key = (rows, length, new_tokens, float(temperature), eos_id, pad_id)
        if key in self._captured:
            self._captured.move_to_end(key)
            return self._captured[key]
        while len(self._captured) >= self.max_graphs:
            self._captured.popitem(last=False)
        state = self._new_state(rows, length, new_tokens)
        state.bias[:, 0, 0, 0] = 0.0
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm-up off the capture (lazy inits, kernel choices)
            for _ in range(2):
                self._step(state, temperature, eos_id, pad_id)
                state.slot.fill_(1)
                state.t.fill_(1)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._step(state, temperature, eos_id, pad_id)
        self._captured[key] = (state, graph)
        return state, graph
