"""emotalker-jax: EmoTalker (emotion-editable talking-face generation) in JAX/Flax."""

from emotalker_jax.emotions import EMOTIONS, NUM_EMOTIONS

__version__ = "0.1.0"
__all__ = ["EMOTIONS", "NUM_EMOTIONS", "__version__"]
