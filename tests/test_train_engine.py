"""The shared training loop end to end on a tiny slice: train, select, resume, card."""

import json


from dldl_core.checkpoint import load_checkpoint
from train.age import AgeConfig, AgeTask
from train.engine import fit, parse_config


def test_parse_config_from_dataclass():
    cfg = parse_config(AgeConfig, ["--epochs", "3", "--sigma", "2.5", "--no-tta-flip"])
    assert (cfg.epochs, cfg.sigma, cfg.tta_flip, cfg.lam) == (3, 2.5, False, 1.0)


def test_tiny_age_run_and_resume(tmp_path, utkface_test):
    common = ["--out", str(tmp_path / "run"), "--limit", "64", "--val-limit", "32", "--batch-size", "16",
              "--image-size", "64", "--template-chips", "4", "--no-pretrained", "--skip-test",
              "--cache-dir", str(tmp_path / "cache")]
    card = fit(AgeTask(parse_config(AgeConfig, common + ["--epochs", "1"])))
    assert len(card["training"]["history"]) == 1
    # Asking for two epochs with --resume continues after the first instead of starting again.
    card = fit(AgeTask(parse_config(AgeConfig, common + ["--epochs", "2", "--resume"])))
    assert [h["epoch"] for h in card["training"]["history"]] == [1, 2]
    model, saved = load_checkpoint(tmp_path / "run" / "age.safetensors")
    assert saved["input"]["size"] == 64 and len(saved["input"]["crop"]["template"]) == 5
    assert saved["training"]["config"]["sigma"] == 2.0 and "val" in saved["metrics"]
    assert json.loads((tmp_path / "run" / "age.json").read_text()) == saved
