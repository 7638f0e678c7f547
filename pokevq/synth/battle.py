"""Battles: two large creatures slide in, text is typed, the move menu opens, attacks flash and shake.

The creatures are 7x7-tile pictures in the background. They slide in from opposite sides through a
per-line scroll (the raster trick the games use), so for a while they sit at any pixel offset.
Attacks shake the screen a few pixels, flash the palette and throw small sprites about; HP bars
drain pixel by pixel.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

import pokevq.synth.boxes as boxes
from pokevq.gameboy import SCREEN_H, TILE, Box
from pokevq.synth.creatures import MON_SIZE, ball, monster
from pokevq.synth.dialog import DIALOG_BOX, DIALOG_TOP_ROW, wrap_text
from pokevq.synth.ppu import INVERTED, MAP_SIZE, Screen, Sprite, render

_MONS = ("PIDGEY", "RATTATA", "ODDISH", "PIKACHU", "SPEAROW", "ZUBAT", "EEVEE", "ABRA", "GEODUDE", "VULPIX")
_MOVES = ("TACKLE", "GROWL", "EMBER", "GUST", "SCRATCH", "BITE", "THUNDERSHOCK", "QUICK ATTACK")
_STAR = np.array([[0, 0, 0, 3, 0, 0, 0, 0], [0, 0, 3, 2, 3, 0, 0, 0], [3, 3, 2, 1, 2, 3, 3, 0],
                  [0, 3, 2, 1, 2, 3, 0, 0], [0, 0, 3, 2, 3, 0, 0, 0], [0, 3, 0, 3, 0, 3, 0, 0],
                  [3, 0, 0, 0, 0, 0, 3, 0], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=np.uint8)
_ENEMY_TOP, _ENEMY_LEFT = 0, 12 * TILE  # tile-aligned once the slide ends
_OWN_TOP, _OWN_LEFT = 5 * TILE, 1 * TILE


def _hud(enemy: str, own: str, level: tuple[int, int], hp: tuple[float, float]) -> np.ndarray:
    """The battle background: names, levels and HP bars, creatures drawn separately."""
    pixels = np.zeros((MAP_SIZE, MAP_SIZE), dtype=np.uint8)
    boxes.write(pixels, 0, 1, enemy)
    boxes.write(pixels, 1, 4, f":L{level[0]}")
    boxes.write(pixels, 2, 1, "HP:")
    boxes.hp_bar(pixels, 2, 4, 6, hp[0])
    boxes.write(pixels, 7, 10, own)
    boxes.write(pixels, 8, 14, f":L{level[1]}")
    boxes.write(pixels, 9, 10, "HP:")
    boxes.hp_bar(pixels, 9, 13, 6, hp[1])
    boxes.write(pixels, 10, 13, f"{int(hp[1] * 40):3d}/ 40")
    return pixels


def _text_box(lines: list[str], shown: int) -> np.ndarray:
    pixels = boxes.box(6, 20)
    for k, line in enumerate(boxes.typed(lines, shown)[:2]):
        boxes.write(pixels, 2 + 2 * k, 1, line)
    return pixels


def _move_menu(moves: list[str], cursor: int) -> np.ndarray:
    pixels = boxes.box(6, 20)
    inner = boxes.box(6, 12)
    for k, move in enumerate(moves):
        boxes.write(inner, 1 + k, 2, move[:9])
    boxes.put(inner, 1 + cursor, 1, boxes.CURSOR)
    pixels[:, 8 * TILE :] = inner
    boxes.write(pixels, 2, 1, "TYPE/")
    boxes.write(pixels, 3, 2, "NORMAL")
    return pixels


def _script(rng: np.random.Generator, enemy: str, own: str) -> list[tuple[str, object]]:
    """The battle as a list of steps: ("slide", n), ("text", msg), ("menu", moves), ("attack", side)."""
    steps: list[tuple[str, object]] = [("slide", None), ("text", f"WILD {enemy} APPEARED!"), ("text", f"GO! {own}!")]
    for _ in range(int(rng.integers(2, 5))):
        moves = list(rng.choice(_MOVES, size=4, replace=False))
        steps += [("menu", moves), ("text", f"{own} USED {moves[int(rng.integers(4))]}!"), ("attack", 0),
                  ("text", f"ENEMY {enemy} USED {_MOVES[int(rng.integers(len(_MOVES)))]}!"), ("attack", 1)]
    steps += [("throw", None), ("text", f"ALL RIGHT! {enemy} WAS CAUGHT!")]
    return steps


def battle(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    """`count` frames of a battle, one every `stride` 60 Hz frames: (shades, text box or None)."""
    enemy_name, own_name = (str(n) for n in rng.choice(_MONS, size=2, replace=False))
    enemy_pic, own_pic = monster(rng), monster(rng)[:, ::-1]
    hp = [1.0, 1.0]
    level = (int(rng.integers(2, 40)), int(rng.integers(5, 60)))
    produced = 0
    tick = 0
    for kind, arg in _script(rng, enemy_name, own_name):
        slide = 160 if kind == "slide" else 0
        lines = wrap_text(str(arg)) if kind == "text" else []
        shown, cursor, effect = 0, 0, 0
        speed = int(rng.integers(1, 3))
        duration = {"slide": 0, "text": 0, "menu": int(rng.integers(6, 14)), "attack": int(rng.integers(6, 12)),
                    "throw": int(rng.integers(8, 14))}[kind]
        while produced < count:
            for _ in range(stride):
                tick += 1
                slide = max(slide - 2, 0)
                shown += speed if tick % 2 == 0 else 0
                effect += 1
                if kind == "attack":
                    side = int(arg)  # type: ignore[call-overload]
                    hp[side] = max(hp[side] - 0.004 * rng.random(), 0.05)
            background = _hud(enemy_name, own_name, level, (hp[0], hp[1]))
            visible = not (kind == "attack" and int(arg) == 0 and (effect // 4) % 2 == 1)  # type: ignore[call-overload]
            if visible:
                background[_ENEMY_TOP : _ENEMY_TOP + MON_SIZE, _ENEMY_LEFT : _ENEMY_LEFT + MON_SIZE] = enemy_pic
            background[_OWN_TOP : _OWN_TOP + MON_SIZE, _OWN_LEFT : _OWN_LEFT + MON_SIZE] = own_pic
            screen = Screen(background)
            if slide:
                # The enemy's half slides in from the left, the player's from the right.
                line_scx = np.zeros(SCREEN_H, dtype=np.int64)
                line_scx[: _OWN_TOP] = slide
                line_scx[_OWN_TOP : DIALOG_TOP_ROW * TILE] = -slide
                screen.line_scx = line_scx
            sprites: list[Sprite] = []
            if kind == "attack":
                if int(arg) == 1:  # type: ignore[call-overload]
                    screen.scx = int(rng.integers(-3, 4)) % MAP_SIZE  # the screen shakes
                    screen.scy = int(rng.integers(-2, 3)) % MAP_SIZE
                if effect % 9 < 2:
                    screen.bgp = INVERTED
                for k in range(int(rng.integers(1, 5))):
                    y = int(_ENEMY_TOP + 8 + (effect * 3 + 17 * k) % 48)
                    x = int(_ENEMY_LEFT - 20 + (effect * 5 + 29 * k) % 64)
                    sprites.append(Sprite(y, x, np.vstack([_STAR, np.zeros((8, 8), np.uint8)]),
                                          flip_x=bool(k % 2)))
            if kind == "throw":
                t = min(effect / (duration * stride), 1.0)
                y = int(80 - 70 * t + 60 * t * t)
                x = int(24 + 100 * t)
                sprites.append(Sprite(y, x, np.vstack([ball(), np.zeros((8, 8), np.uint8)])))
            screen.sprites = sprites
            if kind == "menu":
                if rng.random() < 0.4:
                    cursor = (cursor + 1) % 4
                window = _move_menu(arg, cursor)  # type: ignore[arg-type]
            else:
                window = _text_box(lines, shown) if lines else boxes.box(6, 20)
            screen.window, screen.wy, screen.wx = window, DIALOG_TOP_ROW * TILE, 0
            yield render(screen), DIALOG_BOX
            produced += 1
            duration -= 1
            if kind == "slide" and slide == 0:
                break
            if kind == "text" and shown >= sum(map(len, lines)) + 12:
                break
            if kind in ("menu", "attack", "throw") and duration <= 0:
                break
        if produced >= count:
            return
    # The script ran out before `count`: the last screen holds.
    last = render(Screen(_hud(enemy_name, own_name, level, (hp[0], hp[1])), window=_text_box([], 0),
                         wy=DIALOG_TOP_ROW * TILE))
    for _ in range(count - produced):
        yield last, DIALOG_BOX
