"""One µCity play session, the way a player goes through the game, in parts with frame quotas.

An episode boots the game (title, main menu, sometimes the credits), names a new city on the
text-entry screen, generates its map (one to three seeds, water or land), builds a town on it with
time paused (roads, zones, a power plant, power lines, services, in a random order), lets months pass
unseen and looks over the town, opens the pause menu's rooms (budget, minimaps, graphs, city
statistics), and then loads one of the game's four developed scenario cities and looks around it.

Each part has a share of the episode's frames (`PARTS`); what a part leaves unused goes to the last,
so every episode holds exactly the frames asked for. The player: benchmarks/ucity_play.py.
"""

from __future__ import annotations

from collections.abc import Callable

from benchmarks.ucity_play import (
    COAL_PLANT,
    COMMERCIAL,
    DIRECTIONS,
    FIREMEN,
    HOSPITAL,
    INDUSTRIAL,
    MENU_GRAPHS,
    MENU_MAIN_MENU,
    MENU_MINIMAPS,
    PARK_BIG,
    PARK_SMALL,
    POLICE,
    POWER_LINES,
    RESIDENTIAL,
    ROAD,
    SCHOOL,
    Part,
    Player,
    Recorder,
)

PARTS = (  # (name, share of the episode's frames)
    ("title", 0.04), ("menu", 0.03), ("city-name", 0.07), ("map-generation", 0.06), ("building", 0.14),
    ("city", 0.22), ("screens", 0.12), ("scenario", 0.32),
)
BOOT_TICKS = 100
NAME_GRID = (16, 6)  # the text-entry keyboard: 16 columns x 6 rows, wrapping; row 5 is Space and End
MINIMAP_CHOICES, GRAPH_CHOICES = 10, 3


def quotas(frames: int) -> list[Part]:
    """Each part's quota; what rounding leaves over goes to the last part."""
    parts = [Part(name, int(share * frames)) for name, share in PARTS]
    parts[-1].quota += frames - sum(part.quota for part in parts)
    return parts


def play_episode(recorder: Recorder, frames: int, scenario: int | None = None) -> None:
    """Play one session, keeping `frames` frames in all; `recorder.rng` decides everything but, when given,
    which of the four scenario cities (0-3) the session ends in."""
    player = Player(recorder)
    player.scenario = int(recorder.rng.integers(4)) if scenario is None else scenario % 4
    parts = {part.name: part for part in quotas(frames)}
    steps: list[tuple[str, Callable[[Player], None]]] = [
        ("title", _title), ("menu", _menu), ("city-name", _city_name), ("map-generation", _map_generation),
        ("building", _building), ("city", _city), ("screens", _screens), ("scenario", _scenario),
    ]
    for name, step in steps:
        recorder.part = parts[name]
        step(player)
    # Whatever a part left unused: more of the scenario's map.
    leftover = frames - recorder.kept
    recorder.part = Part("scenario", leftover)
    for _ in range(200):
        if recorder.part.full:
            return
        player.roam(recorder.part.quota - recorder.part.kept)
    raise RuntimeError(f"the episode kept {recorder.kept} frames of {frames}")


def _title(p: Player) -> None:
    p.rec.skip(BOOT_TICKS)  # PyBoy's own boot logo, not the game's
    p.wait(240, 600)  # the title screen scrolls over a city and a river


def _menu(p: Player) -> None:
    p.press("start")
    p.rec.scene = "menu"
    p.wait(30, 60)
    if p.rng.random() < 0.4:  # the credits, and back
        p.press("down", 3)
        p.press("a")
        p.rec.scene = "credits"
        p.wait(60, 120)
        p.press("b")
        p.rec.scene = "menu"
        p.wait(30, 60)
        p.press("up", 3)
    p.press("up", 3, gap=(4, 8))
    p.press("down")  # Random Map
    p.wait(10, 30)
    p.press("a")
    p.rec.scene = "city name"
    p.wait(40, 70)


