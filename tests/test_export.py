"""ONNX export and the torch-free sampler: parity with DiffPose.predict on the same noise,
dynamic batch, the CLI end to end, the numpy arithmetic against its torch definitions, the
bad inputs, and no torch import at inference."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import MICRO

from kpdiff.cli import main
from kpdiff.codecs import GaussianHeatmapCodec
from kpdiff.diffpose import DiffPose
from kpdiff.diffusion import default_scheduler
from kpdiff.errors import KpdiffInputError
from kpdiff.kernels.reference import ddim_step_reference
from kpdiff.onnx_sampler import (
    OnnxPoseSampler,
    ddim_step,
    ddim_timesteps,
    decode_heatmaps,
    render_heatmaps,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[DiffPose, Path]:
    """A random-weight MICRO model saved with save_pretrained and exported by the CLI."""
    root = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    model = DiffPose(MICRO).eval()
    model.save_pretrained(root / "ckpt")
    code = main(["export", str(root / "ckpt"), "--format", "onnx", "--out", str(root / "onnx")])
    assert code == 0
    return DiffPose.from_pretrained(root / "ckpt").eval(), root / "onnx"


def clips_and_noise(model: DiffPose, b: int, n: int, seed: int):
    c = model.config
    clips = torch.randn(b, 2 * c.delta + 1, 3, *c.input_size, generator=seeded(seed))
    # EnsembleSampler draws x_T [N·B, K, h, w] first from the generator: the same draw
    noise = torch.randn(n * b, c.num_keypoints, *c.heatmap_size, generator=seeded(seed))
    return clips, noise


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- the export


def test_export_files_and_sidecar(exported, capsys):
    model, out = exported
    info = json.loads((out / "sampler.json").read_text())
    assert {p.name for p in out.iterdir()} == {"encoder.onnx", "decoder_step.onnx", "sampler.json"}
    assert info["format"] == "onnx" and info["num_keypoints"] == 5 and info["num_frames"] == 3
    assert info["input_size"] == [64, 48] and info["heatmap_size"] == [16, 12]
    assert info["signal_scale"] == 2.0 and info["stride"] == 4.0
    assert info["codec"]["refine"] == "quarter" and info["sampling"]["num_samples"] == 10
    assert info["kpdiff_version"] and info["opset"] == 18
    abar = np.asarray(info["scheduler"]["alphas_cumprod"], dtype=np.float32)
    assert np.array_equal(abar, model.diffusion.alphas_cumprod.numpy())  # exact in JSON
    assert [c["name"] for c in info["cond"]][:3] == ["pyramid_x1", "pyramid_x2", "pyramid_x4"]
    assert max(info["export_check"]["max_abs_error"].values()) < 1e-4


def test_onnx_parity_with_predict(exported):
    """Same weights, same noise: the numpy + onnxruntime sampler gives predict's keypoints."""
    model, out = exported
    sampler = OnnxPoseSampler(out, num_keypoints=5, threads=1)
    worst = 0.0
    for seed in range(3):
        clips, noise = clips_and_noise(model, b=2, n=10, seed=seed)
        want = model.predict(clips, num_samples=10, steps=4, generator=seeded(seed))
        got = sampler.predict(clips.numpy(), num_samples=10, steps=4, noise=noise.numpy())
        assert got.keypoints.shape == (2, 5, 2) and got.keypoints.dtype == np.float32
        worst = max(worst, float(np.abs(got.keypoints - want.keypoints.numpy()).max()))
        np.testing.assert_allclose(got.heatmaps, want.heatmaps.numpy(), atol=1e-4)
        np.testing.assert_allclose(got.scores, want.scores.numpy(), atol=1e-4)
        np.testing.assert_allclose(got.spread, want.spread.numpy(), atol=0.05)
    assert worst <= 0.05  # px, fp32


def test_dynamic_batch_and_noise_layouts(exported):
    model, out = exported
    sampler = OnnxPoseSampler(out)
    assert isinstance(sampler._encoder.get_inputs()[0].shape[0], str)  # a symbolic batch
    assert isinstance(sampler._decoder.get_inputs()[0].shape[0], str)
    clips, noise = clips_and_noise(model, b=2, n=3, seed=4)
    both = sampler.predict(clips.numpy(), num_samples=3, steps=2, noise=noise.numpy())
    # clip 0 alone, with its own noise (hypothesis-major [N, B, …] layout), through B = 1
    first = noise.numpy().reshape(3, 2, 5, 16, 12)[:, :1]
    one = sampler.predict(clips[:1].numpy(), num_samples=3, steps=2, noise=first)
    np.testing.assert_allclose(one.heatmaps, both.heatmaps[:1], atol=1e-5)
    assert np.abs(one.keypoints - both.keypoints[:1]).max() <= 0.05
    # default noise: seeded, reproducible, and the model's defaults (N = 10, 4 steps)
    a = sampler.predict(clips.numpy(), seed=1)
    b = sampler.predict(clips.numpy(), seed=1)
    c = sampler.predict(clips.numpy().astype(np.float64), seed=2)
    assert np.array_equal(a.heatmaps, b.heatmaps) and not np.array_equal(a.heatmaps, c.heatmaps)


