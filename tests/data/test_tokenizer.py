"""The tokenizer trained here: deterministic, standard special-token ids, loadable by plain transformers."""

from __future__ import annotations

from transformers import AutoTokenizer

from distilmt.data.tokenizer import tokenizer_fingerprint, train_tokenizer


def test_the_same_texts_give_the_same_tokenizer(tmp_path, verse_pairs):
    texts = [t for pair in verse_pairs[:800] for t in pair]
    first = train_tokenizer(iter(texts), 500, tmp_path / "a")
    second = train_tokenizer(iter(texts), 500, tmp_path / "b")
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    assert tokenizer_fingerprint(first) == tokenizer_fingerprint(second)
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "a"))
    assert (loaded.pad_token_id, loaded.eos_token_id, loaded.unk_token_id, loaded.bos_token_id) == (0, 1, 2, 3)
    assert 400 <= len(loaded) <= 500
    ids = loaded("In the beginning God created the heavens and the earth.")["input_ids"]
    assert ids[-1] == loaded.eos_token_id and loaded.unk_token_id not in ids
    assert loaded.decode(ids, skip_special_tokens=True) == "In the beginning God created the heavens and the earth."
    hungarian = "Kezdetben teremtette Isten az eget és a földet."
    assert loaded.decode(loaded(hungarian)["input_ids"], skip_special_tokens=True) == hungarian
