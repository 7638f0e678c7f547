"""Full screens of text and menus: a title screen, an encyclopedia page, an item list, a high-score table.

These are the frames where a tokenizer must keep text readable: whole screens of glyphs, a
cursor stepping through a list that scrolls, text typed a few letters per frame, a large logo
that bobs by a few pixels and a creature that crosses the title screen as sprites.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

import pokevq.synth.boxes as boxes
from pokevq.gameboy import SCREEN_H, SCREEN_W, TILE, Box
from pokevq.synth.creatures import MON_SIZE, monster
from pokevq.synth.dialog import random_message, wrap_text
from pokevq.synth.ppu import MAP_SIZE, Screen, render, sprites_of

_ITEMS = ("POTION", "SUPER POTION", "POKE BALL", "GREAT BALL", "ANTIDOTE", "PARLYZ HEAL", "ESCAPE ROPE", "REPEL",
          "RARE CANDY", "TM01", "TM28", "BICYCLE", "TOWN MAP", "FULL HEAL", "NUGGET", "MOON STONE")
_NAMES = ("RED", "BLUE", "ASH", "GARY", "OAK", "MISTY", "BROCK", "JESSIE", "JAMES", "LANCE")
_FULL: Box = (0, 0, SCREEN_H, SCREEN_W)


def _title(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    word = str(rng.choice(("POKEMON", "MONSTER", "POCKET", "CRYSTAL")))
    logo = boxes.big_text(word)
    creature = monster(rng)[:, :MON_SIZE // 8 * 8]
    creature = np.vstack([creature, np.zeros((64 - MON_SIZE, creature.shape[1]), np.uint8)])
    tick = 0
    for _ in range(count):
        tick += stride
        background = np.zeros((MAP_SIZE, MAP_SIZE), dtype=np.uint8)
        left = (SCREEN_W - logo.shape[1]) // 2
        background[16 : 16 + logo.shape[0], left : left + logo.shape[1]] = logo
        if (tick // 30) % 2 == 0:
            boxes.write(background, 12, 4, "PRESS START")
        boxes.write(background, 16, 2, "1996 GAME FREAK")
        bob = int(round(2 * np.sin(tick / 10)))  # the logo bobs through the scroll register
        x = SCREEN_W - (tick * 2) % (SCREEN_W + 64)
        sprites = sprites_of(creature, 60, x, flip_x=True)
        yield render(Screen(background, scy=bob % MAP_SIZE, sprites=sprites)), _FULL


def _entry(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    creature = monster(rng)
    number = int(rng.integers(1, 152))
    lines = wrap_text(" ".join(random_message(rng) for _ in range(3)), width=18)
    shown = 0
    for _ in range(count):
        shown += stride
        pixels = boxes.box(18, 20)
        pixels[8 : 8 + MON_SIZE, 8 : 8 + MON_SIZE] = creature
        boxes.write(pixels, 2, 10, f"NO.{number:03d}")
        boxes.write(pixels, 4, 10, str(rng.choice(_NAMES)) if shown < 2 * stride else "")
        boxes.write(pixels, 6, 10, f"HT {number % 7}'{number % 12:02d}")
        text = boxes.typed(lines, shown)
        page = max(0, (len([t for t in text if t]) - 1) // 4) * 4
        for k, line in enumerate(text[page : page + 4]):
            boxes.write(pixels, 10 + 2 * k, 1, line)
        yield render(Screen(_padded(pixels))), (9 * TILE, 0, SCREEN_H, SCREEN_W)


def _list(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    items = [str(i) for i in rng.choice(_ITEMS, size=int(rng.integers(6, len(_ITEMS))), replace=False)]
    quantities = rng.integers(1, 99, size=len(items))
    cursor, top = 0, 0
    for _ in range(count):
        for _ in range(stride):
            if rng.random() < 0.05:
                cursor = min(cursor + 1, len(items) - 1) if rng.random() < 0.8 else max(cursor - 1, 0)
        top = min(max(top, cursor - 3), cursor)
        pixels = boxes.box(18, 20)
        boxes.write(pixels, 1, 2, "ITEMS")
        for row, k in enumerate(range(top, min(top + 4, len(items)))):
            boxes.write(pixels, 3 + 3 * row, 2, items[k])
            boxes.write(pixels, 4 + 3 * row, 12, f"X{quantities[k]:2d}")
        boxes.put(pixels, 3 + 3 * (cursor - top), 1, boxes.CURSOR)
        yield render(Screen(_padded(pixels))), _FULL


def _scores(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    names = [str(n) for n in rng.choice(_NAMES, size=7, replace=False)]
    scores = sorted(rng.integers(100, 99999, size=7), reverse=True)
    for i in range(count):
        pixels = np.zeros((SCREEN_H, SCREEN_W), dtype=np.uint8)
        boxes.write(pixels, 1, 5, "HIGH SCORES")
        for k in range(min(7, 1 + i * stride // 8)):  # rows appear one after another
            boxes.write(pixels, 4 + 2 * k, 2, f"{k + 1}.{names[k]:<6}{scores[k]:6d}")
        yield render(Screen(_padded(pixels))), _FULL


def _padded(pixels: np.ndarray) -> np.ndarray:
    background = np.zeros((MAP_SIZE, MAP_SIZE), dtype=np.uint8)
    background[: pixels.shape[0], : pixels.shape[1]] = pixels
    return background


_KINDS = (_title, _entry, _list, _scores)


def text_screen(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    """`count` frames of one full screen of text or menus: (shades, the text's box)."""
    kind = _KINDS[int(rng.integers(len(_KINDS)))]
    yield from kind(rng, count, stride)
