"""The demo's inside pictures: lookup masks per scale and step, x̂₀ per step, the hypotheses."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from kpdiff import DiffPose
from kpdiff.data.schemas import get_schema
from kpdiff.engine.figures import inside_pictures


@pytest.mark.parametrize("lookup", ["full", "none"])
def test_pictures_are_written_and_the_model_is_untouched(tmp_path, lookup):
    torch.manual_seed(0)
    model = DiffPose.from_preset("diffpose-tiny", lookup=lookup).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clip = torch.randn(3, 3, 128, 96)
    paths = inside_pictures(model, clip, get_schema("posetrack"), tmp_path, num_samples=3,
                            steps=2)  # fmt: skip
    names = [p.name for p in paths]
    expected = ["x0_steps.png", "hypotheses.png"]
    assert names == (["lookup_masks.png", *expected] if lookup == "full" else expected)
    for path in paths:
        assert Image.open(path).size[0] > 100
    assert model.training  # switched back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # no hook is left behind: another forward records nothing and changes nothing
    assert all(not b.refine._forward_hooks for b in model.decoder.blocks)
