"""Dialog: random messages, wrapped and typed into the bottom box a few characters per frame."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pokevq.gameboy import SCREEN_H, SCREEN_W, TILE, Box
from pokevq.synth.tiles import TILE_ID, VIEW_COLS, VIEW_ROWS

DIALOG_TOP_ROW = 12  # the box covers tile rows 12..17
DIALOG_BOX: Box = (DIALOG_TOP_ROW * TILE, 0, SCREEN_H, SCREEN_W)  # (top, left, bottom, right), exclusive
_LINE_CHARS = VIEW_COLS - 3  # text in columns 1..17; column 18 holds the arrow

_NAMES = ("PROF.OAK", "MOM", "GARY", "LASS", "YOUNGSTER", "HIKER", "NURSE", "OLD MAN", "BUG CATCHER", "SAILOR")
_PHRASES = (
    "HELLO THERE!",
    "WELCOME TO THE WORLD OF POKEMON!",
    "I LIKE SHORTS! THEY'RE COMFY AND EASY TO WEAR!",
    "WAIT! DON'T GO OUT! IT'S UNSAFE!",
    "WILD POKEMON LIVE IN TALL GRASS.",
    "TECHNOLOGY IS INCREDIBLE!",
    "YOUR POKEMON LOOK TIRED.",
    "LET'S BATTLE!",
    "I'M RAISING POKEMON TOO!",
    "THE SEA IS SO BIG!",
    "DID YOU SEE THAT?",
    "BUG POKEMON EVOLVE QUICKLY.",
    "WE HOPE TO SEE YOU AGAIN!",
    "I'M TOO TIRED TO WALK.",
)
_MONS = ("PIDGEY", "RATTATA", "CATERPIE", "WEEDLE", "ODDISH", "PIKACHU", "SPEAROW", "ZUBAT", "MAGIKARP", "EEVEE",
         "ABRA")
_ITEMS = ("POTION", "POKE BALL", "ANTIDOTE", "ESCAPE ROPE", "TM01", "OAK'S PARCEL", "RARE CANDY", "REPEL")
_MOVES = ("TACKLE", "GROWL", "EMBER", "THUNDERSHOCK", "QUICK ATTACK", "GUST", "STRING SHOT", "SPLASH")
_PLACES = ("PALLET TOWN", "ROUTE 1", "VIRIDIAN CITY", "PEWTER CITY", "ROUTE 22", "CERULEAN CITY")
_SIGNS = ("SHADES OF YOUR JOURNEY AWAIT!", "A BEAUTIFUL CITY!", "NO TRESPASSING!", "BEWARE OF WILD POKEMON!")


def random_message(rng: np.random.Generator) -> str:
    """One line of plausible overworld/battle text, built from small word lists."""

    def pick(words: Sequence[str]) -> str:
        return words[int(rng.integers(len(words)))]

    templates = (
        lambda: f"{pick(_NAMES)}: {pick(_PHRASES)}",
        lambda: f"{pick(_NAMES)}: {pick(_PHRASES)}",
        lambda: f"A WILD {pick(_MONS)} APPEARED!",
        lambda: f"{pick(_NAMES)} WANTS TO FIGHT!",
        lambda: f"GO! {pick(_MONS)}!",
        lambda: f"{pick(_MONS)} USED {pick(_MOVES)}! IT'S SUPER EFFECTIVE!",
        lambda: f"RED GOT {pick(_ITEMS)}!",
        lambda: f"{pick(_MONS)} GREW TO LEVEL {int(rng.integers(2, 60))}!",
        lambda: f"{pick(_PLACES)} - {pick(_SIGNS)}",
        lambda: "THE DOOR IS LOCKED.",
    )
    return templates[int(rng.integers(len(templates)))]()


def wrap_text(text: str, width: int = _LINE_CHARS) -> list[str]:
    """Greedy word wrap to `width` characters; over-long words are split."""
    lines: list[str] = []
    line = ""
    for word in text.split():
        while len(word) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(word[:width])
            word = word[width:]
        if not line:
            line = word
        elif len(line) + 1 + len(word) <= width:
            line = f"{line} {word}"
        else:
            lines.append(line)
            line = word
    if line:
        lines.append(line)
    return lines or [""]


def _box_tiles(lines: Sequence[str], shown: int, arrow: bool) -> np.ndarray:
    """Tile ids of the 6x20 dialog box with the first `shown` characters of `lines` typed."""
    rows, cols = VIEW_ROWS - DIALOG_TOP_ROW, VIEW_COLS
    box = np.full((rows, cols), TILE_ID["box_fill"], dtype=np.int16)
    box[0, :], box[-1, :] = TILE_ID["box_t"], TILE_ID["box_b"]
    box[:, 0], box[:, -1] = TILE_ID["box_l"], TILE_ID["box_r"]
    box[0, 0], box[0, -1] = TILE_ID["box_tl"], TILE_ID["box_tr"]
    box[-1, 0], box[-1, -1] = TILE_ID["box_bl"], TILE_ID["box_br"]
    for line_no, line in enumerate(lines[:2]):
        visible = line[: max(shown, 0)]
        shown -= len(line)
        for i, char in enumerate(visible):
            box[2 + 2 * line_no, 1 + i] = TILE_ID.get(f"glyph_{char}", TILE_ID["glyph_ "])
    if arrow:
        box[4, cols - 2] = TILE_ID["box_arrow"]
    return box


def _dialog_run(rng: np.random.Generator, length: int) -> list[np.ndarray]:
    """Box tiles for `length` frames: text typed a few characters per frame, page by page.

    When a page is complete the ▼ arrow blinks for a few frames before the next
    page, so consecutive dialog frames still differ a little.
    """
    lines = wrap_text(random_message(rng))
    pages = [lines[i : i + 2] for i in range(0, len(lines), 2)]
    speed = int(rng.integers(5, 12))
    page, shown, held = 0, 0, 0
    frames = []
    for _ in range(length):
        total = sum(len(line) for line in pages[page])
        shown = min(total, shown + speed)
        done = shown >= total
        frames.append(_box_tiles(pages[page], shown, arrow=done and held % 2 == 0))
        if done:
            held += 1
            if held >= 3 and page + 1 < len(pages):
                page, shown, held = page + 1, 0, 0
    return frames


def dialog_schedule(rng: np.random.Generator, n_frames: int) -> list[np.ndarray | None]:
    """Per frame, the dialog box tiles or None: runs of 5-20 frames, about a quarter of all frames."""
    schedule: list[np.ndarray | None] = [None] * n_frames
    start = int(rng.integers(5, 40))
    while start < n_frames:
        length = min(int(rng.integers(5, 21)), n_frames - start)
        schedule[start : start + length] = _dialog_run(rng, length)
        start += length + int(rng.integers(15, 61))
    return schedule
