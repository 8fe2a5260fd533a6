"""3D reconstruction models (3D-R2N2, point clouds) and their training, evaluation and prediction.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` unless a wait policy was chosen: torch's OpenMP
runtime reads it once, when ``import torch`` loads it, so it has to be set before (see
:mod:`voxforge.models.threads`). The ``pipeline`` command imports this package before torch.
"""

from voxforge.models.threads import quiet_openmp_waits

quiet_openmp_waits()
