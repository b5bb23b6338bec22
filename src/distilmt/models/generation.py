"""The one generation path: seq2seq and causal models translate here, for evaluation, for
sequence-level KD labels and for the training monitor; a CTranslate2 teacher makes its labels here too
(:func:`ct2_translate_scored`).

Sources are tokenized once as the tokenizer's language setup says (:func:`distilmt.data.languages.source_ids`: an
NLLB/M2M100 source code, a T5 prefix, an opus-mt target token), truncated to what the model's position table allows,
sorted by length and cut into batches; a target-language code to start with comes from the model's
``generation_config.forced_bos_token_id``; results come back in input order, decoded with one call
(``decode(ids, skip_special_tokens=True)``), so every engine's outputs compare string for string. A *score* is a translation's mean log-probability per target
token under the model at temperature 1, teacher-forced on the translation itself (every generated token up to and
including the first end-of-sentence token, less a forced target-language code): ``(1 / |y|) * sum_t log p(y_t |
y_<t, x)``, always <= 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import torch

from ..config import SeqKDConfig
from ..data.batching import token_batches
from ..data.languages import setup_of, source_ids
from ..data.prompt import TranslationPrompt
from ..data.readers import normalize
from .vocab import source_tokens, target_ids


def translate(model, tokenizer, sentences: Sequence[str], num_beams: int = 4, batch_size: int = 64,
              max_new_tokens: int = 128, relative_cap: bool = False, **options) -> list[str]:
    """Translate with ``model.generate`` in length-sorted batches; results come back in input order.

    Inputs longer than the model's position table are truncated; ``max_new_tokens`` is capped to it, and with
    ``relative_cap`` also to ``2 * source tokens + 10`` per batch (a model that never emits eos then costs a bounded
    time: the training monitor). ``options`` go to ``generate`` (e.g. ``no_repeat_ngram_size``). The model runs in
    eval mode without gradients; its training mode is restored afterwards.
    """
    if not sentences:
        return []
    limit = max_positions(model, tokenizer)
    max_new_tokens = min(max_new_tokens, limit)
    encoded = source_ids(tokenizer, sentences, truncation=True, max_length=limit)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    outputs: list[str] = [""] * len(encoded)
    device = model_device(model)
    with evaluating(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in chunk]}, return_tensors="pt")
            width = batch["input_ids"].shape[1]
            cap = max(1, min(max_new_tokens, 2 * width + 10)) if relative_cap else max_new_tokens
            generated = model.generate(input_ids=batch["input_ids"].to(device),
                                       attention_mask=batch["attention_mask"].to(device),
                                       **{"num_beams": num_beams, "do_sample": False, "max_new_tokens": cap, **options})
            for i, ids in zip(chunk, generated.tolist()):
                outputs[i] = decode(tokenizer, ids)
    return outputs


def cut_sources(tokenizer, sentences: Sequence[str], max_tokens: int) -> tuple[list[str], int]:
    """The sentences with each one longer than ``max_tokens`` tokens (the tokenizer's own ``model_max_length`` if that
    is smaller) cut to its first that many, as text, and how many were cut: a test sentence of 100,000 characters
    must not need gigabytes of attention, and the table says how many sentences it did not translate whole."""
    limit = position_limit(max_tokens, tokenizer)
    encoded = tokenizer(list(sentences), add_special_tokens=False)["input_ids"]
    cut = [i for i, ids in enumerate(encoded) if len(ids) > limit]
    out = list(sentences)
    for i in cut:
        out[i] = decode(tokenizer, encoded[i][:limit])
    return out, len(cut)


def model_device(model) -> torch.device:
    """The device of the model's first parameter (the CPU for a model without parameters)."""
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        return torch.device("cpu")


@contextmanager
def evaluating(model):
    """Eval mode (no dropout) and no autograd for the block; the previous mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


def decoder_start(model) -> int:
    """The model's decoder start token id (from its config or generation config, else its pad token id)."""
    for source in (model.config, getattr(model, "generation_config", None)):
        value = getattr(source, "decoder_start_token_id", None) if source is not None else None
        if value is not None:
            return int(value)
    pad = getattr(model.config, "pad_token_id", None)
    if pad is None:
        raise ValueError("the model has neither decoder_start_token_id nor pad_token_id in its config")
    return int(pad)


