"""RetinaFace mobilenet0.25 with the real weights reproduces the published outputs on real frames."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from wav2lip.faces.boxes import retinaface_detections
from wav2lip.models.retinaface import RETINAFACE_MEAN_BGR, RetinaFace


def load_retinaface(path) -> RetinaFace:
    """The real weights, with any data-parallel `module.` prefix stripped."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RetinaFace()
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def model(models_dir):
    return load_retinaface(models_dir / "retinaface_mobilenet0.25.pth")


@pytest.fixture(scope="module")
def ref(fixtures_dir):
    return np.load(fixtures_dir / "retinaface_real_frames.npz")


def test_every_fixture_frame(model, ref):
    keys = sorted({name.rsplit("_", 1)[0] for name in ref.files})
    assert len(keys) == 13
    for key in keys:
        frame = ref[f"{key}_bgr"]
        x = torch.from_numpy(frame).float() - torch.tensor(RETINAFACE_MEAN_BGR)
        with torch.inference_mode():
            loc, conf, landmarks = model(x.permute(2, 0, 1)[None])
        boxes, points, scores = retinaface_detections(loc, conf, landmarks, *frame.shape[:2])[0]
        assert boxes.shape == ref[f"{key}_boxes"].shape, key
        assert np.abs(boxes - ref[f"{key}_boxes"]).max() <= 1.0, key
        assert np.abs(points - ref[f"{key}_landmarks"]).max() <= 1.0, key
        assert np.allclose(scores, ref[f"{key}_scores"], atol=1e-4), key
