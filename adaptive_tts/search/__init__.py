"""Search methods. Each is one function with the same leading arguments::

method(denoiser, sampler, x_T, *, cond, reward, generator, ...) -> SearchResult
"""

from adaptive_tts.search.baselines import best_of_n, naive
from adaptive_tts.search.beam import beam
from adaptive_tts.search.dts import dts
from adaptive_tts.search.eacps import eacps
from adaptive_tts.search.evosearch import evosearch
from adaptive_tts.search.fk import fk_steering
from adaptive_tts.search.mcts import mcts
from adaptive_tts.search.noise_search import eps_greedy, zero_order
from adaptive_tts.search.rollover import rollover
from adaptive_tts.search.threshold import threshold_search

METHODS = {
    "naive": naive,
    "best-of-n": best_of_n,
    "beam": beam,
    "mcts": mcts,
    "zero-order": zero_order,
    "eps-greedy": eps_greedy,
    "eacps": eacps,
    "evosearch": evosearch,
    "fk": fk_steering,
    "rollover": rollover,
    "threshold": threshold_search,
    "dts": dts,
}

__all__ = [
    "METHODS",
    "beam",
    "best_of_n",
    "dts",
    "eacps",
    "eps_greedy",
    "evosearch",
    "fk_steering",
    "mcts",
    "naive",
    "rollover",
    "threshold_search",
    "zero_order",
]
