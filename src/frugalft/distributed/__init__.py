"""Scale out: Ray rollout workers and pool scoring, GreeDi facility location, and SFT under ``accelerate launch``.

Single-process stays the default everywhere; these modules import Ray or accelerate only when used.
See docs/scaling.md.
"""
