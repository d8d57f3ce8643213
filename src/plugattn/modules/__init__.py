"""The named modules, one file per paper. Importing this package registers them all."""

from . import (  # noqa: F401
    bam,
    cbam,
    coord,
    danet,
    eca,
    ema,
    fca,
    gather_excite,
    gc,
    non_local,
    scse,
    se,
    seaformer,
    sge,
    shuffle,
    simam,
    sk,
    srm,
    triplet,
)
