"""adaptive_tts: test-time scaling of diffusion models by searching the sampler's noise."""

from adaptive_tts.nfe import Ledger
from adaptive_tts.sampling import (
    AncestralSampler,
    EDMSampler,
    initial_noise,
    karras_sigmas,
    make_generators,
    make_sampler,
)
from adaptive_tts.types import Knobs, SearchResult, StepInfo

__version__ = "0.1.0"
__all__ = [
    "AncestralSampler",
    "EDMSampler",
    "Knobs",
    "Ledger",
    "SearchResult",
    "StepInfo",
    "initial_noise",
    "karras_sigmas",
    "make_generators",
    "make_sampler",
]
