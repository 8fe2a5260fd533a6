"""The 3D-ReConstNet-style single-view point-cloud network: the network (:mod:`.network`), Chamfer and
approximate EMD losses (:mod:`.losses`), metrics under named conventions (:mod:`.metrics`), training on the
shared engine and evaluation (:mod:`.train`) and its commands (:mod:`.commands`)."""
