"""The training engine: loop, loss, schedule, checkpoints, logging.

Named `training` rather than `train` so that importing it never shadows the public ``hone.train`` function.
"""
