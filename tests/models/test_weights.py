"""models.weights: one checkpoint loader that never runs code from a file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models.cli import main as pann_main
from models.weights import DEFAULT_WEIGHTS, load_checkpoint, save_atomic


class _Crafted:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code an attacker wants run."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _crafted_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    witness = tmp_path / "code_ran.txt"
    path = tmp_path / "crafted.pt"
    torch.save({"version": 1, "config": _Crafted(str(witness))}, path)
    assert not witness.exists()
    return path, witness


def test_crafted_checkpoint_is_refused_and_does_not_run(tmp_path, capsys):
    crafted, witness = _crafted_checkpoint(tmp_path)
    np.save(tmp_path / "v.npy", np.zeros((16, 16, 16), np.float32))
    args = ["predict", "--volume", str(tmp_path / "v.npy"), "--sampling", "0.4"]
    assert pann_main([*args, "--weights", str(crafted), "--out", str(tmp_path / "a.xyz")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "loading them could run code" in err, err
    assert f"weights={str(crafted)!r}" in err
    assert not witness.exists() and not (tmp_path / "a.xyz").exists()
    # the same through the unet3d loader and a training resume point
    from models.train import load_unet3d

    with pytest.raises(ValueError, match="could run code"):
        load_unet3d(crafted)
    with pytest.raises(ValueError, match="resume point=.*could run code"):
        load_checkpoint(crafted, param="resume point")
    assert not witness.exists()
    # The file is a real threat: it calls open() when unpickled (read without running it), and
    # the callable it names does create the witness.
    assert torch.serialization.get_unsafe_globals_in_checkpoint(crafted) == ["io.open"]
    _Crafted(str(witness)).__reduce__()[0](str(witness), "w").close()
    assert witness.exists()


def test_shipped_weights_load_with_weights_only(tmp_path):
    from models.pann import PannModel
    from models.train import load_unet3d

    pann = load_checkpoint(DEFAULT_WEIGHTS / "pann.pt")
    assert isinstance(pann["config"], dict) and pann["config"]["sampling"] == 0.4
    model = PannModel.load(DEFAULT_WEIGHTS)
    assert model.config.elements == ("Fe", "Co", "Ni", "Cu", "Pd", "Pt", "Au")
    assert model.config.stage2_features == 2
    net, meta = load_unet3d()
    assert meta["sampling"] == 0.4 and sum(p.numel() for p in net.parameters()) > 0


def test_training_resume_point_round_trips(tmp_path):
    """Optimizer and OneCycleLR states are plain data: weights_only=True reads them back."""
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=50)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    sched.step()
    path = tmp_path / "stage1.ckpt"
    save_atomic(
        {
            "model": net.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "step": 1,
            "losses": [0.5],
        },
        path,
    )
    state = load_checkpoint(path, param="resume point")
    opt2 = torch.optim.AdamW(net.parameters(), lr=1e-3)
    opt2.load_state_dict(state["optimizer"])
    sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=1e-3, total_steps=50)
    sched2.load_state_dict(state["scheduler"])
    assert sched2.get_last_lr() == sched.get_last_lr() and state["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["stage1.ckpt"]


def test_truncated_and_foreign_files_give_one_line(tmp_path):
    good = tmp_path / "good.pt"
    save_atomic({"a": torch.ones(3)}, good)
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(good.read_bytes()[:50])
    with pytest.raises(ValueError, match=r"weights='.*t\.pt': not a valid checkpoint") as info:
        load_checkpoint(truncated)
    assert "\n" not in str(info.value)
    listed = tmp_path / "list.pt"
    torch.save([1, 2], listed)
    with pytest.raises(ValueError, match="holds a list, expected a dict"):
        load_checkpoint(listed)
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_no_import_loop_between_train_and_cli():
    code = "import sys, models.train; print('models.cli' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "False", result.stderr
