"""3D-R2N2 (Choy et al., ECCV 2016): the recurrent voxel network and its variants (:mod:`.network`), its
training on the shared engine and its evaluation (:mod:`.train`), prediction from views (:mod:`.predict`),
the published figures it is compared with (:mod:`.report`) and its commands (:mod:`.commands`)."""
