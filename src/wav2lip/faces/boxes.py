"""Box arithmetic shared by the detectors and the tracker: anchor decoding, NMS, IoU.

Everything is vectorised over candidate positions (the reference's per-position Python loop in
S3FD decoding is its CPU bottleneck when many positions pass the 0.05 pre-threshold).
"""
from __future__ import annotations

import numpy as np
import torch

from ..models.retinaface import RETINAFACE_SIZES, RETINAFACE_STEPS
from ..models.s3fd import S3FD_STRIDES

# Box regression variances of both detectors (spec sections 6 and 11).
VARIANCES = (0.1, 0.2)
# S3FD post-processing (spec section 6).
S3FD_PRE_THRESHOLD, S3FD_NMS_IOU, S3FD_THRESHOLD = 0.05, 0.3, 0.5
# RetinaFace post-processing (spec section 11).
RETINAFACE_TOP_K, RETINAFACE_NMS_IOU, RETINAFACE_KEEP = 5000, 0.4, 750


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; indices of kept boxes, best first.

    Areas use the reference's +1 pixel convention ((x2 - x1 + 1) * (y2 - y1 + 1)). The loop runs
    once per KEPT box, each step comparing against all remaining boxes at once.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]) + 1)
        inter = w * h
        order = rest[inter / (areas[i] + areas[rest] - inter) <= iou]
    return np.asarray(keep, dtype=np.int64)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Plain IoU matrix (no +1) between boxes a (N, 4) and b (M, 4), for tracking and measurements."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=-1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=-1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def _decode(loc: torch.Tensor, centres: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Centre/size regression -> corner boxes (SSD encoding with VARIANCES)."""
    cxcy = centres + loc[..., :2] * VARIANCES[0] * sizes
    wh = sizes * torch.exp(loc[..., 2:] * VARIANCES[1])
    return torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=-1)


def s3fd_candidates(outputs: list[torch.Tensor], threshold: float = S3FD_PRE_THRESHOLD) -> list[np.ndarray]:
    """Decode the 12 S3FD head outputs into per-image (n, 5) arrays x1, y1, x2, y2, score > threshold."""
    batch = outputs[0].shape[0]
    per_image: list[list[torch.Tensor]] = [[] for _ in range(batch)]
    for level, stride in enumerate(S3FD_STRIDES):
        conf, loc = outputs[2 * level], outputs[2 * level + 1]
        score = torch.softmax(conf.float(), dim=1)[:, 1]
        b, y, x = torch.nonzero(score > threshold, as_tuple=True)
        if b.numel() == 0:
            continue
        centres = torch.stack([x, y], dim=1).float().add_(0.5).mul_(stride)
        sizes = torch.full_like(centres, 4.0 * stride)
        boxes = _decode(loc.float()[b, :, y, x], centres, sizes)
        dets = torch.cat([boxes, score[b, y, x, None]], dim=1)
        for i in range(batch):
            per_image[i].append(dets[b == i])
    return [torch.cat(d).cpu().numpy() if d else np.zeros((0, 5), np.float32) for d in per_image]


def s3fd_postprocess(candidates: np.ndarray, threshold: float = S3FD_THRESHOLD) -> np.ndarray:
    """NMS at IoU 0.3, then keep scores > threshold, best first (the reference's order of steps).

    Boxes at or below the final threshold can only suppress boxes scored even lower, which are
    dropped anyway, so they are removed before NMS: same result, far fewer boxes.
    """
    kept = candidates[candidates[:, 4] > threshold]
    return kept[nms(kept[:, :4], kept[:, 4], S3FD_NMS_IOU)]


def retinaface_anchors(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Anchor centres (A, 2) and sizes (A, 1) in pixels, in the heads' (level, y, x, size) order."""
    centres, sizes = [], []
    for step, level_sizes in zip(RETINAFACE_STEPS, RETINAFACE_SIZES):
        fh, fw = -(-height // step), -(-width // step)
        ys, xs = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        grid = (np.stack([xs, ys], axis=-1).reshape(-1, 1, 2) + 0.5) * step
        centres.append(np.repeat(grid, len(level_sizes), axis=1).reshape(-1, 2))
        sizes.append(np.tile(np.asarray(level_sizes, dtype=np.float64), fh * fw).reshape(-1, 1))
    return np.concatenate(centres), np.concatenate(sizes)


def retinaface_detections(
    loc: torch.Tensor,
    conf: torch.Tensor,
    landmarks: torch.Tensor,
    height: int,
    width: int,
    threshold: float = 0.5,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per image: boxes (n, 4), landmarks (n, 5, 2), scores (n,) after top-k, NMS 0.4 and keep-750."""
    centres_np, sizes_np = retinaface_anchors(height, width)
    centres = torch.from_numpy(centres_np).to(loc.device, torch.float32)
    sizes = torch.from_numpy(sizes_np).to(loc.device, torch.float32)
    results = []
    for i in range(loc.shape[0]):
        scores = conf[i, :, 1]
        idx = torch.nonzero(scores > threshold).squeeze(1)
        idx = idx[torch.argsort(scores[idx], descending=True, stable=True)][:RETINAFACE_TOP_K]
        c, s = centres[idx], sizes[idx]
        boxes = _decode(loc[i, idx].float(), c, s.expand(-1, 2))
        points = c[:, None, :] + landmarks[i, idx].float().view(-1, 5, 2) * VARIANCES[0] * s[:, :, None]
        boxes_np, points_np, scores_np = boxes.cpu().numpy(), points.cpu().numpy(), scores[idx].cpu().numpy()
        keep = nms(boxes_np, scores_np, RETINAFACE_NMS_IOU)[:RETINAFACE_KEEP]
        results.append((boxes_np[keep], points_np[keep], scores_np[keep]))
    return results
