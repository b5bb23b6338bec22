"""Do two models share one vocabulary? Token-level KD compares logits id by id, so it needs one.

Only the tokenizers' *real* vocabularies are compared (``len(tokenizer)``, the ids of a probe text, the special and
added tokens), not the embedding matrices: models of one family are often padded to different sizes (Qwen2.5:
151936 vs 152064 rows for 151665 tokens), and KD then runs on the logits cut to the shared real size. Between
different tokenizers only sequence-level KD works (the teacher's translations become plain-text labels).

A model's output layer is compared with the *target* vocabulary (:func:`target_vocab_size`): the same as the source
one for almost every tokenizer, but a Marian (opus-mt) tokenizer with separate vocabularies has a target vocabulary of
its own (``target_vocab.json``), which the decoder embedding, ``lm_head`` and ``final_logits_bias`` are sized by.
"""

from __future__ import annotations

from ..errors import ModelError

PROBE_TEXT = "The quick brown fox, 1234 -- Árvíztűrő tükörfúrógép! 你好"


def target_vocab_size(tokenizer) -> int:
    """How many token ids the target side of ``tokenizer`` has: what a model's output layer must cover.

    ``len(tokenizer)`` for a tokenizer with one vocabulary; for one with a separate target vocabulary (MarianTokenizer
    with ``separate_vocabs``, i.e. a ``target_vocab.json``; or any tokenizer with a ``target_vocab_size``) that one's
    size, added (special) tokens included.
    """
    size = getattr(tokenizer, "target_vocab_size", None)
    if isinstance(size, int):
        return size
    if not has_separate_vocabularies(tokenizer):
        return len(tokenizer)
    return len(set(tokenizer.target_encoder) | set(tokenizer.get_added_vocab()))


def has_separate_vocabularies(tokenizer) -> bool:
    """True for a tokenizer whose target side has a vocabulary of its own (MarianTokenizer with ``separate_vocabs``)."""
    return bool(getattr(tokenizer, "separate_vocabs", False)) and getattr(tokenizer, "target_encoder", None) is not None


def _sizes(tokenizer) -> tuple[int, int]:
    return len(tokenizer), target_vocab_size(tokenizer)


def _probe_ids(tokenizer, **kwargs) -> tuple[list[int], list[int]]:
    """The ids of the probe text on the source side and on the target side (they differ for separate vocabularies)."""
    return (tokenizer(PROBE_TEXT, **kwargs)["input_ids"], tokenizer(text_target=PROBE_TEXT, **kwargs)["input_ids"])


def check_output_layer(model, tokenizer, who: str) -> int:
    """The target vocabulary size of ``tokenizer``; a ModelError naming ``who`` when ``model``'s output layer (its
    ``lm_head``) has fewer rows (the model and tokenizer do not belong together)."""
    size = target_vocab_size(tokenizer)
    if model is not None:
        rows = model.get_output_embeddings().weight.shape[0]
        if rows < size:
            side = "target " if size != len(tokenizer) else ""
            raise ModelError(f"{who}: its output layer has {rows:,} rows, fewer than the {size:,}-token {side}"
                             "vocabulary of its tokenizer; the model and tokenizer in that directory do not belong "
                             "together")
    return size


def check_same_vocabulary(teacher_tokenizer, student_tokenizer, teacher_model=None, student_model=None,
                          where: str = "teacher") -> None:
    """Refuse logit KD between models whose token ids differ (one clear sentence saying what to do).

    Compares the real vocabulary sizes (source and target side: len(tokenizer) and :func:`target_vocab_size`, not a
    padded embedding matrix), the ids of a probe text on both sides, and that each model's output layer covers the
    target vocabulary.
    """
    (n_t, tgt_t), (n_s, tgt_s) = _sizes(teacher_tokenizer), _sizes(student_tokenizer)
    if (n_t, tgt_t) != (n_s, tgt_s):
        def words(n, tgt):
            return f"{n}" if n == tgt else f"{n} source and {tgt} target"
        raise ModelError(f"{where}: vocabulary has {words(n_t, tgt_t)} tokens but the student's has "
                         f"{words(n_s, tgt_s)}; token-level KD needs one shared tokenizer: derive the student from "
                         "this teacher (or use sequence-level KD)")
    if _probe_ids(teacher_tokenizer) != _probe_ids(student_tokenizer):
        raise ModelError(f"{where}: its tokenizer maps the same text to different token ids than the student's; "
                         "token-level KD needs one shared tokenizer: derive the student from this teacher")
    check_output_layer(teacher_model, teacher_tokenizer, where)
    check_output_layer(student_model, student_tokenizer, "student")


