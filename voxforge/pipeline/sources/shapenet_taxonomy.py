"""ShapeNetCore's 55 synsets (WordNet ids) with one short name each, plus common synonyms.

The 13 classes of 3D-R2N2 are marked; their names in Pix2Vox's ``ShapeNet.json`` (e.g. "aeroplane",
"display", "speaker", "watercraft") are accepted as synonyms.
"""

from __future__ import annotations

SYNSET_TO_NAME: dict[str, str] = {
    "02691156": "airplane", "02747177": "trash_bin", "02773838": "bag", "02801938": "basket",
    "02808440": "bathtub", "02818832": "bed", "02828884": "bench", "02843684": "birdhouse",
    "02871439": "bookshelf", "02876657": "bottle", "02880940": "bowl", "02924116": "bus",
    "02933112": "cabinet", "02942699": "camera", "02946921": "can", "02954340": "cap",
    "02958343": "car", "02992529": "cellphone", "03001627": "chair", "03046257": "clock",
    "03085013": "keyboard", "03207941": "dishwasher", "03211117": "display", "03261776": "earphone",
    "03325088": "faucet", "03337140": "file_cabinet", "03467517": "guitar", "03513137": "helmet",
    "03593526": "jar", "03624134": "knife", "03636649": "lamp", "03642806": "laptop",
    "03691459": "speaker", "03710193": "mailbox", "03759954": "microphone", "03761084": "microwave",
    "03790512": "motorcycle", "03797390": "mug", "03928116": "piano", "03938244": "pillow",
    "03948459": "pistol", "03991062": "pot", "04004475": "printer", "04074963": "remote_control",
    "04090263": "rifle", "04099429": "rocket", "04225987": "skateboard", "04256520": "sofa",
    "04330267": "stove", "04379243": "table", "04401088": "telephone", "04460130": "tower",
    "04468005": "train", "04530566": "watercraft", "04554684": "washer",
}

R2N2_SYNSETS = (
    "02691156", "02828884", "02933112", "02958343", "03001627", "03211117", "03636649",
    "03691459", "04090263", "04256520", "04379243", "04401088", "04530566",
)

SYNONYMS: dict[str, str] = {
    "aeroplane": "airplane", "plane": "airplane", "ashcan": "trash_bin", "trash_can": "trash_bin",
    "garbage_bin": "trash_bin", "bookcase": "bookshelf", "autobus": "bus", "automobile": "car",
    "cellular_telephone": "cellphone", "mobile_phone": "cellphone", "phone": "telephone",
    "monitor": "display", "tv": "display", "screen": "display", "loudspeaker": "speaker",
    "headphone": "earphone", "tap": "faucet", "filing_cabinet": "file_cabinet", "flowerpot": "pot",
    "vessel": "watercraft", "boat": "watercraft", "ship": "watercraft", "couch": "sofa",
    "motorbike": "motorcycle", "gun": "pistol", "handgun": "pistol", "remote": "remote_control",
    "cup": "mug", "washing_machine": "washer", "microwave_oven": "microwave", "desk": "table",
}

NAME_TO_SYNSET: dict[str, str] = {name: synset for synset, name in SYNSET_TO_NAME.items()}


def category_name(synset_id: str) -> str:
    """Short name of a synset id; unknown ids are kept as they are (a user's own synsets)."""
    return SYNSET_TO_NAME.get(synset_id, synset_id)


def shapenet_aliases(names: set[str] | list[str]) -> dict[str, str]:
    """Synonyms and synset ids accepted for the given category names."""
    present = set(names)
    aliases = {syn: name for syn, name in SYNONYMS.items() if name in present}
    return aliases | {NAME_TO_SYNSET[n]: n for n in present if n in NAME_TO_SYNSET}
