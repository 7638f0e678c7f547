"""The overworld as the hardware shows it: a scrolling map, walking sprites, text boxes and the menu.

The player walks from tile to tile at 1 pixel per 60 Hz frame (2 on a bike) and the camera
follows to the pixel, so between steps every tile of the map sits off the 8-pixel grid. The map
streams into the 32x32 background map around the camera, as the games do. People walk about as
pairs of 8x16 sprites at any pixel position; dialog appears in the window layer at the bottom;
the start menu is drawn over the map at the right.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

import pokevq.synth.boxes as boxes
from pokevq.gameboy import SCREEN_H, SCREEN_W, TILE, Box
from pokevq.synth.creatures import ball, person
from pokevq.synth.dialog import DIALOG_BOX, DIALOG_TOP_ROW, dialog_schedule
from pokevq.synth.player import Walker
from pokevq.synth.ppu import MAP_SIZE, MAP_TILES, Screen, Sprite, draw_tiles, render, sprites_of
from pokevq.synth.tiles import ATLAS
from pokevq.synth.world import generate_world

PLAYER_Y, PLAYER_X = 60, 64  # where the camera keeps the player on screen
_PLAYER_OBP = (0, 0, 2, 3)  # sprites have 3 colours: the player's light greys share one
_MENU_ITEMS = ("POKEDEX", "POKEMON", "ITEM", "RED", "SAVE", "OPTION", "EXIT")
_STEPS = {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}


def _player_pixels(walker: Walker) -> np.ndarray:
    """The player's 16x16 picture in sprite colours: 0 transparent, the lightest shade as colour 1."""
    shades, opaque = walker.sprite()
    colours = np.array([1, 2, 2, 3], dtype=np.uint8)[shades]
    return np.where(opaque, colours, 0).astype(np.uint8)


