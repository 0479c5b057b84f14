"""The data room: datasets for the search and for training, and their augmentation.

May import: `hwnas.space` (a dataset is checked against the space's input), `targets`.
"""