def decode(tokenizer, ids: Sequence[int]) -> str:
    """The one detokenization both engines use."""
    return tokenizer.decode(list(ids), skip_special_tokens=True).strip()


def position_limit(model_limit: int | None, tokenizer) -> int:
    """Longest sequence both a model's position table and the tokenizer allow (1024 if neither says)."""
    limits = [model_limit, getattr(tokenizer, "model_max_length", None)]
    return min([int(x) for x in limits if isinstance(x, int) and 0 < x < 10**9] or [1024])


def max_positions(model, tokenizer) -> int:
    """:func:`position_limit` of a loaded model (its ``config.max_position_embeddings``)."""
    return position_limit(getattr(model.config, "max_position_embeddings", None), tokenizer)


@torch.no_grad()
def translate_scored(model, tokenizer, sources: Sequence[str], cfg: SeqKDConfig,
                     seed: int | None = None) -> list[list[tuple[str, float]]]:
    """The teacher's ``cfg.num_return_sequences`` translations of each source with their teacher scores.

    Sources are sorted by length and cut into batches of at most ``cfg.batch_tokens`` source tokens
    (:func:`~distilmt.data.batching.token_batches`); results come back in input order, best hypothesis first (the
    order ``generate`` returns them in). With ``cfg.do_sample`` the draws are seeded by ``seed``. (A causal-LM
    teacher translates with :meth:`~distilmt.models.translators.CausalTranslator.translate_scored`: the same
    batching, settings and score over :func:`generate_continuations`; a CTranslate2 one with
    :func:`ct2_translate_scored`.)
    """
    if not sources:
        return []
    model.eval()
    device = model.device
    limit = max_positions(model, tokenizer)
    encoded = source_ids(tokenizer, sources, truncation=True, max_length=limit)
    n = cfg.num_return_sequences
    # early_stopping: the beam search ends once num_beams hypotheses are finished, as CTranslate2's does, so both
    # engines write the same labels (HF's default keeps searching for a better-scored longer one)
    options = dict(num_beams=cfg.num_beams, length_penalty=cfg.length_penalty, do_sample=cfg.do_sample,
                   max_new_tokens=min(cfg.max_new_tokens, limit), num_return_sequences=n,
                   early_stopping=cfg.num_beams > 1)
    if cfg.do_sample:
        options.update(top_p=cfg.top_p, temperature=cfg.temperature)
    forced = int(getattr(model.generation_config, "forced_bos_token_id", None) is not None)
    results: list[list[tuple[str, float]]] = [[] for _ in sources]
    with torch.random.fork_rng(devices=[] if device.type != "cuda" else None, enabled=cfg.do_sample):
        if cfg.do_sample:
            torch.manual_seed(cfg.seed if seed is None else seed)
        for batch in token_batches([len(ids) for ids in encoded], cfg.batch_tokens, seed=0):
            padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, return_tensors="pt")
            input_ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
            sequences = model.generate(input_ids=input_ids, attention_mask=mask, **options)
            scores = sequence_scores(model, input_ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0),
                                     sequences, tokenizer.eos_token_id, forced=forced)
            for row, (ids, score) in enumerate(zip(sequences.tolist(), scores.tolist())):
                text = normalize(tokenizer.decode(ids, skip_special_tokens=True))
                results[batch[row // n]].append((text, float(score)))
    return results


@torch.no_grad()
def sequence_scores(model, input_ids, attention_mask, sequences, eos_token_id: int, forced: int = 0) -> torch.Tensor:
    """Mean log-probability per target token of each generated sequence under ``model`` (T = 1, teacher-forced).

    ``sequences`` start with the decoder start token, as ``generate`` returns them; the scored tokens are every
    later token up to and including the first end-of-sentence token (what follows is padding), less the first
    ``forced`` ones (a target-language code generation was forced to start with: not the model's choice).
    """
    decoder_input, targets = sequences[:, :-1], sequences[:, 1:]
    logits = model(input_ids=input_ids, attention_mask=attention_mask, decoder_input_ids=decoder_input,
                   use_cache=False).logits.float()
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    is_eos = (targets == eos_token_id).long()
    keep = (torch.cumsum(is_eos, dim=1) - is_eos) == 0  # up to and including the first EOS
    keep[:, :forced] = False
    return (token_logp * keep).sum(1) / keep.sum(1).clamp(min=1)


def ct2_translate_scored(translator, tokenizer, sources: Sequence[str], cfg: SeqKDConfig,
                         model_limit: int | None = None, decoding: dict | None = None) -> list[list[tuple[str, float]]]:
    """:func:`translate_scored` with a ``ctranslate2.Translator``: the same labels and the same score definition.

    Beam search with ``translate_batch`` (``beam_size=num_beams``, ``length_penalty``,
    ``num_hypotheses=num_return_sequences``, ``max_decoding_length=max_new_tokens`` capped by the positions, which,
    like ``max_new_tokens``, counts the end-of-sentence token), in batches of at most ``cfg.batch_tokens`` source
    tokens (CTranslate2 sorts them by length itself); results in input order, best hypothesis first.

    The score is not the beam's own ``return_scores`` (the cumulated log-probability divided by
    ``length ** length_penalty``: the definition only when length_penalty is 1) but a teacher-forced pass,
    ``score_batch``, which gives the log-probability of every target token plus the end-of-sentence token it
    appends: the mean over those, or, for a hypothesis cut at ``max_decoding_length`` without an end-of-sentence
    token, over its tokens alone, as :func:`sequence_scores` counts them. (Under a quantized model these are the
    quantized teacher's log-probabilities.) Sampling is refused: CTranslate2's random generators cannot be reseeded
    per shard (``set_random_seed`` does not reach its running worker threads), so a resumed run would differ.

    ``decoding`` is what HF ``generate`` does on top of the model (the export's ``decoding`` record; None for an
    export without one): its banned sequences are suppressed, and with ``forced_eos`` (opus-mt) a hypothesis that
    reaches the cap ends there with the end-of-sentence token HF forces into the last position (decoded to one token
    fewer, then ``</s>`` scored). The decoding length stays one below the position table, for the ``</s>`` the score
    appends.
    """
    decoding = decoding or {}
    if cfg.do_sample:
        raise ValueError("CTranslate2 label generation decodes with beam search only (do_sample=False)")
    if not sources:
        return []
    limit = position_limit(model_limit, tokenizer)
    # encoded as every other path encodes sources (prefix, target token, source language code; each vocabulary side)
    tokens = [source_tokens(tokenizer, ids)
              for ids in source_ids(tokenizer, list(sources), truncation=True, max_length=limit)]
    start = setup_of(tokenizer).start_token  # NLLB/M2M100: the forced target code, as HF's forced_bos_token_id
    cap = min(cfg.max_new_tokens, limit - 1)
    forced_eos = bool(decoding.get("forced_eos")) and cap > 1
    found = translator.translate_batch(
        tokens, max_batch_size=cfg.batch_tokens, batch_type="tokens", beam_size=cfg.num_beams,
        length_penalty=cfg.length_penalty, num_hypotheses=cfg.num_return_sequences,
        max_decoding_length=cap - forced_eos, max_input_length=0, min_decoding_length=0,
        return_end_token=True, target_prefix=[[start]] * len(tokens) if start else None,
        suppress_sequences=decoding.get("suppress_sequences") or None)
    eos = tokenizer.eos_token
    rows = [(i, hyp[:-1] if hyp[-1:] == [eos] else hyp, hyp[-1:] == [eos] or forced_eos and len(hyp) >= cap - 1)
            for i, result in enumerate(found) for hyp in result.hypotheses]
    scored = translator.score_batch([tokens[i] for i, _, _ in rows], [target for _, target, _ in rows],
                                    max_batch_size=cfg.batch_tokens, batch_type="tokens", max_input_length=0)
    forced = 1 if start else 0  # the forced code was not chosen by the model: not in the score (as sequence_scores)
    results: list[list[tuple[str, float]]] = [[] for _ in sources]
    for (i, target, ended), score in zip(rows, scored):
        log_probs = (score.log_probs if ended else score.log_probs[:-1])[forced:]  # the appended eos was not generated
        text = normalize(tokenizer.decode(target_ids(tokenizer, target), skip_special_tokens=True))
        results[i].append((text, float(sum(log_probs) / max(len(log_probs), 1))))
    return results


# -- generation ---------------------------------------------------------------------------------------------
def _stop_ids(model, tokenizer) -> list[int]:
    """The tokenizer's eos plus any the model's generation config lists (Qwen2.5-Instruct: <|im_end|> and
    <|endoftext|>)."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, (list, tuple)) else [configured]
    return list(dict.fromkeys([tokenizer.eos_token_id, *(i for i in configured if i is not None)]))


def until_stop(continuation: torch.Tensor, stop_ids: Sequence[int]) -> torch.Tensor:
    """Mask of each row's tokens up to and including its first stop token (every token when there is none)."""
    is_stop = torch.isin(continuation, torch.tensor(list(stop_ids), device=continuation.device)).long()
    return (torch.cumsum(is_stop, dim=1) - is_stop) == 0


@torch.no_grad()
def generate_continuations(model, prompt: TranslationPrompt, sources: Sequence[str], batch_tokens: int = 4000,
                           max_new_tokens: int = 128, num_return_sequences: int = 1, score: bool = False,
                           **options) -> list[list[tuple[str, float | None]]]:
    """Each source's ``num_return_sequences`` continuations of its prompt, as ``(text, score)`` in input order.

    Prompts are sorted by length and cut into batches of at most ``batch_tokens`` prompt tokens, left-padded, and
    generated until every row has produced eos (or ``max_new_tokens``, capped by the model's positions). The text
    is the continuation alone, up to its first eos, decoded without special tokens. With ``score=True`` the score
    is the mean log-probability per continuation token (eos included) under ``model`` at T = 1, teacher-forced;
    else None. ``options`` go to ``generate`` (num_beams, length_penalty, do_sample, top_p, temperature, ...).
    """

    if not sources:
        return []
    model.eval()
    tokenizer, device = prompt.tokenizer, model.device
    encoded = [prompt.prompt_ids(s) for s in sources]
    stop = _stop_ids(model, tokenizer)
    results: list[list[tuple[str, float | None]]] = [[] for _ in sources]
    for batch in token_batches([len(ids) for ids in encoded], batch_tokens, seed=0):
        padded = tokenizer.pad({"input_ids": [encoded[i] for i in batch]}, padding_side="left", return_tensors="pt")
        input_ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
        width = input_ids.shape[1]
        room = max(1, min(max_new_tokens, max_positions(model, tokenizer) - width))
        sequences = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=room,
                                   num_return_sequences=num_return_sequences, eos_token_id=stop,
                                   pad_token_id=prompt.pad_token_id, **options)
        continuation = sequences[:, width:]
        keep = until_stop(continuation, stop)
        scores = _continuation_scores(model, input_ids.repeat_interleave(num_return_sequences, 0),
                                      mask.repeat_interleave(num_return_sequences, 0), continuation, keep) \
            if score else [None] * len(continuation)
        for row, (ids, kept, value) in enumerate(zip(continuation.tolist(), keep.tolist(), scores)):
            text = tokenizer.decode([t for t, k in zip(ids, kept) if k], skip_special_tokens=True)
            results[batch[row // num_return_sequences]].append((normalize(text), value))
    return results


@torch.no_grad()
def _continuation_scores(model, input_ids, attention_mask, continuation, keep) -> list[float]:
    """Mean log-probability per kept continuation token, teacher-forced after the left-padded prompt."""
    full = torch.cat([input_ids, continuation], dim=1)
    mask = torch.cat([attention_mask, keep.long()], dim=1)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # as generate numbers them under left padding
    logits = model(input_ids=full, attention_mask=mask, position_ids=positions, use_cache=False).logits.float()
    width = input_ids.shape[1]
    log_probs = torch.log_softmax(logits[:, width - 1:-1], dim=-1)
    token_logp = log_probs.gather(-1, continuation.unsqueeze(-1)).squeeze(-1)
    return ((token_logp * keep).sum(1) / keep.sum(1).clamp(min=1)).tolist()