class _Person:
    """Someone walking about the map in pixel steps."""

    def __init__(self, rng: np.random.Generator, world_px: tuple[int, int]) -> None:
        self.rng = rng
        self.frames = person(rng)
        self.limit = (world_px[0] - 16, world_px[1] - 16)
        self.y = int(rng.integers(0, self.limit[0])) // TILE * TILE
        self.x = int(rng.integers(0, self.limit[1])) // TILE * TILE
        self.facing = "down"
        self.left = 0  # pixels left in the current step

    def tick(self) -> None:
        if self.left == 0:
            if self.rng.random() < 0.3:
                return
            self.facing = str(self.rng.choice(list(_STEPS)))
            self.left = 16
        dy, dx = _STEPS[self.facing]
        y, x = self.y + dy, self.x + dx
        if 0 <= y <= self.limit[0] and 0 <= x <= self.limit[1]:
            self.y, self.x = y, x
        self.left -= 1

    def sprites(self, cam_y: int, cam_x: int) -> list[Sprite]:
        view = {"up": "up", "down": "down"}.get(self.facing, "side")
        stepping = self.left > 0 and (self.left // 8) % 2 == 1
        pixels = self.frames[f"{view}1" if stepping else view]
        return sprites_of(pixels, self.y - cam_y, self.x - cam_x, flip_x=self.facing == "right")


def _menu(cursor: int) -> np.ndarray:
    pixels = boxes.box(2 * len(_MENU_ITEMS) + 2, 10)
    for i, item in enumerate(_MENU_ITEMS):
        boxes.write(pixels, 2 + 2 * i, 2, item)
    boxes.put(pixels, 2 + 2 * cursor, 1, boxes.CURSOR)
    return pixels


def _menu_schedule(rng: np.random.Generator, dialogs: list, count: int) -> list[int | None]:
    """Per frame, the start menu's cursor row, or None: a short run in some gaps between dialogs."""
    menu: list[int | None] = [None] * count
    start = int(rng.integers(10, 60))
    while start < count:
        length = int(rng.integers(6, 16))
        if all(d is None for d in dialogs[start : start + length]):
            cursor = 0
            for i in range(start, min(start + length, count)):
                menu[i] = cursor
                if rng.random() < 0.5:
                    cursor = (cursor + 1) % len(_MENU_ITEMS)
        start += length + int(rng.integers(40, 120))
    return menu


def overworld(rng: np.random.Generator, count: int, stride: int) -> Iterator[tuple[np.ndarray, Box | None]]:
    """`count` frames of walking about, one every `stride` 60 Hz frames: (shades, text box or None)."""
    world = generate_world(rng, rows=48, cols=56)
    world_px = (world.shape[0] * TILE, world.shape[1] * TILE)
    walker = Walker(world, rng)
    speed = 2 if rng.random() < 0.25 else 1
    pos = [walker.y * TILE, walker.x * TILE]
    people = [_Person(rng, world_px) for _ in range(int(rng.integers(2, 7)))]
    items = [(int(rng.integers(0, world_px[0] - 8)), int(rng.integers(0, world_px[1] - 8)))
             for _ in range(int(rng.integers(1, 4)))]
    dialogs = dialog_schedule(rng, count)
    menus = _menu_schedule(rng, dialogs, count)
    tile_map = np.zeros((MAP_TILES, MAP_TILES), dtype=np.int16)
    tick = int(rng.integers(0, 64))
    for i in range(count):
        for _ in range(stride):
            tick += 1
            for someone in people:
                someone.tick()
            if dialogs[i] is not None or menus[i] is not None:
                walker.stand()
                continue
            target = (walker.y * TILE, walker.x * TILE)
            if tuple(pos) == target:
                walker.step()
                target = (walker.y * TILE, walker.x * TILE)
            pos = [p + int(np.clip(t - p, -speed, speed)) for p, t in zip(pos, target)]
        cam_y = int(np.clip(pos[0] - PLAYER_Y, 0, world_px[0] - SCREEN_H))
        cam_x = int(np.clip(pos[1] - PLAYER_X, 0, world_px[1] - SCREEN_W))
        # Stream the map around the camera into the background map, as the games do.
        ty, tx = cam_y // TILE, cam_x // TILE
        rows = np.arange(ty, min(ty + SCREEN_H // TILE + 1, world.shape[0]))
        cols = np.arange(tx, min(tx + SCREEN_W // TILE + 1, world.shape[1]))
        tile_map[np.ix_(rows % MAP_TILES, cols % MAP_TILES)] = world[np.ix_(rows, cols)]
        phase = (tick // 24) % 2
        background = draw_tiles(tile_map, ATLAS.tiles[phase]).copy()
        scy, scx = cam_y % MAP_SIZE, cam_x % MAP_SIZE
        sprites = sprites_of(_player_pixels(walker), pos[0] - cam_y, pos[1] - cam_x, palette=_PLAYER_OBP)
        for someone in people:
            sprites += someone.sprites(cam_y, cam_x)
        sprites += [Sprite(y - cam_y, x - cam_x, np.vstack([ball(), np.zeros((8, 8), np.uint8)])) for y, x in items]
        screen = Screen(background, scx=scx, scy=scy, sprites=sprites)
        box: Box | None = None
        if dialogs[i] is not None:
            screen.window = draw_tiles(dialogs[i], ATLAS.tiles[phase])
            screen.wy, screen.wx = DIALOG_TOP_ROW * TILE, 0
            box = DIALOG_BOX
        elif menus[i] is not None:
            menu = _menu(menus[i])
            # The menu is drawn into the map under the screen's top right, where the camera stands still.
            top, left = scy, (scx + SCREEN_W - menu.shape[1]) % MAP_SIZE
            rows_px = (top + np.arange(menu.shape[0])) % MAP_SIZE
            cols_px = (left + np.arange(menu.shape[1])) % MAP_SIZE
            background[np.ix_(rows_px, cols_px)] = menu
            box = (0, SCREEN_W - menu.shape[1], menu.shape[0], SCREEN_W)
        yield render(screen), box
