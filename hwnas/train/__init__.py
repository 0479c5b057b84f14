"""The training room: the DARTS/H-DAS evaluation recipe (`recipe`) and its loop (`loop`).

May import: `hwnas.space`, `hwnas.nets`, `hwnas.data`, `hwnas.rundir`, `targets`.
"""
