"""Scale out: Ray rollout workers and pool scoring, GreeDi facility location, and SFT under ``accelerate launch``.

Single-process stays the default everywhere; these modules import Ray or accelerate only when used.
See docs/scaling.md.
"""

from __future__ import annotations


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (a running cluster, e.g. ``auto`` or ``ray://head:10001``), or start a local
    one with ``num_cpus`` CPUs, unless Ray is already initialised in this process. Here rather than in
    ``ray_rollout``, so that pool scoring and GreeDi do not load the Reflect-RL modules."""
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, configure_logging=False)
    else:
        ray.init(num_cpus=num_cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