def test_renew_and_dark_follow_the_sidecar(exported, tmp_path):
    """The graphs do not depend on the codec or on renewal: the same files with the sidecar of
    a renew=True, refine="dark" model reproduce that model's predict."""
    model, out = exported
    other = DiffPose(model.config.replace(renew=True, refine="dark")).eval()
    other.load_state_dict(model.state_dict())
    folder = tmp_path / "dark"
    shutil.copytree(out, folder)
    info = json.loads((folder / "sampler.json").read_text())
    info["codec"]["refine"], info["sampling"]["renew"] = "dark", True
    (folder / "sampler.json").write_text(json.dumps(info))
    clips, noise = clips_and_noise(model, b=2, n=4, seed=7)
    want = other.predict(clips, num_samples=4, steps=3, generator=seeded(7))
    sampler = OnnxPoseSampler(folder)
    got = sampler.predict(clips.numpy(), num_samples=4, steps=3, noise=noise.numpy())
    np.testing.assert_allclose(got.heatmaps, want.heatmaps.numpy(), atol=1e-4)
    assert np.abs(got.keypoints - want.keypoints.numpy()).max() <= 0.05


def test_torch_export_format(exported, tmp_path):
    from kpdiff.export import export_torch

    model, _ = exported

    report = export_torch(model, tmp_path / "pt2", check=False)
    assert [p.name for p in report.files] == ["encoder.pt2", "decoder_step.pt2", "sampler.json"]
    encoder = torch.export.load(tmp_path / "pt2" / "encoder.pt2").module()
    c = model.config
    clips = torch.randn(3, 3, 3, *c.input_size)  # B = 3: not the traced batch
    for got, want in zip(encoder(clips), model.condition(clips).tensors(), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with pytest.raises(KpdiffInputError, match=r"torch-export.*OnnxPoseSampler reads"):
        OnnxPoseSampler(tmp_path / "pt2")


def test_export_takes_a_run_folder_as_evaluate_model_does(exported, tmp_path):
    """``kpdiff export RUN`` exports the run's best/ (as ``kpdiff evaluate-model RUN`` reads it);
    --opset concerns ONNX only."""
    model, _ = exported
    model.save_pretrained(tmp_path / "run" / "best")
    out = tmp_path / "pt2"
    args = ["export", str(tmp_path / "run"), "--format", "torch-export", "--opset", "9"]
    assert main([*args, "--out", str(out)]) == 0
    assert (out / "sampler.json").is_file()
    assert main(["export", str(tmp_path / "run"), "--opset", "9", "--out", str(out)]) == 2


# ------------------------------------------------------------------- the numpy arithmetic


def test_timesteps_match_diffusers():
    scheduler = default_scheduler(1000)
    for steps in [*range(1, 21), 33, 64, 97, 250, 999, 1000]:
        scheduler.set_timesteps(steps)
        assert np.array_equal(ddim_timesteps(1000, steps), scheduler.timesteps.numpy()), steps


@pytest.mark.parametrize("refine", ["none", "quarter", "dark"])
def test_numpy_decode_matches_codec(refine):
    g = torch.Generator().manual_seed(0)
    codec = GaussianHeatmapCodec((16, 12), stride=4.0, sigma=2.0, refine=refine)
    kp = torch.rand(4, 7, 2, generator=g) * torch.tensor([48.0, 64.0]) - 2  # borders included
    heat = codec.encode(kp, torch.ones(4, 7))[0] * 0.8
    heat = heat + 0.05 * torch.rand(4, 7, 16, 12, generator=g)
    heat[0, 0] = 0.0  # a flat map: ties everywhere
    want_kp, want_max = codec.decode(heat)
    got_kp, got_max = decode_heatmaps(heat.numpy(), stride=4.0, refine=refine, sigma=2.0)
    np.testing.assert_allclose(got_kp, want_kp.numpy(), atol=1e-4)
    np.testing.assert_array_equal(got_max, want_max.numpy())


def test_numpy_render_and_ddim_match_torch():
    g = torch.Generator().manual_seed(1)
    kp = torch.rand(3, 6, 2, generator=g) * 80 - 10  # some outside the map and beyond 3σ
    want = GaussianHeatmapCodec((16, 12)).encode(kp, torch.ones(3, 6))[0]
    np.testing.assert_allclose(render_heatmaps(kp.numpy(), (16, 12)), want.numpy(), atol=1e-6)
    x, x0 = torch.randn(2, 5, 16, 12, generator=g), 3 * torch.randn(2, 5, 16, 12, generator=g)
    abar = default_scheduler().alphas_cumprod.float()
    for t, t_prev in ((999, 749), (499, 249), (10, 3)):
        a_t, a_prev = abar[t].item(), abar[t_prev].item()
        ref = ddim_step_reference(x, x0, a_t, a_prev, clip_range=2.0)
        got = ddim_step(x.numpy(), x0.numpy(), a_t, a_prev, clip_range=2.0)
        np.testing.assert_allclose(got, ref.numpy(), rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------- bad input


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_export_of_a_checkpoint_that_does_not_load(tmp_path, capsys):
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text(MICRO.to_json())
    (tmp_path / "broken" / "model.safetensors").write_bytes(b"not safetensors")
    for ckpt in ("missing", "broken"):
        capsys.readouterr()
        assert main(["export", str(tmp_path / ckpt), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("kpdiff export: error:"), err
        assert ckpt in err
    assert not (tmp_path / "out" / "sampler.json").exists()
    (tmp_path / "file").write_text("")
    assert main(["export", str(tmp_path / "broken"), "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err


def test_sampler_refuses_another_keypoint_count(exported, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    _, out = exported
    with pytest.raises(KpdiffInputError) as err:
        OnnxPoseSampler(out, num_keypoints=17)
    assert "5 keypoints, expected 17" in one_line(err)

    # decoder_step.onnx of a 3-keypoint model (no kpdiff metadata) dropped into the folder
    folder = tmp_path / "mixed"
    shutil.copytree(out, folder)
    info = json.loads((folder / "sampler.json").read_text())
    cond = [helper.make_tensor_value_info(c["name"], TensorProto.FLOAT, ["batch", *c["shape"]])
            for c in info["cond"]]  # fmt: skip
    x_t = helper.make_tensor_value_info("x_t", TensorProto.FLOAT, ["batch", 3, 16, 12])
    t = helper.make_tensor_value_info("t", TensorProto.INT64, ["batch"])
    y = helper.make_tensor_value_info("x0_hat", TensorProto.FLOAT, ["batch", 3, 16, 12])
    graph = helper.make_graph([helper.make_node("Identity", ["x_t"], ["x0_hat"])], "other",
                              [x_t, t, *cond], [y])  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]),
              folder / "decoder_step.onnx")  # fmt: skip
    with pytest.raises(KpdiffInputError) as err:
        OnnxPoseSampler(folder)
    assert "decoder_step.onnx: a graph for 3 keypoints" in one_line(err)
    assert "is for 5" in str(err.value)

    # a sidecar that claims another count than the graphs' metadata
    info["num_keypoints"] = 4
    (folder / "sampler.json").write_text(json.dumps(info))
    shutil.copy(out / "decoder_step.onnx", folder / "decoder_step.onnx")
    with pytest.raises(KpdiffInputError) as err:
        OnnxPoseSampler(folder)
    assert "encoder.onnx: a graph for 5 keypoints" in one_line(err)


def test_sampler_bad_folders_and_inputs(exported, tmp_path):
    _, out = exported
    cases = []
    with pytest.raises(KpdiffInputError) as err:
        OnnxPoseSampler(tmp_path)  # no sampler.json
    cases.append((err, "sampler.json: not found"))
    folder = tmp_path / "copy"
    shutil.copytree(out, folder)
    (folder / "encoder.onnx").write_bytes(b"garbage")
    with pytest.raises(KpdiffInputError) as err:
        OnnxPoseSampler(folder)
    cases.append((err, "encoder.onnx: not an ONNX model"))
    (folder / "sampler.json").write_text("{")
    with pytest.raises(KpdiffInputError) as err:
        OnnxPoseSampler(folder)
    cases.append((err, "not valid JSON"))
    sampler = OnnxPoseSampler(out)
    good = np.zeros((1, 3, 3, 64, 48), np.float32)
    for kwargs, match in [
        ({"clips": np.zeros((1, 5, 3, 64, 48), np.float32)}, "clips: expected shape"),
        ({"clips": good.astype(np.uint8)}, "clips: expected float32"),
        ({"clips": good + np.nan}, "clips: expected finite"),
        ({"clips": torch.zeros(1, 3, 3, 64, 48)}, "clips: expected a numpy array"),
        ({"clips": good, "num_samples": 0}, "num_samples"),
        ({"clips": good, "steps": 1001}, "steps"),
        ({"clips": good, "num_samples": 2, "noise": np.zeros((3, 5, 16, 12))}, "noise"),
    ]:
        with pytest.raises(KpdiffInputError) as err:
            sampler.predict(**kwargs)
        cases.append((err, match))
    for err, match in cases:
        assert match in one_line(err)


def test_sampler_imports_no_torch(exported):
    _, out = exported
    code = (
        "import sys, numpy as np\n"
        "from kpdiff.onnx_sampler import OnnxPoseSampler\n"
        f"s = OnnxPoseSampler({str(out)!r}, threads=1)\n"
        "r = s.predict(np.zeros((2, 3, 3, 64, 48), np.float32), num_samples=2, steps=2)\n"
        "assert r.keypoints.shape == (2, 5, 2), r.keypoints.shape\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parents[1], timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
