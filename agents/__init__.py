"""What learns: the multi-task actor-critic, its losses, loss weighting and PPO.

``agents`` is driven, it does not drive: it never imports ``training``.
"""
