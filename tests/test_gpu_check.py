"""scripts/gpu_check.py without CUDA: one line, exit 0 (this machine has no GPU)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this test is for machines without CUDA")
def test_gpu_check_skips_cleanly_without_cuda():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines == [
        "gpu_check: no CUDA device (torch.cuda.is_available() is false); nothing to check"
    ]
