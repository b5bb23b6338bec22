"""Run by tests/test_distributed.py under torchrun: a few training steps of a tiny model, saved to OUT."""

import json
import sys

import torch
from transformers import AutoTokenizer

from distilmt.config import TeacherConfig, TrainConfig
from distilmt.models.build import build_model
from distilmt.training.loop import train_seq2seq

if __name__ == "__main__":
    tokenizer_dir, pairs_file, out, grad_accum = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    pairs = [tuple(p) for p in json.loads(open(pairs_file, encoding="utf-8").read())]
    model = build_model(TeacherConfig(d_model=32, encoder_layers=1, decoder_layers=1, ffn_dim=64, heads=4,
                                      dropout=0.0), tokenizer, seed=0)
    cfg = TrainConfig(learning_rate=1e-3, warmup_steps=0, max_steps=3, batch_tokens=150, grad_accum=grad_accum,
                      bf16=False, eval_every_epoch=False, label_smoothing=0.1)
    trainer = train_seq2seq(model, tokenizer, pairs, [], cfg, __import__("pathlib").Path(out),
                            __import__("pathlib").Path(out) / "tb", 0)
    if trainer.is_world_process_zero():
        with open(f"{out}/world_size.txt", "w") as f:
            f.write(str(trainer.args.world_size))
    if torch.distributed.is_initialized():  # leave the gloo group cleanly: no abort at interpreter exit
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
