"""Graph matching by projected fixed-point iterations with an adaptive step (Shen, Niu, Zhu).

Maximizes the Koopmans-Beckmann objective ``Z(M) = 1/2 <A, M B M^T> + lam <K, M>`` over
matchings ``M`` by ``M <- M + alpha (P(grad Z(M)) - M)``, for directed graphs too, or minimizes
the quadratic assignment objective of ``scipy.optimize.quadratic_assignment``
(``maximize=False``; QAPLIB instances through :func:`read_qaplib`). The front door is
:func:`match_graphs` (graphs of different sizes through :func:`match_subgraph`, torch tensors
and batches of pairs on their device); the framework is :func:`projected_fixed_point`; the
projections, step rules, objective and scorer, graph I/O and synthetic generators are public
building blocks. Importing this package does not import torch.

Reference: Shen, Niu, Zhu, "Dynamical softassign and adaptive parameter tuning for graph
matching", arXiv:2208.08233 (2022).
"""

from stepsize.matching import generators
from stepsize.matching._cli import cli_match
from stepsize.matching._subgraph import match_subgraph
from stepsize.matching.graphs import Graph, as_adjacency, read_graph, write_correspondence
from stepsize.matching.lawler import LAWLER_AUTO_BETA, FactorizedAffinity, match_lawler
from stepsize.matching.objective import (
    MatchScore,
    assignment_objective,
    edge_correctness,
    gradient,
    matching_accuracy,
    objective,
    score_matching,
)
from stepsize.matching.projections import (
    SinkhornResult,
    adaptive_softassign,
    doubly_stochastic_projection,
    dynamical_softassign,
    hungarian,
    sinkhorn,
    softassign,
    softassign_gap_bound,
    softassign_transition,
)
from stepsize.matching.qaplib import QAPInstance, read_qaplib, read_qaplib_solutions
from stepsize.matching.solver import (
    ADAPTIVE_BETA_MAX,
    INNER_TOL_FACTOR,
    METHODS,
    PROJECTIONS,
    MatchingOptions,
    MatchingResult,
    match_graphs,
    projected_fixed_point,
)
from stepsize.matching.steps import adaptive_step, fixed_step, line_search_coefficients

__all__ = [
    "ADAPTIVE_BETA_MAX",
    "INNER_TOL_FACTOR",
    "LAWLER_AUTO_BETA",
    "METHODS",
    "PROJECTIONS",
    "FactorizedAffinity",
    "Graph",
    "QAPInstance",
    "MatchScore",
    "MatchingOptions",
    "MatchingResult",
    "SinkhornResult",
    "adaptive_softassign",
    "adaptive_step",
    "as_adjacency",
    "assignment_objective",
    "cli_match",
    "doubly_stochastic_projection",
    "dynamical_softassign",
    "edge_correctness",
    "fixed_step",
    "generators",
    "gradient",
    "hungarian",
    "line_search_coefficients",
    "match_graphs",
    "match_lawler",
    "match_subgraph",
    "matching_accuracy",
    "objective",
    "projected_fixed_point",
    "read_graph",
    "read_qaplib",
    "read_qaplib_solutions",
    "score_matching",
    "sinkhorn",
    "softassign",
    "softassign_gap_bound",
    "softassign_transition",
    "write_correspondence",
]
