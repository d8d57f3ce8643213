"""The named modules, one file per paper. Importing this package registers them all."""

from . import cbam, coord, danet, eca, se, seaformer, sk, triplet  # noqa: F401
