"""Write the tour's two graph files: Les Miserables co-appearances (networkx's copy of Knuth's
Stanford GraphBase data, 77 characters, 254 weighted edges) and a copy with its lines shuffled
and 5% of its edges removed, so that the true correspondence is the identity of the names.

Run from the repository root: ``.venv/bin/python examples/make_pair.py`` (seeded; the files in
``examples/`` were written by it).
"""

import networkx as nx
import numpy as np

rng = np.random.default_rng(0)
graph = nx.les_miserables_graph()
edges = sorted((u, v, d["weight"]) for u, v, d in graph.edges(data=True))
with open("examples/g1.edgelist", "w") as f:
    f.write("# Les Miserables co-appearances (networkx.les_miserables_graph): name name weight\n")
    f.writelines(f"{u} {v} {w:g}\n" for u, v, w in edges)
kept = [edges[i] for i in rng.permutation(len(edges))[: round(0.95 * len(edges))]]
with open("examples/g2.edgelist", "w") as f:
    f.write("# g1.edgelist with its lines shuffled and 5% of its edges removed\n")
    f.writelines(f"{v} {u} {w:g}\n" if rng.random() < 0.5 else f"{u} {v} {w:g}\n"
                 for u, v, w in kept)
