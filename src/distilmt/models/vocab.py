"""Do two models share one vocabulary? Token-level KD compares logits id by id, so it needs one.

Only the tokenizers' *real* vocabularies are compared (``len(tokenizer)``, the ids of a probe text, the special and
added tokens), not the embedding matrices: models of one family are often padded to different sizes (Qwen2.5:
151936 vs 152064 rows for 151665 tokens), and KD then runs on the logits cut to the shared real size. Between
different tokenizers only sequence-level KD works (the teacher's translations become plain-text labels).
"""

from __future__ import annotations

from ..errors import ModelError

PROBE_TEXT = "The quick brown fox, 1234 -- Árvíztűrő tükörfúrógép! 你好"


def check_same_vocabulary(teacher_tokenizer, student_tokenizer, teacher_model=None, student_model=None,
                          where: str = "teacher") -> None:
    """Refuse logit KD between models whose token ids differ (one clear sentence saying what to do).

    Compares the real vocabulary size (len(tokenizer), not a padded embedding matrix), the ids of a probe
    text, and that each model's output layer covers that vocabulary.
    """
    n_t, n_s = len(teacher_tokenizer), len(student_tokenizer)
    if n_t != n_s:
        raise ModelError(f"{where}: vocabulary has {n_t} tokens but the student's has {n_s}; token-level KD needs "
                         "one shared tokenizer: derive the student from this teacher (or use sequence-level KD)")
    ids_t = teacher_tokenizer(PROBE_TEXT)["input_ids"]
    ids_s = student_tokenizer(PROBE_TEXT)["input_ids"]
    if ids_t != ids_s:
        raise ModelError(f"{where}: its tokenizer maps the same text to different token ids than the student's; "
                         "token-level KD needs one shared tokenizer: derive the student from this teacher")
    for model, who in ((teacher_model, where), (student_model, "student")):
        if model is not None and model.get_output_embeddings().weight.shape[0] < n_t:
            raise ModelError(f"{who}: output layer has {model.get_output_embeddings().weight.shape[0]} rows, fewer "
                             f"than the {n_t}-token vocabulary; the model and tokenizer do not belong together")


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
    if teacher_tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"] != \
            student_tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"]:
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
    matrices padded to different sizes pass, and each model's output layer must merely cover the vocabulary.
    KD then compares the logits cut to the returned size.
    """
    problem = vocabulary_difference(teacher_tokenizer, student_tokenizer)
    if problem:
        raise ModelError(f"token-level KD between {teacher_name} and {student_name} needs one vocabulary, but "
                         f"{problem}; use sequence-level KD instead (seqkd.enabled=true, `distilmt generate-labels`), "
                         "which works across tokenizers")
    size = len(teacher_tokenizer)
    for model, name in ((teacher_model, teacher_name), (student_model, student_name)):
        if model is not None and model.get_output_embeddings().weight.shape[0] < size:
            rows = model.get_output_embeddings().weight.shape[0]
            raise ModelError(f"{name}: its output layer has {rows:,} rows, fewer than its {size:,}-token tokenizer; "
                             "the model and tokenizer in that directory do not belong together")
    return size
