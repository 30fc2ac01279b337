"""frugalft: fine-tune language models frugally.

Two methods, one toolkit:
- label-efficient SFT by experimental design (``frugalft.design``, ``frugalft.sft``);
- Reflect-RL, online RL of an LM agent with a frozen reflection model (``frugalft.reflect``, ``frugalft.envs``).
"""

__version__ = "0.1.0"
