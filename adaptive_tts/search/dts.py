"""Diffusion tree sampling (arXiv 2506.20701): one tree over denoising states per sample.

Nodes are sampler states ``x_t`` (the root ``x_T`` at depth 0, leaves ``x0`` at depth ``T``).
Each iteration descends from the root by **Boltzmann selection** (child ``c`` with probability
proportional to ``exp(lam V(c))`` among children whose subtree is not exhausted) until a node
with fewer than ``children`` children, expands it with one fresh sampler step and rolls the new
child out to ``x0`` with plain stochastic sampling. Every state of the rollout becomes a node,
so later iterations **reuse earlier rollouts** (they branch off them). The leaf's reward is
backed up the path by the **soft Bellman** backup
``V(node) = (1 / lam) log mean_c exp(lam V(c))`` (a leaf's value is its reward).

Anytime: iterations continue while a sample's NFE budget covers the rollout its descent chose
(a sample stops at the first that it does not; the batch finishes unevenly). ``select="best"``
returns the best leaf found (DTS*), ``"sample"`` a leaf drawn by Boltzmann descent from the
root with the final values (DTS, a sample of ``p(x) exp(lam r(x))`` as the tree grows).

Counted NFEs: ``c * sum_k calls(d_k)``, ``calls(d)`` = a plain trajectory from step ``d``
(:meth:`Sampler.trajectory_calls`), ``d_k`` the depth expanded at iteration ``k`` (``d_1 = 0``),
``c`` NFEs per call; reward calls: one per iteration.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler
from adaptive_tts.search.common import SearchContext, StepCallback, check_positive
from adaptive_tts.search.loop import Rows, StepContext
from adaptive_tts.search.rounds import check_budget, owner_noise, uniform_rows
from adaptive_tts.types import Reward, SearchResult


class Forest:
    """``B`` trees in shared tensors (CPU bookkeeping; states on the search's device).

    Node arrays are ``(B, N)``; ``kids`` ``(B, N, children)`` (-1: none); ``states``
    ``(B, N, *S)``. Node 0 of every tree is its root. The capacity doubles when needed.
    """

    def __init__(self, x_T: Tensor, children: int, depth: int) -> None:
        b = x_T.shape[0]
        self.b, self.m, self.depth_max = b, children, depth
        cap = 64
        self.size = torch.ones(b, dtype=torch.long)
        self.depth = torch.zeros(b, cap, dtype=torch.long)
        self.kids = torch.full((b, cap, children), -1, dtype=torch.long)
        self.n_kids = torch.zeros(b, cap, dtype=torch.long)
        self.value = torch.zeros(b, cap, dtype=torch.float64)
        self.done = torch.zeros(b, cap, dtype=torch.bool)  # subtree exhausted
        self.states = x_T.new_zeros((b, cap, *x_T.shape[1:]))
        self.states[:, 0] = x_T

    def grow(self, need: int) -> None:
        cap = self.depth.shape[1]
        if need <= cap:
            return
        new = max(need, 2 * cap)

        def pad(t: Tensor, fill: float | int | bool) -> Tensor:
            extra = t.new_full((t.shape[0], new - cap, *t.shape[2:]), fill)
            return torch.cat([t, extra], 1)

        self.depth, self.kids = pad(self.depth, 0), pad(self.kids, -1)
        self.n_kids, self.value = pad(self.n_kids, 0), pad(self.value, 0.0)
        self.done, self.states = pad(self.done, False), pad(self.states, 0.0)

    def soft_value(self, samples: Tensor, nodes: Tensor, lam: float) -> Tensor:
        """``(1/lam) log mean exp(lam V(child))`` over each node's children: ``(A,)``."""
        kids = self.kids[samples, nodes]  # (A, m)
        valid = kids >= 0
        v = self.value[samples[:, None], kids.clamp_min(0)]
        z = torch.where(valid, lam * v, -math.inf)
        return (torch.logsumexp(z, 1) - valid.sum(1).double().log()) / lam

    def select(self, samples: Tensor, nodes: Tensor, lam: float, u: Tensor, live: bool) -> Tensor:
        """Boltzmann choice of a child of each node (``u`` ``(A,)`` uniforms); ``live``: only
        children whose subtree is not exhausted. Returns node ids ``(A,)``."""
        kids = self.kids[samples, nodes]
        ok = kids >= 0
        if live:
            ok = ok & ~self.done[samples[:, None], kids.clamp_min(0)]
        v = self.value[samples[:, None], kids.clamp_min(0)]
        z = torch.where(ok, lam * v, -math.inf)
        z = torch.where(ok.any(1, keepdim=True), z, 0.0)  # no choice left: ignored by callers
        p = torch.softmax(z, 1).cumsum(1)
        j = torch.searchsorted(p, u[:, None].double(), right=True)[:, 0]
        j = torch.minimum(j, (ok.cumsum(1) == ok.sum(1, keepdim=True)).long().argmax(1))
        return kids.gather(1, j[:, None])[:, 0]


def dts(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    budget: int | None = None,
    lam: float = 10.0,
    children: int = 2,
    select: Literal["best", "sample"] = "best",
    max_batch: int | None = None,
    callback: StepCallback | None = None,
) -> SearchResult:
    """Diffusion tree sampling over a batch ``x_T`` ``(B, *S)``; each iteration's rollouts of
    all samples that start at the same step share network calls.

    Args:
        budget: NFEs per sample (>= one plain trajectory's; ``None``: 4 trajectories).
        lam: inverse temperature of the soft values and the Boltzmann selection (> 0).
        children: most children per node (>= 2). select: ``"best"`` or ``"sample"``.
        callback: after each iteration, ``{"iteration", "nfe" (B,), "best" (B,)}``.
    Returns:
        :class:`SearchResult`; each trace has per step the number of expansions made there
        and, under ``rollouts``, each iteration's start step and reward.
    """
    if not (isinstance(lam, int | float) and math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a finite number > 0, got {lam!r}")
    check_positive("children", children, 2)
    if select not in ("best", "sample"):
        raise ValueError(f"select must be one of ('best', 'sample'), got {select!r}")
    params: dict[str, Any] = {"budget": budget, "lam": lam, "children": children, "select": select}
    sc = SearchContext("dts", denoiser, sampler, x_T, cond, reward, generator, params, max_batch)
    npc, T, b, shape = sc.ledger.nfe_per_call, sampler.num_steps, sc.b, sc.shape
    cost = [sampler.trajectory_calls(d) * npc for d in range(T)]
    budget = 4 * cost[0] if budget is None else budget
    check_budget("budget", budget, cost[0])
    params["budget"] = budget
    tree = Forest(x_T, children, T)
    best_r = torch.full((b,), -math.inf)
    best_x = torch.zeros_like(x_T)
    leaf_r: dict[tuple[int, int], float] = {}
    rollouts: list[list[dict[str, Any]]] = [[] for _ in range(b)]
    expansions = torch.zeros(b, T, dtype=torch.long)
    active = torch.ones(b, dtype=torch.bool)
    it = 0
    while True:
        # descend every live sample to the node it expands
        samples = torch.nonzero(active & ~tree.done[:, 0]).flatten()
        if len(samples) == 0:
            break
        u = uniform_rows([sc.gens[j] for j in samples.tolist()], T)
        node = torch.zeros(len(samples), dtype=torch.long)
        path = torch.zeros(len(samples), T + 1, dtype=torch.long)
        stop = torch.zeros(len(samples), dtype=torch.bool)
        for t in range(T):
            stop = stop | (tree.n_kids[samples, node] < children)
            nxt = tree.select(samples, node, lam, u[:, t], live=True)
            node = torch.where(stop, node, nxt)
            path[:, t + 1] = node
        depth = tree.depth[samples, node]
        afford = sc.ledger.per_sample[samples] + torch.tensor(cost)[depth] <= budget
        active[samples[~afford]] = False
        samples, node, depth, path = samples[afford], node[afford], depth[afford], path[afford]
        if len(samples) == 0:
            break
        # expand + roll out, one batch per start step; each state becomes a node
        base = tree.size[samples].clone()
        tree.grow(int((base + T - depth).max()))
        finals = torch.zeros(len(samples), *shape, dtype=x_T.dtype, device=x_T.device)
        for d in sorted(set(depth.tolist())):
            grp = torch.nonzero(depth == d).flatten()
            own, dev_own = samples[grp], samples[grp].to(x_T.device)
            start = tree.states[dev_own, node[grp].to(x_T.device)]
            rows = Rows(None if cond is None else cond[dev_own], own)
            counts = torch.bincount(own, minlength=b).tolist()

            def noise(ctx: StepContext, counts: list[int] = counts) -> Tensor:
                return owner_noise(sc.gens, counts, shape, ctx.x)

            def record(
                i: int, x: Tensor, ctx: StepContext | None, off: Tensor = base[grp] - d, o=own
            ) -> None:
                ids = off + i  # the state after step i is the chain node at depth i + 1
                tree.states[o.to(x.device), ids.to(x.device)] = x
                tree.depth[o, ids] = i + 1

            x0, _ = sc.denoise(start, rows, noise, start=d, purpose="rollout", after=record)
            finals[grp.to(x_T.device)] = x0
            expansions[own, d] += 1
        r = sc.score(finals, None if cond is None else cond[samples.to(x_T.device)], samples)
        # link the chains and back up
        n_new = T - depth
        for t in range(T + 1):
            on = (t > depth) & (t <= T)  # chain nodes at depth t
            ids = base + (t - depth - 1)
            s_on, id_on = samples[on], ids[on]
            parent = torch.where(torch.eq(depth + 1, t), node, ids - 1)[on]
            slot = tree.n_kids[s_on, parent]
            tree.kids[s_on, parent, slot] = id_on
            tree.n_kids[s_on, parent] += 1
            path[on, t] = id_on
        leaf = base + n_new - 1
        tree.value[samples, leaf] = r.double()
        tree.done[samples, leaf] = True
        tree.size[samples] = base + n_new
        for t in range(T - 1, -1, -1):
            nd = path[:, t]
            tree.value[samples, nd] = tree.soft_value(samples, nd, lam)
            kids = tree.kids[samples, nd]
            full = tree.n_kids[samples, nd] == children
            all_done = (tree.done[samples[:, None], kids.clamp_min(0)] | (kids < 0)).all(1)
            tree.done[samples, nd] = full & all_done
        better = r > best_r[samples]
        best_r[samples[better]] = r[better]
        best_x[samples[better].to(x_T.device)] = finals[better.to(x_T.device)]
        for s, d, rv, lf in zip(samples.tolist(), depth.tolist(), r.tolist(), leaf.tolist()):
            rollouts[s].append({"start": d, "reward": rv})
            leaf_r[(s, lf)] = rv
        it += 1
        if callback is not None:
            callback({"iteration": it, "nfe": sc.ledger.per_sample.clone(), "best": best_r})
    if select == "sample":
        ar = torch.arange(b)
        u = uniform_rows(sc.gens, T)
        node = torch.zeros(b, dtype=torch.long)
        for t in range(T):
            node = tree.select(ar, node, lam, u[:, t], live=False)
        out_x = tree.states[ar.to(x_T.device), node.to(x_T.device)]
        out_r = torch.tensor([leaf_r[(j, int(node[j]))] for j in range(b)])
    else:
        out_x, out_r = best_x, best_r.float()
    for j, tr in enumerate(sc.traces):
        tr["steps"] = [
            {"i": i, "sigma": sampler.sigma(i), "searchable": sampler.searchable(i),
             "expansions": int(expansions[j, i])}
            for i in range(T)
        ]  # fmt: skip
        tr["rollouts"] = rollouts[j]
        tr["tree_size"] = int(tree.size[j])
    return sc.finish(out_x, out_r.float())
