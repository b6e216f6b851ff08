"""Tiling: I/O lower bounds and traffic-minimising tiles per memory level.

Pure functions over sizes or a `Structure`; results are frozen dataclasses of ints so a
choice can be stored in a fusion group's attrs and replayed. See docs/io_lower_bounds.md.
"""

from codesign.tiling.attention import AttentionTiling, choose_attention_tiles
from codesign.tiling.bounds import attention_lower_bound, compulsory_bound, matmul_lower_bound
from codesign.tiling.generic import (TileChoice, choose_tiles, compulsory_bytes, lower_bound,
                                     target_tiers, tile_levels, traffic, working_set)
from codesign.tiling.matmul import MATMUL_REGIME, MatmulTiling, choose_matmul_tiles

__all__ = ["AttentionTiling", "MATMUL_REGIME", "MatmulTiling", "TileChoice",
           "attention_lower_bound", "choose_attention_tiles", "choose_matmul_tiles",
           "choose_tiles", "compulsory_bound", "compulsory_bytes", "lower_bound",
           "matmul_lower_bound", "target_tiers", "tile_levels", "traffic", "working_set"]
