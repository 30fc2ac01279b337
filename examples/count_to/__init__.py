"""CountTo: a complete custom environment and teacher for frugalft's Reflect-RL (docs/custom_envs.md)."""
