"""A seeded player for µCity 1.2 in PyBoy: its buttons, the game's screens, and the frames it keeps.

`Recorder` runs the emulator and samples the screen every few emulator frames (a random 4-8 by
default), dropping a frame equal to the one kept before it and keeping no more than the current part
of the episode's quota. `Player` knows µCity's controls: menus, the build menu, placing buildings on
empty field, walking the cursor over the map, the pause menu's rooms. Every choice comes from the
recorder's random generator, so a seed gives the same inputs and PyBoy, being deterministic, the same
frames. What one episode does: benchmarks/ucity_episode.py. Only numpy is needed here (and a PyBoy).

The game's state is read from two places: the city screen's state byte in work RAM (`GAME_STATE`,
an address of this ROM build: the split pins the ROM's sha256) and the cursor's sprite in OAM.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The city screen's state machine (source/room_game/room_game.inc of µCity 1.2), at this address in v1.2's WRAM.
GAME_STATE = 0xC4BC
WATCH, EDIT, FAST_MOVE, SELECT_BUILDING, PAUSE_MENU, SHOW_MESSAGE = range(6)

# The pause menu's items, top to bottom.
MENU_BUDGET, MENU_BANK, MENU_MINIMAPS, MENU_GRAPHS, MENU_STATS, MENU_OPTIONS, MENU_PAUSE = range(7)
MENU_SAVE, MENU_MAIN_MENU = 7, 8

# Build menu: (group, item) of what the player builds; (width, height) in tiles of those larger than one.
ROAD, POWER_LINES = (2, 0), (2, 2)
RESIDENTIAL, COMMERCIAL, INDUSTRIAL = (1, 0), (1, 1), (1, 2)
POLICE, FIREMEN, HOSPITAL = (3, 0), (3, 1), (3, 2)
PARK_SMALL, PARK_BIG = (4, 0), (4, 1)
SCHOOL = (5, 0)
COAL_PLANT = (8, 0)
SIZES = {POLICE: (3, 3), FIREMEN: (3, 3), HOSPITAL: (3, 3), PARK_BIG: (3, 3), SCHOOL: (3, 2), COAL_PLANT: (4, 4)}

# An empty field tile on the map: white with light green dots (µCity's palette as PyBoy shows it).
FIELD_COLOURS = ((248, 248, 248), (80, 248, 80))
SCREEN_TILES = (20, 18)  # columns, rows
CURSOR_MARGIN = 4  # the map scrolls when the cursor comes this close (in tiles) to the screen's edge
DIRECTIONS = ("up", "down", "left", "right")
STEPS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}
ROAM_RANGE = 120  # frames of holding a direction (about 30 tiles) at which the player mostly heads back


@dataclass
class Part:
    """One part of an episode and how many frames it may keep."""

    name: str
    quota: int
    kept: int = 0

    @property
    def full(self) -> bool:
        return self.kept >= self.quota


@dataclass
class Recorder:
    """Runs the emulator and keeps a frame every `every` ticks (inclusive range), skipping repeats."""

    pyboy: Any
    rng: np.random.Generator
    keep: Callable[[np.ndarray, str, str], None]  # (RGB frame, part name, scene)
    every: tuple[int, int] = (4, 8)
    part: Part = field(default_factory=lambda: Part("start", 0))
    kept: int = 0
    quiet: bool = False  # time passes, nothing is kept (chores between what the part is about)
    scene: str = "title"  # what the screen shows, as the script knows it: title, menu, map, pause menu, room, ...
    _countdown: int = 0
    _last: bytes = b""

    def __post_init__(self) -> None:
        self._countdown = self._next_gap()

    def _next_gap(self) -> int:
        return int(self.rng.integers(self.every[0], self.every[1] + 1))

    def tick(self, ticks: int) -> None:
        """Advance `ticks` emulator frames, sampling the screen on the way (rendering only the sampled frames)."""
        while ticks > 0:
            step = min(ticks, self._countdown)
            ticks -= step
            self._countdown -= step
            if self._countdown:
                self.pyboy.tick(step, False)
                continue
            self.pyboy.tick(step, True)
            self._countdown = self._next_gap()
            self._sample()

    def skip(self, ticks: int) -> None:
        """Let time pass unseen (the player looks away): no frames kept."""
        self.pyboy.tick(ticks, False)

    def _sample(self) -> None:
        if self.part.full or self.quiet:
            return
        frame = np.ascontiguousarray(self.pyboy.screen.ndarray[:, :, :3])
        data = frame.tobytes()
        if data == self._last:
            return
        self._last = data
        self.part.kept += 1
        self.kept += 1
        self.keep(frame, self.part.name, self.scene)

    def screen(self) -> np.ndarray:
        """The screen now (rendered on the last tick only when that tick was sampled: render one to be sure)."""
        self.pyboy.tick(1, True)
        self._countdown = max(1, self._countdown - 1)
        return np.ascontiguousarray(self.pyboy.screen.ndarray[:, :, :3])


class Player:
    """Buttons and screens of µCity, driven by one episode's random generator."""

    def __init__(self, recorder: Recorder) -> None:
        self.rec = recorder
        self.pb = recorder.pyboy
        self.rng = recorder.rng
        self.scenario = 0  # which scenario city the session ends in
        self.away = np.zeros(2)  # how far the player has roamed (frames held right and down): pulls them back

    # -- buttons ---------------------------------------------------------------------------------------------
    def wait(self, low: int, high: int | None = None) -> None:
        self.rec.tick(low if high is None else int(self.rng.integers(low, high + 1)))

    def press(self, button: str, times: int = 1, gap: tuple[int, int] = (6, 14)) -> None:
        """Tap a button like a person: held 2-4 frames, then a pause."""
        for _ in range(times):
            self.pb.button_press(button)
            self.rec.tick(int(self.rng.integers(2, 5)))
            self.pb.button_release(button)
            self.wait(*gap)

    def hold(self, button: str, ticks: int, *, also: str | None = None) -> None:
        """Hold `button` (and `also`, pressed first) for `ticks` frames."""
        if also:
            self.pb.button_press(also)
            self.rec.tick(2)
        self.pb.button_press(button)
        self.rec.tick(ticks)
        self.pb.button_release(button)
        if also:
            self.rec.tick(2)
            self.pb.button_release(also)
        self.rec.tick(2)

    @property
    def state(self) -> int:
        """The city screen's state (WATCH, EDIT, ...); meaningless outside the city screen."""
        return int(self.pb.memory[GAME_STATE])

    def changed_screen(self, before: np.ndarray, share: float = 0.03) -> bool:
        return float((self.rec.screen() != before).any(axis=2).mean()) >= share

    def until_changed(self, button: str, tries: int = 6, wait: int = 60) -> bool:
        """Press `button` until the screen changes (a room refuses to open while the simulation is busy)."""
        before = self.rec.screen()
        for _ in range(tries):
            self.press(button)
            self.wait(wait)
            if self.changed_screen(before):
                return True
            self.wait(wait)
        return False

    # -- the city screen ---------------------------------------------------------------------------------------
    def to_watch(self) -> None:
        """Back to watching the map from whatever the city screen shows (a message, a menu, edit mode)."""
        for _ in range(8):
            state = self.state
            if state == WATCH:
                self.rec.scene = "map"
                return
            if state == PAUSE_MENU:
                self.press("start")
            else:  # a message box closes on B's release; edit and build menus close on B
                self.press("b")
            self.wait(10)

    def cursor(self) -> tuple[int, int]:
        """The cursor's top-left corner in screen tiles (column, row): OAM sprite 0."""
        sprite = self.pb.get_sprite(0)
        return (sprite.x + 4) // 8, (sprite.y + 4) // 8

    def move_cursor(self, column: int, row: int) -> None:
        """Tap the pad until the cursor's corner is at (column, row) on screen, within a few taps."""
        for _ in range(3):
            x, y = self.cursor()
            if (x, y) == (column, row):
                return
            if x != column:
                self.press("right" if column > x else "left", abs(column - x), gap=(3, 8))
            if y != row:
                self.press("down" if row > y else "up", abs(row - y), gap=(3, 8))

    def pause_menu(self, item: int) -> bool:
        """Open the pause menu and choose `item`; True when the screen changed (a room opened)."""
        self.to_watch()
        self.press("start")
        self.rec.scene = "pause menu"
        self.wait(10, 30)
        self.press("up", 8, gap=(2, 4))
        self.press("down", item, gap=(4, 10))
        self.wait(5, 20)
        if item == MENU_PAUSE:
            self.press("a")
            return True
        opened = self.until_changed("a")
        if opened:
            self.rec.scene = "room"
        return opened

    def leave_room(self) -> None:
        """B: from a room (budget, minimaps, ...) back to the pause menu."""
        self.press("b")
        self.rec.scene = "pause menu"
        self.wait(40, 60)

    def toggle_simulation(self) -> None:
        """Pause or unpause time (a chore: not recorded)."""
        self.rec.quiet = True
        self.pause_menu(MENU_PAUSE)
        self.wait(30, 60)
        self.press("b")
        self.rec.scene = "map"
        self.wait(60, 120)  # a simulation step under way ends before the next room opens
        self.rec.quiet = False

    def select_building(self, what: tuple[int, int]) -> bool:
        """Open the build menu and pick `what`: True once in edit mode with that building."""
        self.to_watch()
        for _ in range(4):
            self.press("select")
            self.wait(10, 20)
            if self.state == SELECT_BUILDING:
                break
            self.to_watch()
            self.wait(30, 60)
        else:
            return False
        group, item = what
        self.press("up", 10, gap=(2, 3))
        self.press("down", group, gap=(4, 9))
        self.press("right", item, gap=(4, 9))
        self.wait(5, 15)
        self.press("a")
        self.wait(10, 20)
        return self.state == EDIT

    def field_tiles(self) -> np.ndarray:
        """(rows, columns) bool: screen tiles that show an empty field (where a building can go)."""
        screen = self.rec.screen()
        field_pixel = np.zeros(screen.shape[:2], dtype=bool)
        for colour in FIELD_COLOURS:
            field_pixel |= (screen == colour).all(axis=2)
        tiles = field_pixel.reshape(SCREEN_TILES[1], 8, SCREEN_TILES[0], 8).all(axis=(1, 3))
        tiles[:, :CURSOR_MARGIN] = tiles[:, -CURSOR_MARGIN:] = False  # no scrolling while building
        tiles[:CURSOR_MARGIN, :] = tiles[-CURSOR_MARGIN:, :] = False
        return tiles

    def free_spot(self, width: int, height: int) -> tuple[int, int] | None:
        """A random (column, row) whose width x height tiles are all field, away from the screen's edges."""
        tiles = self.field_tiles()
        rows, columns = tiles.shape
        spots = [(c, r) for r in range(rows - height + 1) for c in range(columns - width + 1)
                 if tiles[r:r + height, c:c + width].all()]
        if not spots:
            return None
        return spots[int(self.rng.integers(len(spots)))]

    def place(self, what: tuple[int, int], count: int = 1) -> None:
        """Place `count` buildings of one kind, each on free field on screen."""
        if self.select_building(what):
            width, height = SIZES.get(what, (1, 1))
            for _ in range(count):
                spot = self.free_spot(width, height)
                if spot is None:
                    break
                self.move_cursor(*spot)
                self.wait(4, 12)
                self.press("a")
                self.wait(10, 30)
        self.to_watch()

    def paint(self, what: tuple[int, int], width: int, height: int) -> None:
        """Zone a width x height block: A held while the cursor snakes over it."""
        if self.select_building(what):
            spot = self.free_spot(width, height)
            if spot is not None:
                self.move_cursor(*spot)
                self.pb.button_press("a")
                self.rec.tick(3)
                for row in range(height):
                    self.press("right" if row % 2 == 0 else "left", width - 1, gap=(3, 7))
                    if row < height - 1:
                        self.press("down", gap=(3, 7))
                self.pb.button_release("a")
                self.wait(10, 20)
        self.to_watch()

    def draw_line(self, what: tuple[int, int], length: int) -> None:
        """A road or power line: from a free tile, hold A and walk in one direction, then turn."""
        if self.select_building(what):
            spot = self.free_spot(1, 1)
            if spot is not None:
                self.move_cursor(*spot)
            first = DIRECTIONS[int(self.rng.integers(4))]
            turn = ("left", "right") if first in ("up", "down") else ("up", "down")
            self.pb.button_press("a")
            self.rec.tick(3)
            self.press(first, length, gap=(3, 7))
            self.press(turn[int(self.rng.integers(2))], int(self.rng.integers(1, max(2, length // 2))), gap=(3, 7))
            self.pb.button_release("a")
            self.wait(10, 20)
        self.to_watch()

    def heading(self) -> str:
        """A direction to look in: random near home, more and more often back home the further away."""
        far = float(np.abs(self.away).max())
        if self.rng.random() < min(0.8, far / ROAM_RANGE):
            axis = int(np.abs(self.away).argmax())
            return (("left", "right"), ("up", "down"))[axis][int(self.away[axis] < 0)]
        return DIRECTIONS[int(self.rng.integers(4))]

    def walk(self, direction: str, ticks: int, also: str | None = None) -> None:
        """Hold a direction (with B: fast, or a second direction: diagonal), keeping count of the way home."""
        fast = 2 if also == "b" else 1
        for button in (direction, also):
            if button in STEPS:
                self.away += np.array(STEPS[button]) * ticks * fast
        self.hold(direction, ticks, also=also)

    def roam(self, frames: int) -> None:
        """Look around the map the way a player does: cursor walks, fast moves (B), tile info (A), not too far."""
        target = self.rec.part.kept + frames
        while self.rec.part.kept < target and not self.rec.part.full:
            self.to_watch()
            roll = self.rng.random()
            direction = self.heading()
            if roll < 0.55:  # walk the cursor, which scrolls the map at the screen's edges
                self.walk(direction, int(self.rng.integers(10, 70)))
            elif roll < 0.7:  # a diagonal
                other = ("left", "right")[int(self.rng.integers(2))] if direction in ("up", "down") \
                    else ("up", "down")[int(self.rng.integers(2))]
                self.walk(direction, int(self.rng.integers(10, 50)), also=other)
            elif roll < 0.82:  # B held: the cursor hides and the map moves fast
                self.walk(direction, int(self.rng.integers(10, 50)), also="b")
            elif roll < 0.92:  # single steps
                self.press(direction, int(self.rng.integers(1, 5)))
            else:  # what is under the cursor: a message box, closed again
                self.press("a")
                self.wait(20, 60)
                self.press("b")
            self.wait(2, 20)

    # -- rooms outside the city --------------------------------------------------------------------------------
    def budget(self) -> None:
        if self.pause_menu(MENU_BUDGET):
            self.wait(20, 40)
            for _ in range(int(self.rng.integers(1, 4))):
                self.press(("left", "right")[int(self.rng.integers(2))])  # the tax rate
            self.wait(20, 40)
            self.leave_room()

    def browse(self, item: int, choices: int) -> None:
        """Minimaps or graphs: A opens the chooser, RIGHT/LEFT pick, A shows; a few of them, then B."""
        if not self.pause_menu(item):
            return
        self.wait(40, 80)
        selection = 0
        for _ in range(int(self.rng.integers(2, 4))):
            self.press("a")
            self.wait(10, 20)
            pick = int(self.rng.integers(choices))
            self.press("right" if pick > selection else "left", abs(pick - selection), gap=(6, 12))
            selection = pick
            self.press("a")
            self.wait(60, 120)
        self.leave_room()

    def city_stats(self) -> None:
        if self.pause_menu(MENU_STATS):
            self.wait(30, 60)
            self.press("right")
            self.wait(30, 60)
            self.leave_room()

    def disasters_off(self) -> None:
        """Options: disasters off, so that a fire does not burn the new town down while nobody watches (a chore)."""
        self.rec.quiet = True
        if self.pause_menu(MENU_OPTIONS):
            self.wait(20, 40)
            self.press("a")  # the first option toggles disasters
            self.wait(20, 40)
            self.leave_room()
        self.rec.quiet = False
