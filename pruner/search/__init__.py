"""Finding the accuracy-latency front: the search space of per-group widths and per-layer densities (`space`), the
candidates' latency on a device (`latency`), the model-agnostic NSGA-II engine with JCW's anchor survival (`engine`,
`survival`, `pareto`) and its resumable state (`state`), and one run of every method's front (`fronts`, with the
joint method's weight stage in `sensitivity`)."""
