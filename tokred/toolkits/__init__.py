"""Reducer toolkits: pure tensor maths shared by reducers (no modules, no state).

``merge``: bipartite soft matching, size-weighted merging, token gathers, joining rows.
``cluster``: k-medoids++ and spectral clustering of point sets, as the official CenterCLIP code.
"""
