"""Text generation with the mixer protocol: parallel prefill, then one jitted step per token.

    gen = generate(model, params, [prompt_ids], max_new_tokens=64)            # greedy
    gen = generate(model, params, [prompt_ids], max_new_tokens=64, temperature=0.8,
                   top_k=50, top_p=0.95, seed=1)
    text, stats = generate_text(model, params, tokenizer, "Once upon a time", max_new_tokens=64)

The prompt goes through ``prefill`` (parallel over the prompt), then ``step`` runs once per
new token. Prompts of a batch must have equal lengths: a recurrent state cannot skip
padding, so ragged prompts are generated one call each.

Sampling: greedy (argmax) at ``temperature == 0``; otherwise the logits are divided by the
temperature, filtered by top-k, then by top-p (nucleus), and sampled with a key derived
from ``(seed, position in the sequence, row)`` alone, so a row's samples do not depend on
how the loop was run or which other prompts shared its batch.

A model whose state is a fixed-size cache (the Transformer's KV cache, AFT-full/local) or
that adds absolute positions stops at ``max_len`` tokens in all: a prompt longer than that
is an error, and generation stops early there with the reason ``"max_len"``.

Compilation is timed apart from running (each program is compiled ahead of its first call
and kept), so ``prefill_s`` and ``tokens_per_s`` measure the model, not XLA.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from experiments.sampling import Sampling, check_seed, choose

# --- what bounds a model's context ------------------------------------------------------


@functools.lru_cache(maxsize=64)
def context_limit(model) -> int | None:
    """The most tokens (prompt + generated) the model can hold, or None if unbounded.

    Absolute position embeddings end at the backbone's ``max_len``. A mixer with a
    ``max_len`` field whose state counts positions (``pos``) keeps a cache or a position
    table of that size (attention's KV cache, AFT-full/local); S4's ``max_len`` only
    bounds its parallel kernel, and its state has no ``pos``: its recurrence runs on.
    """
    backbone = model.backbone
    limits = [backbone.max_len] if backbone.pos_emb != "none" else []
    mixer_max_len = _mixer_max_len(backbone.mixer_factory)
    if mixer_max_len is not None and _mixer_state_counts_positions(model):
        limits.append(mixer_max_len)
    return min(limits) if limits else None


def _mixer_max_len(factory) -> int | None:
    keywords = {}
    while isinstance(factory, functools.partial):  # arch.build wraps the mixer class
        keywords = {**factory.keywords, **keywords}
        factory = factory.func
    if not dataclasses.is_dataclass(factory):
        return None
    fields = {f.name: f for f in dataclasses.fields(factory)}
    if "max_len" not in fields:
        return None
    return int(keywords.get("max_len", fields["max_len"].default))


def _mixer_state_counts_positions(model) -> bool:
    # Shapes only: nothing is computed or allocated.
    state = jax.eval_shape(
        lambda key: model.init_with_output(key, 1, method="init_state")[0], jax.random.key(0)
    )
    return any("pos" in getattr(layer.mixer, "_fields", ()) for layer in state.layers)


PIECES = (512, 64, 8, 1)


def prefill_pieces(length: int) -> list[int]:
    """``length`` in pieces of 512, 64, 8 and 1 tokens, largest first (its base-8 digits,
    every multiple of 512 in pieces of 512: 300 -> 4 x 64 + 5 x 8 + 4 x 1).

    A prompt (or a zero-shot question's context) is prefilled piece by piece, each piece
    continuing the state, so a jitted prefill compiles for four shapes over any set of
    lengths instead of once per length (lm-eval's generate_until sees hundreds)."""
    out = []
    for piece in PIECES:
        out += [piece] * (length // piece)
        length %= piece
    return out


# --- compiled programs ------------------------------------------------------------------


class _Programs:
    """A model's init/prefill/step programs for one ``Sampling``, compiled ahead of time
    per argument signature, so that compiling is timed apart from running."""

    def __init__(self, model, sampling: Sampling):
        def prefill(params, state, tokens, seed, position):
            state, logits = model.apply(params, state, tokens, method="prefill")
            last = logits[:, -1]
            return state, choose(last, sampling, seed, position), _finite(last)

        def step(params, state, token, seed, position):
            state, logits = model.apply(params, state, token, method="step")
            return state, choose(logits, sampling, seed, position), _finite(logits)

        def init(params, tokens):  # tokens: only their batch size matters
            return model.apply(params, tokens.shape[0], method="init_state")

        # The state is donated: a KV cache is updated in place, not copied every token.
        self.jitted = {
            "init": jax.jit(init),
            "prefill": jax.jit(prefill, donate_argnums=1),
            "step": jax.jit(step, donate_argnums=1),
        }
        self.compiled: dict = {}
        self.compile_s = 0.0

    def __call__(self, name: str, *args):
        leaves, tree = jax.tree.flatten(args)
        signature = (name, tree, tuple(_aval(x) for x in leaves))
        program = self.compiled.get(signature)
        if program is None:
            start = time.perf_counter()
            program = self.jitted[name].lower(*args).compile()
            self.compile_s += time.perf_counter() - start
            self.compiled[signature] = program
        return program(*args)


def _finite(logits):
    return jnp.all(jnp.isfinite(logits), axis=-1)


def _aval(x) -> tuple:
    return (np.shape(x), str(x.dtype), getattr(x, "sharding", None))


@functools.lru_cache(maxsize=16)
def _programs(model, sampling: Sampling) -> _Programs:
    return _Programs(model, sampling)


# --- the loop ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Generation:
    """New token ids per prompt (stop ids not included), why each row stopped, and timings.

    ``prefill_s``: the prompt's prefill and the first token; ``decode_s``: the step loop;
    ``tokens_per_s``: tokens the steps produced (all rows) per second of ``decode_s``;
    ``compile_s``: compilation during this call (0 once the shapes have been seen).
    """

    tokens: list[list[int]]
    stop_reasons: list[str]
    compile_s: float
    prefill_s: float
    decode_s: float
    decode_steps: int
    batch: int

    @property
    def tokens_per_s(self) -> float:
        return self.decode_steps * self.batch / self.decode_s if self.decode_s > 0 else 0.0


def _prompt_batch(prompts, vocab_size: int) -> np.ndarray:
    rows = [list(map(int, p)) for p in prompts]
    if not rows:
        raise ValueError("generate: no prompts given")
    lengths = sorted({len(r) for r in rows})
    if lengths[0] == 0:
        raise ValueError("generate: an empty prompt; start it with a token (e.g. end-of-text)")
    if len(lengths) > 1:
        raise ValueError(
            f"generate: prompts of a batch must have one length (got {lengths}); a recurrent "
            "state cannot skip padding, so generate ragged prompts one call each"
        )
    tokens = np.asarray(rows, np.int32)
    if tokens.min() < 0 or tokens.max() >= vocab_size:
        raise ValueError(f"generate: prompt ids must be in [0, {vocab_size})")
    return tokens


def _budget(model, prompt_len: int, max_new_tokens: int) -> tuple[int, bool]:
    """(tokens to generate at most, whether max_len cut ``max_new_tokens`` short)."""
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    limit = context_limit(model)
    if limit is None:
        return max_new_tokens, False
    if prompt_len > limit:
        raise ValueError(
            f"generate: the prompt has {prompt_len} tokens, more than max_len={limit} that "
            "the model holds (its KV cache or positions); shorten the prompt"
        )
    room = limit - prompt_len + 1  # the last new token is never fed back
    return min(max_new_tokens, room), max_new_tokens > room


class _Rows:
    """Per-row bookkeeping: the tokens kept, and why each finished row stopped."""

    def __init__(self, batch, budget, cut, stop_ids, on_token):
        self.tokens = [[] for _ in range(batch)]
        self.reasons: list[str | None] = [None] * batch
        self.budget, self.cut = budget, cut
        self.stop_ids, self.on_token = frozenset(int(i) for i in stop_ids), on_token

    def active(self) -> list[int]:
        return [r for r, reason in enumerate(self.reasons) if reason is None]

    def add(self, next_tokens: np.ndarray, finite: np.ndarray, position: int) -> None:
        for row in self.active():
            if not finite[row]:
                raise FloatingPointError(
                    f"generate: the logits for position {position} are not finite; a "
                    "fixed-size cache overflowed or the weights give NaN"
                )
            token = int(next_tokens[row])
            if token in self.stop_ids:
                self.reasons[row] = "stop_id"
                continue
            self.tokens[row].append(token)
            if self.on_token is not None and self.on_token(row, self.tokens[row]):
                self.reasons[row] = "callback"
            elif len(self.tokens[row]) >= self.budget:
                self.reasons[row] = "max_len" if self.cut else "max_new_tokens"


def generate(
    model,
    params: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int = 0,
    stop_ids: Sequence[int] = (),
    on_token: Callable[[int, list[int]], bool | None] | None = None,
    prefill_in_pieces: bool = True,
    n_ids: int | None = None,
) -> Generation:
    """Continue each prompt (token ids, all of one length) by up to ``max_new_tokens``.

    A row stops at a token in ``stop_ids`` (not included in its tokens), when
    ``on_token(row, tokens_so_far)`` returns True (stop strings, streaming output), at
    ``max_new_tokens``, or at the model's ``max_len`` (``context_limit``).
    ``prefill_in_pieces``: prefill the prompt in ``prefill_pieces`` (few shapes to
    compile over many prompt lengths: lm-eval) rather than in one call (one prompt: CLI).
    ``n_ids``: only ids below it are generated (the tokenizer's vocabulary, when the
    model's embedding is padded past it: Mamba's 50,280 rows for 50,277 tokens).
    """
    sampling = Sampling(float(temperature), top_k, top_p, n_ids)
    seed = check_seed(seed)
    tokens = _prompt_batch(prompts, model.backbone.vocab_size)
    batch, length = tokens.shape
    budget, cut = _budget(model, length, max_new_tokens)
    rows = _Rows(batch, budget, cut, stop_ids, on_token)
    if budget == 0:
        reason = "max_len" if cut else "max_new_tokens"
        return Generation(rows.tokens, [reason] * batch, 0.0, 0.0, 0.0, 0, batch)
    run = _programs(model, sampling)
    compiled_before, seed = run.compile_s, jnp.int32(seed)

    start = time.perf_counter()
    state, done = run("init", params, tokens[:, :1]), 0
    for piece in prefill_pieces(length) if prefill_in_pieces else [length]:
        chunk = jnp.asarray(tokens[:, done : done + piece])
        done += piece
        state, next_tokens, finite = run("prefill", params, state, chunk, seed, jnp.int32(done))
    rows.add(np.asarray(next_tokens), np.asarray(finite), length)
    prefill_s = time.perf_counter() - start - (run.compile_s - compiled_before)

    steps, start, compiled_mid = 0, time.perf_counter(), run.compile_s
    while rows.active():
        position = length + steps + 1  # the index of the token this step produces
        state, next_tokens, finite = run(
            "step", params, state, next_tokens, seed, jnp.int32(position)
        )
        rows.add(np.asarray(next_tokens), np.asarray(finite), position)
        steps += 1
    decode_s = time.perf_counter() - start - (run.compile_s - compiled_mid)
    return Generation(
        rows.tokens,
        list(rows.reasons),
        run.compile_s - compiled_before,
        prefill_s,
        decode_s,
        steps,
        batch,
    )


# --- text in, text out -------------------------------------------------------------------


class _TextStops:
    """``on_token`` for one row of text: cuts at the first stop string, and streams the
    text that can no longer change (nor turn out to begin a stop string)."""

    def __init__(self, tokenizer, stop_strings: Sequence[str], stream: Callable | None):
        self.tokenizer, self.stop_strings, self.stream = tokenizer, tuple(stop_strings), stream
        self.hold = max((len(s) for s in self.stop_strings), default=1) - 1
        self.text, self.shown = "", 0

    def __call__(self, row: int, ids: list[int]) -> bool:
        self.text = self.tokenizer.decode(ids)
        cut = min((i for i in (self.text.find(s) for s in self.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            self.text = self.text[:cut]
        # An incomplete UTF-8 sequence decodes as U+FFFD until its last byte arrives.
        stable = len(self.text) if cut >= 0 else len(self.text.rstrip("\ufffd")) - self.hold
        self._show(stable)
        return cut >= 0

    def _show(self, upto: int) -> None:
        if self.stream is not None and upto > self.shown:
            self.stream(self.text[self.shown : upto])
            self.shown = upto

    def flush(self) -> None:
        self._show(len(self.text))


def generate_text(
    model,
    params: Any,
    tokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    stop_strings: Sequence[str] = (),
    stop_at_eos: bool = True,
    stream: Callable[[str], Any] | None = None,
    truncate_prompt: bool = False,
    prefill_in_pieces: bool = False,
    **sampling,
) -> tuple[str, dict]:
    """Continue ``prompt``; returns (new text, stats). ``sampling``: temperature, top_k,
    top_p, seed (see ``generate``). ``stream(text_piece)`` is called as text arrives (e.g.
    ``functools.partial(print, end="", flush=True)``). The text ends before the first of
    ``stop_strings``; ``stop_at_eos`` also stops at the tokenizer's end-of-text id. An
    empty prompt starts from the end-of-text token, as lm-eval scores an empty context.
    ``truncate_prompt``: for a model with a bounded context (``context_limit``), keep the
    prompt's last ``limit + 1 - max_new_tokens`` tokens, so that all ``max_new_tokens``
    fit (the last new token is never fed back; lm-eval keeps one token fewer, and fails
    where none would be left, where we keep one); otherwise a prompt longer than the
    context is an error. Only the tokenizer's ids are generated. The prompt is
    prefilled in one call unless ``prefill_in_pieces`` (see ``generate``).
    """
    ids = tokenizer.encode(prompt)
    if not ids:
        if tokenizer.eos_id is None:
            raise ValueError(
                f"an empty prompt starts from the end-of-text token, and tokenizer "
                f"{tokenizer.name!r} has none; give a prompt"
            )
        ids = [tokenizer.eos_id]
    limit = context_limit(model) if truncate_prompt else None
    if limit is not None:
        ids = ids[-max(1, limit + 1 - max_new_tokens) :]
    stops = _TextStops(tokenizer, stop_strings, stream)
    eos = (tokenizer.eos_id,) if stop_at_eos and tokenizer.eos_id is not None else ()
    gen = generate(
        model,
        params,
        [ids],
        max_new_tokens=max_new_tokens,
        stop_ids=eos,
        on_token=stops,
        prefill_in_pieces=prefill_in_pieces,
        n_ids=min(tokenizer.vocab_size, model.backbone.vocab_size),
        **sampling,
    )
    stops.flush()
    stats = {
        "prompt_tokens": len(ids),
        "new_tokens": len(gen.tokens[0]),
        "stop_reason": {"callback": "stop_string"}.get(gen.stop_reasons[0], gen.stop_reasons[0]),
        "compile_s": gen.compile_s,
        "prefill_s": gen.prefill_s,
        "decode_s": gen.decode_s,
        "tokens_per_s": gen.tokens_per_s,
    }
    return stops.text, stats
