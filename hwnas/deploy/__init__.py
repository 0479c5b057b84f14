"""The deployment room: a trained network exported for a target, measured beside its prediction.

May import: `hwnas.space`, `hwnas.nets`, `hwnas.data`, `hwnas.train`, `hwnas.rundir`,
`predictor`, `profiling`, `targets`.
"""
