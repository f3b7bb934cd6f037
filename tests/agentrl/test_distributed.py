"""The learner under torchrun (gloo, 2 CPU processes) makes the same update as one process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

SCRIPT = Path(__file__).with_name("dp_update.py")


def test_two_process_update_equals_single_process(tmp_path):
    single, double = tmp_path / "single.pt", tmp_path / "double.pt"
    subprocess.run([sys.executable, str(SCRIPT), str(single)], check=True, timeout=300)
    from tools.embedded import free_port

    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr",
                    "127.0.0.1", "--master_port", str(free_port()), str(SCRIPT), str(double)], check=True, timeout=300)
    a, b = torch.load(single, weights_only=False), torch.load(double, weights_only=False)
    assert a.keys() == b.keys()
    for key in a:
        if key in ("initial", "tokens"):
            continue
        if key == "log_sigma":
            for k in a[key]:
                assert torch.allclose(a[key][k], b[key][k], atol=1e-6), k
        else:
            assert torch.allclose(a[key], b[key], atol=1e-7, rtol=0), key
    assert b["tokens"] < a["tokens"]  # rank 0 really scored only its share of the rows
    # the update did move the weights, so the comparison is not vacuous
    moved = max((a[k] - v).abs().max().item() for k, v in a["initial"].items())
    assert moved > 1e-4  # vs agreement to 1e-7 below
