"""Damaged detector weights (found by benchmarks/fuzz.py: a flipped byte in retinaface.pth) give infinite or
NaN boxes; such a detection is no face, and tracking and lip-sync go on as for a frame without one."""
from __future__ import annotations

import torch

from wav2lip.faces import create_detector, track
from wav2lip.io.video import open_source


def test_non_finite_boxes_are_not_faces(models_dir, media):
    frames = list(open_source(media / "vr_face5.mp4").frames(3, loop="none"))[:3]
    detector = create_detector("retinaface", weights=models_dir / "retinaface_mobilenet0.25.pth", batch_size=3)
    assert all(faces for faces in detector.detect(frames))  # the real weights see the face
    with torch.no_grad():
        detector.model.BboxHead[0].conv1x1.bias.fill_(float("inf"))  # as a flipped exponent bit makes it
        detector.model.BboxHead[1].conv1x1.bias.fill_(float("nan"))
        detector.model.BboxHead[2].conv1x1.bias.fill_(float("-inf"))
    assert detector.detect(frames) == [[], [], []]
    assert [item.box for item in track(frames, detector)] == [None, None, None]
