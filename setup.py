"""emotalker-jax: EmoTalker (emotion-editable talking faces, latent diffusion) in JAX/Flax."""

from setuptools import find_packages, setup

INSTALL_REQUIRES = [
  "jax>=0.10.2,<0.11",
  "jaxlib>=0.10.2,<0.11",
  "flax>=0.12.8,<0.13",
  "optax>=0.2.8,<0.3",
  "orbax-checkpoint>=0.12.8,<0.13",
  "grain>=0.2.18,<0.3",
  "tensorflow-datasets>=4.9.10,<4.10",
  "ml-collections>=1.1.0,<1.2",
  "transformers>=5.0,<6",  # tokenizers only at run time; no Flax classes exist in v5
  "tokenizers>=0.22,<0.24",
  "safetensors>=0.6,<0.9",
  "einops>=0.8,<0.9",
  "dm-pix>=0.4.5,<0.5",
  "imageio>=2.37,<3",
  "imageio-ffmpeg>=0.6,<0.9",
  "tqdm>=4.66,<5",
  "numpy>=2.0,<2.5",
  "scipy>=1.14,<2",
  "tensorboardX>=2.6,<3",
  "h5py>=3.11,<4",
  "opencv-python-headless>=4.9,<5",
  # Face detection, 68 landmarks and the identity descriptor; the weights ship in
  # face-recognition-models (emotalker_jax/faces/models.py).
  "dlib-bin>=20,<21",
  "face-recognition-models==0.3.0",
]

# INSTALL_REQUIRES and its dependencies are pinned in requirements/runtime.txt (what pod and
# cluster workers install: `make setup-runtime`); the "test" extra and its dependencies in
# requirements/test.txt (`make setup`, CI). tests/test_launch.py checks the three agree.
EXTRAS = {
  # The PyTorch reference for parity tests and the framework benchmark.
  # Keras (JAX backend) is the independent reference for the Flax port of fer's classifier.
  # ruff: `make lint`.
  "test": [
    "pytest>=8,<10",
    "pytest-xdist>=3,<4",
    "torch==2.13.0",
    "diffusers>=0.40,<0.43",
    "keras>=3.10,<4",
    "ruff>=0.17,<0.18",
  ],
  "tf": ["tensorflow-cpu>=2.18", "tensorboard>=2.18"],
}

setup(
  name="emotalker-jax",
  version="0.1.0",
  description="Emotion-editable talking-face generation with latent diffusion, in JAX/Flax",
  python_requires=">=3.11",
  # configs/ are files loaded by path (`--config configs/tiny.py`), tests/ and launch/ stay in
  # the checkout: only the two code packages are installed.
  packages=find_packages(include=["emotalker_jax*", "input_pipeline*"]),
  package_data={
    "emotalker_jax": ["data/*.json"],
    "emotalker_jax.bench": ["gpu.sh"],
  },
  install_requires=INSTALL_REQUIRES,
  extras_require=EXTRAS,
  entry_points={"console_scripts": ["emotalker=emotalker_jax.cli:main"]},
)
