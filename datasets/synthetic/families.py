"""The registry of scene families and the per-seed choice of family and trajectory."""

from __future__ import annotations

from collections.abc import Callable

from .cameras import TRAJECTORIES
from .indoor import corridor, room, tabletop
from .outdoor import outdoor
from .random import RandomStream
from .scene import Scene

FAMILIES = ("room", "corridor", "tabletop", "outdoor")
BUILDERS: dict[str, Callable[[RandomStream], Scene]] = {
    "room": room, "corridor": corridor, "tabletop": tabletop, "outdoor": outdoor,
}  # fmt: skip


def resolve_kind(seed: int, family: str | None = None, trajectory: str | None = None) -> tuple[str, str]:
    """(family, trajectory) of clip `seed`: the given ones, or drawn from the seed when None.
    Raises ValueError naming an unknown family / trajectory."""
    if family is not None and family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r} (choose from {', '.join(FAMILIES)})")
    if trajectory is not None and trajectory not in TRAJECTORIES:
        raise ValueError(f"unknown synthetic trajectory {trajectory!r} (choose from {', '.join(TRAJECTORIES)})")
    rs = RandomStream(seed, "kind")
    drawn_family, drawn_trajectory = rs.choice(FAMILIES), rs.choice(TRAJECTORIES)
    return family or drawn_family, trajectory or drawn_trajectory


def make_scene(seed: int, family: str) -> Scene:
    """The scene of clip `seed` in `family` (independent of the trajectory and the clip length)."""
    return BUILDERS[family](RandomStream(seed, f"scene:{family}"))
