"""Shared test configuration."""

from __future__ import annotations

import torch

# The suite is dominated by many small tensor operations, which run fastest, and with the
# least variance when other processes share the CPU, on one intra-op thread.
torch.set_num_threads(1)
