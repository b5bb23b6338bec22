"""DDP under torchrun on CPU (gloo): two processes equal one process with the same global batches."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


def _torchrun(nproc, args, env):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port",
           str(29500 + os.getpid() % 1000 + nproc), str(WORKER), *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.slow
def test_two_processes_equal_one_process_with_accumulation(tmp_path, tokenizer_dir, verse_pairs):
    pairs = tmp_path / "pairs.json"
    pairs.write_text(json.dumps(verse_pairs[:120]), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    # 2 processes x 1 batch per update == 1 process x 2 accumulated batches: the same batches, in the same
    # update, normalised by the same global token count.
    _torchrun(2, [str(tokenizer_dir), str(pairs), str(tmp_path / "two"), "1"], env)
    _torchrun(1, [str(tokenizer_dir), str(pairs), str(tmp_path / "one"), "2"], env)
    assert (tmp_path / "two" / "world_size.txt").read_text() == "2"
    two = load_file(tmp_path / "two" / "model.safetensors")
    one = load_file(tmp_path / "one" / "model.safetensors")
    assert two.keys() == one.keys()
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
