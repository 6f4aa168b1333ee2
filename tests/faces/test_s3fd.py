"""S3FD network and its decoding match the reference outputs on the deterministic fill (s3fd.npz)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import assert_close_to_fixture
from wav2lip.faces.boxes import nms, s3fd_candidates, s3fd_postprocess
from support.deterministic import fill_deterministic
from wav2lip.models.s3fd import S3FD, S3FD_MEAN_RGB


@pytest.fixture(scope="module")
def s3fd_ref(fixtures_dir):
    return np.load(fixtures_dir / "s3fd.npz")


@pytest.fixture(scope="module")
def s3fd_out(s3fd_ref):
    model = fill_deterministic(S3FD())
    x = torch.from_numpy(s3fd_ref["images_rgb"]).float() - torch.tensor(S3FD_MEAN_RGB)
    with torch.inference_mode():
        return model(x.permute(0, 3, 1, 2))


def test_state_dict_keys_match_the_authors_file(fixtures_dir):
    formats = json.loads((fixtures_dir / "state_dict_formats.json").read_text())["s3fd"]
    state = S3FD().state_dict()
    assert [k for k, _, _ in formats] == list(state)
    assert all(list(state[k].shape) == shape for k, shape, _ in formats)


def test_raw_heads_match_fixture(s3fd_out, s3fd_ref):
    assert len(s3fd_out) == 12
    for i, out in enumerate(s3fd_out):
        assert_close_to_fixture(out.numpy(), s3fd_ref[f"raw_{i}"])


def test_decoded_boxes_match_fixture(s3fd_out, s3fd_ref):
    for i, candidates in enumerate(s3fd_candidates(s3fd_out)):
        boxes = s3fd_postprocess(candidates)
        ref = s3fd_ref[f"boxes_{i}"]
        assert boxes.shape == ref.shape
        assert np.abs(boxes - ref).max() < 1e-3


def _reference_nms(dets: np.ndarray, thresh: float) -> list[int]:
    """Direct transcription of the published greedy NMS (+1 areas), for comparison."""
    x1, y1, x2, y2, scores = dets.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        i = order[0]
        keep.append(i)
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        w, h = np.maximum(0.0, xx2 - xx1 + 1), np.maximum(0.0, yy2 - yy1 + 1)
        ovr = w * h / (areas[i] + areas[order[1:]] - w * h)
        order = order[np.where(ovr <= thresh)[0] + 1]
    return keep


def test_nms_matches_reference_on_random_boxes():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    wh = rng.uniform(2, 40, (300, 2))
    dets = np.concatenate([xy, xy + wh, rng.uniform(0, 1, (300, 1))], axis=1)
    for thresh in (0.3, 0.4):
        assert nms(dets[:, :4], dets[:, 4], thresh).tolist() == _reference_nms(dets, thresh)
