"""The sizes of the synthetic_talk benchmark (docs/SYNTHETIC.md), importable without TFDS so
that command-line parsers can offer them: {name: SyntheticTalkConfig fields}."""

SIZES = {
  "tiny": dict(image_size=32, num_identities=16, num_train_identities=12, frames_per_clip=25),
  # `make demo`: tiny's 32x32 frames with enough identities for a generator to learn
  # identity-independent expression (12 train identities are memorised, not generalised);
  # 14 of the 21 emotion pairs per identity (38 clips, 37% mixtures). Measured, worse: all
  # 21 pairs with intensities down to 1/3, and 14 pairs at {1/3, 2/3, 1}
  # (docs/RESULTS.md, "Model variants on the demo set").
  "demo": dict(
    image_size=32, num_identities=136, num_train_identities=128, frames_per_clip=25, num_mixtures=14
  ),
  "small": dict(image_size=64, num_identities=64, num_train_identities=52, frames_per_clip=40),
  "full": dict(image_size=128, num_identities=160, num_train_identities=128, frames_per_clip=50),
}
