"""Vocabulary trimming (``student.trim_vocab``): a student that keeps only the teacher's tokens its corpus uses.

A teacher's vocabulary is made for every language it serves (opus-mt: 58k pieces, NLLB: 256k); one language pair's
training corpus uses a fraction of it, and in a small student the embedding and output layer over the rest are
most of the parameters. :func:`trim_student` keeps

* every teacher token id that the training corpus produces (both sides, each tokenised as training tokenises it:
  sources as text, targets as ``text_target``);
* every special and added token of the teacher's tokenizer (pad, eos, bos, unk, mask, language codes such as NLLB's
  ``hun_Latn`` or Marian's ``>>hu<<``) and the ids the model's config and generation config name;
* for a Unigram tokenizer, the single-character pieces of the characters the corpus contains (so a new word made of
  those characters is still split into smaller pieces, not <unk>) and the lowest-scoring piece (so the
  ``<unk>`` score, ``min score - 10``, and with it every segmentation stays what it was);
* for a BPE tokenizer, every intermediate token of the merges that build a kept token, and the base alphabet;

in the teacher's order (student id = rank of the teacher id among the kept ones, so pad/eos/unk keep their relative
places and an Opus-MT layout keeps ``<pad>`` last). The student's embedding, output layer and ``final_logits_bias``
are the teacher-derived model's rows at those ids, and a real tokenizer that produces the trimmed ids is saved beside
it: a fast ``tokenizer.json`` (Unigram: the kept pieces with their scores; BPE: the kept tokens and the merges among
them; other models are refused), or for a ``MarianTokenizer`` the same SentencePiece models with a new
``vocab.json`` of the kept pieces. On the training corpus that tokenizer gives exactly the teacher's tokens, id-mapped
(tested); text outside the corpus can only use the kept pieces (smaller pieces, or ``<unk>`` for a Marian piece that
is not kept).

KD over a trimmed vocabulary uses the teacher's distribution **renormalised over the kept vocabulary**: the teacher's
logits gathered at the kept ids, whose softmax is ``p_i / sum_{j kept} p_j``; for a top-k teacher cache, the cached
entries at kept ids, renormalised over those. :class:`VocabMap` is that mapping, in one place;
:class:`distilmt.teachers.signal.VocabMappedTeacher` applies it to any teacher signal (live, cache, ensemble).
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer

from ..errors import ModelError

log = logging.getLogger(__name__)

VOCAB_MAP_FILE = "trimmed_vocab.json"
"""Written beside a trimmed student: the teacher's vocabulary size and the kept teacher ids in student order."""

TOKEN_ID_FIELDS = ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id", "forced_bos_token_id",
                   "forced_eos_token_id", "unk_token_id", "sep_token_id", "mask_token_id")
"""Config and generation-config fields holding token ids, remapped to the trimmed vocabulary."""