# -- vocabulary ---------------------------------------------------------------------------------------------
def _special_ids(tokenizer) -> dict[str, int | None]:
    ids = {f"{name}_token": getattr(tokenizer, f"{name}_token_id", None) for name in ("eos", "bos", "unk")}
    ids.update(tokenizer.get_added_vocab())
    return ids


def vocabulary_difference(teacher_tokenizer, student_tokenizer) -> str | None:
    """How two tokenizers' real vocabularies differ (None when they are the same)."""
    n_t, n_s = len(teacher_tokenizer), len(student_tokenizer)
    if n_t != n_s:
        return f"the teacher's tokenizer has {n_t:,} tokens and the student's {n_s:,}"
    tgt_t, tgt_s = target_vocab_size(teacher_tokenizer), target_vocab_size(student_tokenizer)
    if tgt_t != tgt_s:
        return f"the teacher's target vocabulary has {tgt_t:,} tokens and the student's {tgt_s:,}"
    plain = {"add_special_tokens": False}
    if _probe_ids(teacher_tokenizer, **plain) != _probe_ids(student_tokenizer, **plain):
        return "their tokenizers map the same text to different token ids"
    special_t, special_s = _special_ids(teacher_tokenizer), _special_ids(student_tokenizer)
    for name in sorted(set(special_t) | set(special_s)):
        if special_t.get(name) != special_s.get(name):
            return f"the special token {name} has id {special_t.get(name)} in the teacher and " \
                   f"{special_s.get(name)} in the student"
    return None


def check_shared_vocabulary(teacher_tokenizer, student_tokenizer, teacher_model=None, student_model=None,
                            teacher_name: str = "teacher", student_name: str = "student") -> int:
    """The real vocabulary size two models share, for token-level KD; a ModelError naming both otherwise.

    Only the tokenizers' vocabularies are compared (size, probe-text ids, special and added tokens): embedding
    matrices padded to different sizes pass, and each model's output layer must merely cover the (target)
    vocabulary. KD then compares the logits cut to the returned size, the target vocabulary's.
    """
    problem = vocabulary_difference(teacher_tokenizer, student_tokenizer)
    if problem:
        raise ModelError(f"token-level KD between {teacher_name} and {student_name} needs one vocabulary, but "
                         f"{problem}; use sequence-level KD instead (seqkd.enabled=true, `distilmt generate-labels`), "
                         "which works across tokenizers")
    check_output_layer(teacher_model, teacher_tokenizer, teacher_name)
    check_output_layer(student_model, student_tokenizer, student_name)
    return target_vocab_size(teacher_tokenizer)


# -- the two sides of a vocabulary ------------------------------------------------------------------------------
def vocabulary_tokens(tokenizer, side: str = "source") -> list[str]:
    """Every token of one side of the vocabulary, in id order (index = id), added tokens included."""
    if side not in ("source", "target"):
        raise ValueError(f"side must be 'source' or 'target', got {side!r}")
    vocab = dict(tokenizer.get_vocab())
    if side == "target" and has_separate_vocabularies(tokenizer):
        vocab = dict(tokenizer.target_encoder)
        for token, index in tokenizer.get_added_vocab().items():
            vocab.setdefault(token, index)
    by_id = {index: token for token, index in vocab.items()}
    return [by_id.get(i, f"<unused{i}>") for i in range(max(by_id) + 1 if by_id else 0)]


def source_tokens(tokenizer, ids) -> list[str]:
    """The source-side tokens of source token ids (``convert_ids_to_tokens`` maps ids to *target* tokens when the
    tokenizer has separate vocabularies)."""
    if not has_separate_vocabularies(tokenizer):
        return tokenizer.convert_ids_to_tokens(list(ids))
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    return [by_id.get(int(i), tokenizer.unk_token) for i in ids]


def target_ids(tokenizer, tokens) -> list[int]:
    """The target-side ids of target tokens (``convert_tokens_to_ids`` looks tokens up in the *source* vocabulary)."""
    if not has_separate_vocabularies(tokenizer):
        return tokenizer.convert_tokens_to_ids(list(tokens))
    vocab = tokenizer.target_encoder
    unk = vocab.get(tokenizer.unk_token, tokenizer.unk_token_id)
    return [vocab.get(token, unk) for token in tokens]