def _city_name(p: Player) -> None:
    """Type a random name of 3-9 characters on the keyboard grid, sometimes fixing a typo, then START."""
    columns, rows = NAME_GRID
    x = y = 0
    length = int(p.rng.integers(3, 10))
    typed = 0
    while typed < length:
        tx, ty = int(p.rng.integers(columns)), int(p.rng.integers(rows - 1))  # not the Space/End row
        dx, dy = (tx - x) % columns, (ty - y) % rows
        p.press("right" if dx <= columns // 2 else "left", dx if dx <= columns // 2 else columns - dx, gap=(5, 12))
        p.press("down" if dy <= rows // 2 else "up", dy if dy <= rows // 2 else rows - dy, gap=(5, 12))
        x, y = tx, ty
        p.wait(4, 16)
        p.press("a")
        typed += 1
        if typed > 1 and p.rng.random() < 0.12:
            p.press("b")
            typed -= 1
    p.wait(20, 40)
    p.press("start")
    p.rec.scene = "map generation"
    p.wait(40, 70)


def _map_generation(p: Player) -> None:
    """Pick a seed with LEFT/RIGHT and water or land with UP/DOWN; draw one to three maps, then START."""
    for _ in range(int(p.rng.integers(1, 4))):
        steps = int(p.rng.integers(1, 7))
        p.press("right" if p.rng.random() < 0.7 else "left", steps, gap=(3, 9))
        if p.rng.random() < 0.5:
            p.press("down")
        p.wait(10, 30)
        p.press("a")
        p.wait(700)  # the map is drawn in 400-550 frames (the screen holds still meanwhile)
        p.wait(30, 90)
    p.press("start")
    p.wait(20, 40)
    p.rec.quiet = True  # the city screen loads
    p.wait(200)
    p.rec.quiet = False
    p.rec.scene = "map"


def _building(p: Player) -> None:
    """Pause time, turn disasters off, then lay out a town: roads, zones, a power plant, lines, services."""
    p.to_watch()
    p.wait(20, 60)
    p.toggle_simulation()
    p.disasters_off()
    plan: list[Callable[[], None]] = [
        lambda: p.draw_line(ROAD, int(p.rng.integers(5, 12))),
        lambda: p.paint(RESIDENTIAL, int(p.rng.integers(2, 5)), int(p.rng.integers(2, 4))),
        lambda: p.paint(COMMERCIAL, int(p.rng.integers(2, 4)), int(p.rng.integers(1, 3))),
        lambda: p.paint(INDUSTRIAL, int(p.rng.integers(2, 4)), int(p.rng.integers(1, 3))),
        lambda: p.draw_line(ROAD, int(p.rng.integers(4, 10))),
        lambda: p.place(COAL_PLANT),
        lambda: p.draw_line(POWER_LINES, int(p.rng.integers(4, 9))),
    ]
    extras = [POLICE, FIREMEN, PARK_SMALL, PARK_BIG, SCHOOL, HOSPITAL]
    for index in p.rng.choice(len(extras), size=2, replace=False):
        plan.append(lambda what=extras[int(index)]: p.place(what, 2 if what == PARK_SMALL else 1))
    for index in p.rng.permutation(len(plan)):  # every town is built, in its own order (the quota sees the start)
        if p.rng.random() < 0.3:  # look elsewhere first
            p.hold(DIRECTIONS[int(p.rng.integers(4))], int(p.rng.integers(10, 40)))
        plan[int(index)]()
    p.toggle_simulation()


def _city(p: Player) -> None:
    """Months pass (unseen), then the player looks over the town."""
    p.away[:] = 0
    for _ in range(int(p.rng.integers(2, 5))):
        p.rec.skip(int(p.rng.integers(1500, 4000)))
        p.to_watch()
        p.roam(max(1, p.rec.part.quota // 4))


def _screens(p: Player) -> None:
    """The pause menu's screens, in a random order, with the simulation paused so that each one opens."""
    p.toggle_simulation()
    visits = [p.budget, lambda: p.browse(MENU_MINIMAPS, MINIMAP_CHOICES), lambda: p.browse(MENU_GRAPHS, GRAPH_CHOICES),
              p.city_stats]
    for index in p.rng.permutation(len(visits)):
        if p.rec.part.full:
            break
        visits[int(index)]()
    p.toggle_simulation()


def _scenario(p: Player) -> None:
    """Back to the main menu, then one of the four developed scenario cities, and a long look around it."""
    p.toggle_simulation()
    p.rec.quiet = True  # the menu's way there was seen before; the main menu loads
    p.pause_menu(MENU_MAIN_MENU)
    p.wait(120, 180)
    p.rec.quiet = False
    p.rec.scene = "menu"
    p.press("up", 3, gap=(4, 8))
    p.press("down", 2)  # Scenario
    p.press("a")
    p.rec.scene = "scenario select"
    p.wait(40, 70)
    p.press("right", p.scenario, gap=(20, 40))
    p.wait(20, 40)
    p.press("a")
    p.wait(20, 40)
    p.rec.quiet = True  # the city screen loads
    p.wait(200)
    p.rec.quiet = False
    p.rec.scene = "map"
    p.away[:] = 0
    p.roam(p.rec.part.quota)
