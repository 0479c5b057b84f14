"""The main job (`hwnas run`): profile, fit, check, search twice, train, export, measure, report.

May import every other room of `hwnas` (not `hwnas.commands`), and the lower layers.
"""
