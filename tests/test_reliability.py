"""Bad options, bad weights and failing inputs: a clear message and exit code, and no input or
result lost (issue 15). The bad files are made here; none is committed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from dldl_core import cli

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = ROOT / "weights"


def _photo(path: Path, size=(64, 48), colour=(120, 90, 60)) -> Path:
    Image.new("RGB", size, colour).save(path)
    return path


def _main(capsys, *args: str) -> tuple[int, list[dict], str]:
    try:
        rc = cli.main(list(args))
    except SystemExit as exc:  # argparse's usage errors
        rc = exc.code
    captured = capsys.readouterr()
    return rc, [json.loads(line) for line in captured.out.splitlines()], captured.err


def test_out_that_is_an_input_is_refused_and_the_photo_kept(tmp_path, capsys):
    photo = _photo(tmp_path / "p.jpg")
    before = photo.read_bytes()
    rc, _, err = _main(capsys, "predict", "multilabel", str(photo), "--out", str(photo))
    assert rc == 2 and "is one of the inputs" in err
    assert photo.read_bytes() == before


@pytest.mark.parametrize(
    "options, message",
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--batch-size", "-1"], "--batch-size must be at least 1"),
        (["--device", "bogus"], "is not a device"),
        (["--out", "{tmp}/missing/out.jsonl"], "does not exist"),
        (["--out", "{tmp}"], "is a folder"),
    ],
)
def test_bad_options_are_one_line_usage_errors(tmp_path, capsys, options, message):
    photo = _photo(tmp_path / "p.png")
    rc, rows, err = _main(capsys, "predict", "multilabel", str(photo), *[o.format(tmp=tmp_path) for o in options])
    assert rc == 2 and message in err and "Traceback" not in err and rows == []


def test_out_dir_that_is_a_file_is_a_usage_error(tmp_path, capsys):
    photo = _photo(tmp_path / "p.png")
    rc, _, err = _main(capsys, "predict", "seg", str(photo), "--out-dir", str(photo))
    assert rc == 2 and "is a file, not a folder" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: --device cuda is valid here")
def test_cuda_without_a_gpu_is_a_usage_error(tmp_path, capsys):
    rc, _, err = _main(capsys, "predict", "multilabel", str(_photo(tmp_path / "p.png")), "--device", "cuda")
    assert rc == 2 and "no CUDA GPU" in err


def test_out_is_replaced_only_when_the_run_ends(tmp_path, capsys):
    photo = _photo(tmp_path / "p.png")
    out = tmp_path / "rows.jsonl"
    out.write_text("previous results\n")
    rc, _, _ = _main(capsys, "predict", "multilabel", str(photo), "--out", str(out))
    assert rc == 0 and json.loads(out.read_text())["path"] == str(photo)
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_a_failing_input_costs_only_its_own_line(tmp_path, capsys):
    good = _photo(tmp_path / "a.png", (96, 72))
    thin = _photo(tmp_path / "b.png", (2000, 1))  # an aspect ratio the segmentation model refuses
    later = _photo(tmp_path / "c.png", (80, 60), (20, 160, 40))
    rc, rows, err = _main(capsys, "predict", "seg", str(good), str(thin), str(later))
    assert rc == 1
    assert [r["path"] for r in rows] == [str(good), str(thin), str(later)]
    assert "fractions" in rows[0] and "fractions" in rows[2]
    assert "aspect ratio" in rows[1]["error"] and "Traceback" not in err


def test_seg_maps_never_overwrite_each_other(tmp_path, capsys):
    a = _photo(tmp_path / "a.png", (96, 72))
    a_unc = _photo(tmp_path / "a_uncertainty.png", (96, 72), (200, 200, 200))
    out_dir = tmp_path / "maps"
    rc, rows, _ = _main(capsys, "predict", "seg", str(a), str(a_unc), "--out-dir", str(out_dir), "--uncertainty")
    assert rc == 0
    written = [r[k] for r in rows for k in ("mask", "uncertainty")]
    assert len(set(written)) == 4 and all(Path(w).is_file() for w in written)


def test_broken_pipe_exits_quietly(tmp_path):
    photos = [str(_photo(tmp_path / f"p{i}.png")) for i in range(3)]
    code = "import sys; from dldl_core import cli; sys.exit(cli.main(sys.argv[1:]))"
    proc = subprocess.run(
        f"{sys.executable} -c '{code}' predict multilabel {' '.join(photos)} | head -c 1",
        shell=True, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr


def _copy_age(tmp_path: Path) -> Path:
    weights = tmp_path / "age.safetensors"
    shutil.copy(WEIGHTS / "age.safetensors", weights)
    shutil.copy(WEIGHTS / "age.json", tmp_path / "age.json")
    return weights


def _card_edit(weights: Path, edit) -> None:
    card_file = weights.with_suffix(".json")
    card = json.loads(card_file.read_text())
    edit(card)
    card_file.write_text(json.dumps(card))


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("no_input", "incomplete or malformed"),
        ("bins", "age bins"),
        ("nan", "NaN or infinite"),
    ],
)
def test_broken_weights_fail_at_load_with_exit_2(tmp_path, capsys, breakage, message):
    weights = _copy_age(tmp_path)
    if breakage == "no_input":
        _card_edit(weights, lambda c: c.pop("input"))
    elif breakage == "bins":
        _card_edit(weights, lambda c: c["bins"]["age"].update(stop=80))
    else:
        state = load_file(str(weights))
        key = next(k for k, v in state.items() if v.is_floating_point())
        state[key][0] = float("nan")
        save_file(state, str(weights))
    chip = _photo(tmp_path / "chip.png", (128, 128))
    rc, rows, err = _main(capsys, "predict", "age", str(chip), "--crops", "--age-weights", str(weights))
    assert rc == 2 and message in err and rows == []


def test_saved_checkpoints_are_world_readable_and_atomic(tmp_path):
    from dldl_core.checkpoint import load_checkpoint, save_checkpoint

    model, card = load_checkpoint(WEIGHTS / "age.safetensors")
    target = tmp_path / "age.safetensors"
    save_checkpoint(target, model, card)
    assert target.stat().st_mode & 0o777 == 0o644 and target.with_suffix(".json").stat().st_mode & 0o777 == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["age.json", "age.safetensors"]