class VocabMap:
    """Student id -> teacher id (``kept[i]`` is the teacher id of student token i) and what KD needs of it.

    * :meth:`to_teacher` maps a batch's student ids (inputs, decoder inputs, labels) to the teacher's, so the teacher
      reads the same tokens;
    * :meth:`restrict_logits` gathers the teacher's logits at the kept ids: its softmax is the teacher's distribution
      renormalised over the kept vocabulary;
    * :meth:`restrict_topk` does the same for a top-k signal (a teacher cache): entries at kept ids keep their
      log-probabilities, the others get ``-inf``; the top-k renormalisation then runs over the kept entries.
    """

    def __init__(self, kept: Sequence[int], teacher_size: int):
        kept = [int(i) for i in kept]
        if sorted(set(kept)) != kept:
            raise ValueError("kept ids must be strictly increasing")
        if kept and not 0 <= kept[0] <= kept[-1] < teacher_size:
            raise ValueError(f"kept ids must lie in [0, {teacher_size})")
        self.teacher_size = int(teacher_size)
        self.kept = torch.tensor(kept, dtype=torch.long)
        self.student_of = torch.full((self.teacher_size,), -1, dtype=torch.long)
        self.student_of[self.kept] = torch.arange(len(kept))

    def __len__(self) -> int:
        return len(self.kept)

    def to(self, device) -> "VocabMap":
        self.kept, self.student_of = self.kept.to(device), self.student_of.to(device)
        return self

    def student_id(self, teacher_id: int) -> int | None:
        """The student id of a teacher id (None when that token was not kept)."""
        if teacher_id is None or not 0 <= teacher_id < self.teacher_size:
            return None
        found = int(self.student_of[teacher_id])
        return found if found >= 0 else None

    def to_teacher(self, ids: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
        """Student ids -> teacher ids; ``ignore_index`` entries (padded labels) stay as they are."""
        kept = self.kept.to(ids.device)
        ignored = ids.eq(ignore_index)
        return torch.where(ignored, ids, kept[ids.masked_fill(ignored, 0)])

    def restrict_logits(self, teacher_logits: torch.Tensor) -> torch.Tensor:
        """``[..., teacher vocab] -> [..., kept]``: the teacher renormalised over the kept vocabulary (by softmax)."""
        return teacher_logits.index_select(-1, self.kept.to(teacher_logits.device))

    def restrict_topk(self, ids: torch.Tensor, log_probs: torch.Tensor, labels: torch.Tensor | None = None,
                      ignore_index: int = -100) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k teacher ids/log-probs -> student ids, with ``-inf`` at the entries whose token was not kept.

        A position none of whose k entries was kept (rare: the teacher's top k all outside the corpus vocabulary)
        gets the reference label with log-prob 0, i.e. the KD term is the cross-entropy of the reference there; a
        padded position gets id 0 with log-prob 0 (finite, masked out by the loss).
        """
        student_of = self.student_of.to(ids.device)
        mapped = student_of[ids]
        dropped = mapped.lt(0)
        log_probs = log_probs.masked_fill(dropped, float("-inf"))
        mapped = mapped.masked_fill(dropped, 0)
        empty = dropped.all(-1)
        if bool(empty.any()):
            fill = torch.zeros_like(empty, dtype=torch.long)
            if labels is not None:
                fill = labels.masked_fill(labels.eq(ignore_index), 0).to(ids.device)
            mapped[..., 0] = torch.where(empty, fill, mapped[..., 0])
            log_probs[..., 0] = torch.where(empty, torch.zeros_like(log_probs[..., 0]), log_probs[..., 0])
        return mapped, log_probs

    # -- on disk ----------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        path = Path(directory) / VOCAB_MAP_FILE
        path.write_text(json.dumps({"teacher_vocab_size": self.teacher_size, "kept_ids": self.kept.tolist()}),
                        encoding="utf-8")
        return path

    @classmethod
    def load(cls, directory: str | Path) -> "VocabMap | None":
        """The map saved beside a trimmed student, or None for a directory that is not one."""
        path = Path(directory) / VOCAB_MAP_FILE
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        return cls(saved["kept_ids"], saved["teacher_vocab_size"])


# -- which ids are kept -----------------------------------------------------------------------------------------
def corpus_token_ids(tokenizer, pairs: Sequence[tuple[str, str]], chunk: int = 4096) -> set[int]:
    """Every token id the pairs produce, sources tokenised as text and targets as ``text_target`` (as in training)."""
    used: set[int] = set()
    for start in range(0, len(pairs), chunk):
        part = pairs[start:start + chunk]
        for ids in tokenizer([s for s, _ in part])["input_ids"]:
            used.update(ids)
        for ids in tokenizer(text_target=[t for _, t in part])["input_ids"]:
            used.update(ids)
    return used


def _is_marian(tokenizer) -> bool:
    return any(cls.__name__ == "MarianTokenizer" for cls in type(tokenizer).__mro__)


def _fast_model(tokenizer) -> dict | None:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return json.loads(backend.to_str()) if backend is not None else None


def special_token_ids(tokenizer, model=None) -> set[int]:
    """The ids every trimmed vocabulary keeps: special and added tokens, Marian language codes, and the token ids
    the model's config and generation config name."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    ids.update(tokenizer.get_added_vocab().values())
    for code in getattr(tokenizer, "supported_language_codes", None) or []:
        ids.add(tokenizer.convert_tokens_to_ids(code))
    for name in ("pad_token_id", "eos_token_id", "bos_token_id", "unk_token_id"):
        if getattr(tokenizer, name, None) is not None:
            ids.add(getattr(tokenizer, name))
    for config in (getattr(model, "config", None), getattr(model, "generation_config", None)):
        for name in TOKEN_ID_FIELDS:
            value = getattr(config, name, None) if config is not None else None
            ids.update(value if isinstance(value, list) else [value] if isinstance(value, int) else [])
    return {int(i) for i in ids if i is not None and i >= 0}


def kept_token_ids(tokenizer, pairs: Sequence[tuple[str, str]], model=None) -> list[int]:
    """The teacher ids a student trimmed to ``pairs`` keeps, increasing (see the module docstring for the rule)."""
    kept = corpus_token_ids(tokenizer, pairs) | special_token_ids(tokenizer, model)
    data = None if _is_marian(tokenizer) else _fast_model(tokenizer)
    if data is not None and data["model"]["type"] == "Unigram":
        vocab = tokenizer.get_vocab()
        chars: set[str] = set()
        for source, target in pairs:
            chars.update(source)
            chars.update(target)
        chars = {c for c in chars if not c.isspace()}
        for piece in (*chars, *("\u2581" + c for c in chars), "\u2581"):
            if piece in vocab:
                kept.add(vocab[piece])
        scores = data["model"]["vocab"]
        if scores:  # the lowest-scoring piece keeps the <unk> score (min score - 10), hence every segmentation
            kept.add(min(range(len(scores)), key=lambda i: scores[i][1]))
    elif data is not None and data["model"]["type"] == "BPE":
        kept = _bpe_closure(data["model"], kept)
    size = len(tokenizer)
    return sorted(i for i in kept if 0 <= i < size)


def _merge_pairs(model: dict) -> list[tuple[str, str]]:
    return [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]


def _merged(model: dict, left: str, right: str) -> str:
    prefix = model.get("continuing_subword_prefix") or ""
    return left + (right[len(prefix):] if prefix and right.startswith(prefix) else right)


def _bpe_closure(model: dict, kept: set[int]) -> set[int]:
    """Kept ids plus every token the merges build them from (recursively) and the base alphabet: then the merges
    among kept tokens reproduce, in the same order, every merge the full model makes on the corpus."""
    vocab: dict[str, int] = model["vocab"]
    pieces = {i: p for p, i in vocab.items()}
    producer: dict[str, tuple[str, str]] = {}
    for left, right in _merge_pairs(model):
        producer.setdefault(_merged(model, left, right), (left, right))
    closure = set(kept)
    closure.update(i for p, i in vocab.items() if p not in producer and len(p) == 1)  # the alphabet
    stack = [pieces[i] for i in kept if i in pieces]
    while stack:
        for part in producer.get(stack.pop(), ()):
            if part in vocab and vocab[part] not in closure:
                closure.add(vocab[part])
                stack.append(part)
    return closure


# -- the trimmed tokenizer -----------------------------------------------------------------------------------------
def trim_tokenizer(tokenizer, kept: Sequence[int], out_dir: str | Path):
    """Save a tokenizer for the kept ids (student id = rank among ``kept``) into ``out_dir`` and return it, loaded
    back with ``AutoTokenizer`` (what ``transformers`` alone gets from the student's directory)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    new_id = {old: new for new, old in enumerate(kept)}
    if _is_marian(tokenizer):
        if getattr(tokenizer, "separate_vocabs", False):
            raise ModelError("student.trim_vocab: this Marian teacher has separate source and target vocabularies, "
                             "which trimming does not support yet; set student.trim_vocab=false")
        tokenizer.save_pretrained(str(out_dir))
        _remap_tokenizer_config(out_dir, new_id)
        pieces = {new: tokenizer.convert_ids_to_tokens(old) for old, new in new_id.items()}
        (out_dir / "vocab.json").write_text(json.dumps({p: i for i, p in sorted(pieces.items())}, ensure_ascii=False,
                                                       indent=1), encoding="utf-8")
        return AutoTokenizer.from_pretrained(str(out_dir))
    data = _fast_model(tokenizer)
    if data is None:
        raise ModelError(f"student.trim_vocab: cannot trim a {type(tokenizer).__name__} (neither a fast tokenizer.json "
                         "nor a MarianTokenizer); set student.trim_vocab=false")
    model = data["model"]
    if model["type"] == "Unigram":
        vocab = model["vocab"]
        model["vocab"] = [vocab[old] for old in kept if old < len(vocab)]
        if model.get("unk_id") is not None:
            model["unk_id"] = new_id[model["unk_id"]]
    elif model["type"] == "BPE":
        pieces = {i: p for p, i in model["vocab"].items()}
        model["vocab"] = {pieces[old]: new_id[old] for old in kept if old in pieces}
        model["merges"] = [[a, b] for a, b in _merge_pairs(model)
                           if a in model["vocab"] and b in model["vocab"] and _merged(model, a, b) in model["vocab"]]
    else:
        raise ModelError(f"student.trim_vocab: a {model['type']} tokenizer model cannot be trimmed (Unigram and BPE "
                         "can); set student.trim_vocab=false")
    data["added_tokens"] = [{**t, "id": new_id[t["id"]]} for t in data.get("added_tokens", []) if t["id"] in new_id]
    _remap_post_processor(data.get("post_processor"), new_id)
    tokenizer.save_pretrained(str(out_dir))
    _remap_tokenizer_config(out_dir, new_id)
    (out_dir / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return AutoTokenizer.from_pretrained(str(out_dir))


def _remap_tokenizer_config(out_dir: Path, new_id: dict[int, int]) -> None:
    """``added_tokens_decoder`` of a saved tokenizer_config.json (keyed by token id) in the trimmed ids."""
    path = out_dir / "tokenizer_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("added_tokens_decoder"), dict):
        config["added_tokens_decoder"] = {str(new_id[int(i)]): token for i, token in
                                          config["added_tokens_decoder"].items() if int(i) in new_id}
        path.write_text(json.dumps(config, ensure_ascii=False, indent=2), encoding="utf-8")


def _remap_post_processor(node, new_id: dict[int, int]) -> None:
    """Token ids inside a post-processor (TemplateProcessing's special tokens, Bert/Roberta cls/sep, Sequence)."""
    if not isinstance(node, dict):
        return
    for special in (node.get("special_tokens") or {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    for key in ("cls", "sep"):
        if isinstance(node.get(key), list) and len(node[key]) == 2:
            node[key][1] = new_id[node[key][1]]
    for child in node.get("processors") or []:
        _remap_post_processor(child, new_id)


# -- the trimmed model ----------------------------------------------------------------------------------------------
def trim_model(model, vocab_map: VocabMap):
    """A copy of ``model`` over the kept vocabulary: every tensor with a vocabulary dimension (embeddings, output
    layer, ``final_logits_bias``) keeps the rows at the kept ids, the rest is copied; token ids in the config and
    generation config are remapped (ids that were not kept are dropped from lists, set to None otherwise)."""
    old_size = model.get_input_embeddings().weight.shape[0]
    if vocab_map.teacher_size != old_size:
        raise ModelError(f"student.trim_vocab: the vocabulary map is for {vocab_map.teacher_size:,} tokens but the "
                         f"model has {old_size:,} embedding rows")
    config = copy.deepcopy(model.config)
    config.vocab_size = len(vocab_map)
    if getattr(config, "decoder_vocab_size", None) is not None:  # Marian: the target side is the same kept list
        config.decoder_vocab_size = len(vocab_map)
    _remap_ids(config, vocab_map)
    trimmed = type(model)(config)  # every tensor is overwritten below
    generation = copy.deepcopy(model.generation_config)
    _remap_ids(generation, vocab_map)
    for name in ("bad_words_ids", "suppress_tokens", "begin_suppress_tokens"):
        value = getattr(generation, name, None)
        if value:
            setattr(generation, name, _remap_list(value, vocab_map) or None)
    trimmed.generation_config = generation
    source = model.state_dict()
    kept = vocab_map.kept
    with torch.no_grad():
        for name, tensor in trimmed.state_dict().items():
            src = source[name]
            if src.shape != tensor.shape:
                dims = [d for d in range(src.dim()) if src.shape[d] == old_size and tensor.shape[d] == len(kept)]
                if not dims:
                    raise ModelError(f"student.trim_vocab: cannot trim {name} {tuple(src.shape)} to "
                                     f"{tuple(tensor.shape)}")
                src = src.index_select(dims[0], kept)
            tensor.copy_(src)
    return trimmed.train(model.training)


def _remap_ids(config, vocab_map: VocabMap) -> None:
    for name in TOKEN_ID_FIELDS:
        value = getattr(config, name, None)
        if isinstance(value, int):
            setattr(config, name, vocab_map.student_id(value))
        elif isinstance(value, list):
            setattr(config, name, [vocab_map.student_id(v) for v in value if vocab_map.student_id(v) is not None])


def _remap_list(value, vocab_map: VocabMap):
    if isinstance(value, list):
        mapped = [_remap_list(v, vocab_map) for v in value]
        return [m for m in mapped if m is not None and m != []]
    return vocab_map.student_id(value)


# -- all of it -----------------------------------------------------------------------------------------------------
def trim_student(model, tokenizer, pairs: Sequence[tuple[str, str]], out_dir: str | Path,
                 extra_pairs: Iterable[tuple[str, str]] = ()):
    """``(trimmed model, its tokenizer, VocabMap)`` for a student over ``tokenizer``'s vocabulary trained on
    ``pairs`` (plus ``extra_pairs``): the tokenizer and ``trimmed_vocab.json`` are written into ``out_dir``."""
    pairs = list(pairs) + list(extra_pairs)
    kept = kept_token_ids(tokenizer, pairs, model)
    vocab_map = VocabMap(kept, model.get_input_embeddings().weight.shape[0])
    trimmed_tokenizer = trim_tokenizer(tokenizer, kept, out_dir)
    if len(trimmed_tokenizer) != len(kept):
        raise ModelError(f"student.trim_vocab: the trimmed tokenizer has {len(trimmed_tokenizer):,} tokens, not the "
                         f"{len(kept):,} kept ones; set student.trim_vocab=false and report this tokenizer")
    vocab_map.save(out_dir)
    trimmed = trim_model(model, vocab_map)
    log.info("trimmed the vocabulary to %s of the teacher's %s tokens (those the corpus uses, special and added "
             "tokens): %s -> %s parameters", f"{len(kept):,}", f"{vocab_map.teacher_size:,}",
             f"{model.num_parameters():,}", f"{trimmed.num_parameters():,}")
    return trimmed, trimmed_tokenizer, vocab_map
