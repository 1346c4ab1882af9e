"""The core of every run, below the file formats and the compute engines: pure tile and grid
geometry, the records the loops pass around, and the two host tile loops.

Modules: :mod:`.tiles` (:class:`~.tiles.Tile`, tiles sized from a memory budget),
:mod:`.frame` (:class:`~.frame.Frame`, one input), :mod:`.records` (per-frame parameters, a
tile's outputs, a run's statistics), :mod:`.grid` (the output grid and the frames' WCS on it),
:mod:`.combine_loop` (read → combine → write, the next tile read while this one combines) and
:mod:`.stack_loop` (resample every frame into the tile, then combine).

Nothing here reads a file format or knows a compute engine: the loops call a pixel source's
``read`` (:class:`skystack.io.contracts.PixelSource`), a backend's ``combine_tile``
(:class:`skystack.backends.base.Backend`) and a sink's ``write_tile``
(:class:`skystack.io.contracts.TileSink`). Layers above import from here, never the reverse
(``tools/import_graph.py``).
"""
