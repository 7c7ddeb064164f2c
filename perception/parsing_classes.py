"""Class ids of the face-parsing labels (one source of truth; light enough for data/ to import)."""

BACKGROUND = 0
SKIN = 1        # face skin the photometric loss compares
OCCLUDER = 2    # anything in front of the face
CLASS_NAMES: tuple[str, ...] = ("background", "skin", "occluder")  # indexed by class id
NUM_CLASSES = len(CLASS_NAMES)
IGNORE_INDEX = -1
