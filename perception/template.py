"""The aligned-crop template: where the 5 landmarks sit in a 224 x 224 aligned face crop.

Deep3DFaceRecon aligns photos by fitting its 5 standard 3D landmarks (eye centres, nose tip, mouth
corners; model units) to detected ones at 102 pixels per model unit, then crops 224 x 224 around the
fitted centre. A standard landmark (X, Y) therefore sits at ``112 + 102 * (X, -Y)`` in the crop. That
is the template both alignment (`data.align`) and the identity nets' framing (`perception.identity`)
use; this module is its one source of truth.

Units: pixels, x right, y down, pixel-index units (the centre of ``image[i, j]`` is x=j, y=i).
Order: left eye, right eye, nose tip, mouth left, mouth right (image-left/right, MTCNN's order).
"""
from __future__ import annotations

import numpy as np

ALIGNED_CROP_SIZE = 224

# Deep3D's standard 5 landmarks (x, y) in model units, and its pixels per model unit at 224.
DEEP3D_STANDARD_LANDMARKS5 = np.array([
    [-0.31148657, 0.29036078],   # left eye centre
    [0.30979887, 0.28972036],    # right eye centre
    [0.00325350, -0.04617932],   # nose tip
    [-0.25216928, -0.38133916],  # mouth left corner
    [0.24846620, -0.38128236],   # mouth right corner
])
DEEP3D_STANDARD_LANDMARKS5.setflags(write=False)
DEEP3D_PIXELS_PER_UNIT = 102.0

# (5, 2) pixel positions of the 5 landmarks in an ALIGNED_CROP_SIZE crop.
TEMPLATE_LANDMARKS5 = ALIGNED_CROP_SIZE / 2.0 + DEEP3D_PIXELS_PER_UNIT * DEEP3D_STANDARD_LANDMARKS5 * [1.0, -1.0]
TEMPLATE_LANDMARKS5.setflags(write=False)
