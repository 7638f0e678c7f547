"""Facts about frames that the pixels do not carry: the game's palette and where a dialog box is.

`pokevq synth` writes them to `synth_index.json` beside the frames and `pokevq upload`
uploads that file with the frames. When `<frames_dir>/synth_index.json` exists, the
validation metrics snap reconstructions to the known palette and measure the dialog
boxes on their own; without it (real gameplay frames) the palette is read off each
frame and there is no dialog-box figure. Annotations only ever refine metrics, so an
unreadable file is a warning, never a failed run.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import torch

from pokevq.errors import ObjectNotFoundError, StorageError
from pokevq.gameboy import ANNOTATIONS_NAME, MAX_COLOURS, SCREEN_H, SCREEN_W, Box
from pokevq.storage import Storage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FrameAnnotation:
    palette: torch.Tensor | None  # (P,3) uint8, lightest first
    dialog_box: Box | None  # (top, left, bottom, right) on the 160x144 screen, bottom/right exclusive

    def box_at(self, image_size: tuple[int, int]) -> Box | None:
        """The dialog box in the pixels of frames resized to `image_size` (H, W)."""
        if self.dialog_box is None:
            return None
        height, width = image_size
        top, left, bottom, right = self.dialog_box
        return (
            round(top * height / SCREEN_H),
            round(left * width / SCREEN_W),
            round(bottom * height / SCREEN_H),
            round(right * width / SCREEN_W),
        )


def _annotation(entry: Any) -> FrameAnnotation:
    palette = entry.get("palette")
    box = entry.get("dialog_box") if entry.get("has_dialog", entry.get("dialog_box") is not None) else None
    palette_tensor = None
    if palette is not None:
        palette_tensor = torch.tensor(palette, dtype=torch.int64)
        if palette_tensor.dim() != 2 or palette_tensor.shape[1] != 3 or not 1 <= len(palette_tensor) <= MAX_COLOURS:
            raise ValueError(f"palette must be 1-{MAX_COLOURS} RGB colours, got {palette!r}"[:200])
        if bool((palette_tensor < 0).any() or (palette_tensor > 255).any()):
            raise ValueError("palette colours must be 0-255")
        palette_tensor = palette_tensor.to(torch.uint8)
    if box is not None:
        top, left, bottom, right = (int(v) for v in box)
        if not (0 <= top < bottom <= SCREEN_H and 0 <= left < right <= SCREEN_W):
            raise ValueError(f"dialog_box {box!r} is not inside the {SCREEN_W}x{SCREEN_H} screen")
        box = (top, left, bottom, right)
    return FrameAnnotation(palette_tensor, box)


def parse_annotations(data: bytes, prefix: str = "") -> dict[str, FrameAnnotation]:
    """Storage key (`prefix` + the entry's key) -> annotation, from the bytes of a synth_index.json."""
    entries = json.loads(data)
    if not isinstance(entries, list):
        raise ValueError("expected a JSON list of frames")
    found: dict[str, FrameAnnotation] = {}
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
            raise ValueError("every entry needs a string 'key'")
        found[prefix + entry["key"]] = _annotation(entry)
    return found


def load_annotations(storage: Storage, frames_prefix: str) -> dict[str, FrameAnnotation]:
    """The annotations next to the frames, or {} when there are none or they cannot be used."""
    key = f"{frames_prefix}{ANNOTATIONS_NAME}"
    try:
        data = storage.get_bytes(key)
    except ObjectNotFoundError:
        return {}
    except StorageError as exc:
        log.warning("Could not read frame annotations %s (%s): quality metrics read palettes off the frames", key, exc)
        return {}
    try:
        found = parse_annotations(data, frames_prefix)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning(
            "Ignoring frame annotations %s: %s. Quality metrics read palettes off the frames instead; "
            "regenerate the file with `pokevq synth` or remove it.", storage.uri(key), str(exc)[:200],
        )
        return {}
    dialogs = sum(1 for a in found.values() if a.dialog_box is not None)
    log.info("Frame annotations: %d frames (%d with a dialog box) from %s", len(found), dialogs, storage.uri(key))
    return found
