"""Cost model: FLOPs, bytes per tier and predicted time of kernels on a target."""

from codesign.cost.model import (CostModel, GraphCost, KernelCost, fast_tier, home_tier,
                                 peak_flops)

__all__ = ["CostModel", "GraphCost", "KernelCost", "fast_tier", "home_tier", "peak_flops"]
