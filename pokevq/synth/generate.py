"""The package's public names at their old address, so `from pokevq.synth.generate import ...` keeps working.

What the frames look like is in the package docstring (`pokevq.synth`); what the writer puts on
disk is in `pokevq.synth.dataset`.
"""

from pokevq.synth import (
    DIALOG_BOX,
    DIALOG_TOP_ROW,
    PALETTES,
    FrameInfo,
    Palette,
    frame_key,
    generate_dataset,
    generate_world,
    load_index,
    palette_for_game,
    random_message,
    render_episode,
    render_episode_indices,
    wrap_text,
)

__all__ = ["DIALOG_BOX", "DIALOG_TOP_ROW", "PALETTES", "FrameInfo", "Palette", "frame_key", "generate_dataset",
           "generate_world", "load_index", "palette_for_game", "random_message", "render_episode",
           "render_episode_indices", "wrap_text"]
