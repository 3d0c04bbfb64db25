"""The signals behind a fake score, in words a reviewer can check against the images.

The offline detector keeps, with every verdict, the features that moved its score most
(``contrib.<feature>`` in the alert's parts: weight x standardised value, in logit
units; positive pushes towards "fake"). Older verdicts, and other detectors, have only
the per-group sums (``logit.<group>``); those are explained per group.
"""

from __future__ import annotations

from dataclasses import dataclass

# What each feature measures, in plain words. A positive contribution means "this looks
# like a fake" for the head, whatever the sign of the feature itself.
PHRASES: dict[str, str] = {
    # the face crop
    "face.noise": "noise level inside the face",
    "face.sharp": "sharpness inside the face",
    "face.noise_io": "noise inside the face compared with around it",
    "face.sharp_io": "sharpness inside the face compared with around it",
    "face.edge_band": "edges along the face outline (blending seam)",
    "face.chan_corr": "correlation of the colour channels in the face",
    "face.chan_corr_io": "colour-channel correlation inside vs around the face",
    "face.sat_mean": "colour saturation of the skin",
    "face.sat_std": "variation of skin saturation",
    "face.lab_a": "skin redness",
    "face.lab_b": "skin yellowness",
    "face.lum_std": "variation of brightness across the face",
    "face.noise_cv": "unevenness of noise across the face",
    "face.noise_lum": "how noise follows brightness in the face (camera noise does)",
    "face.spec_slope": "fall-off of fine detail in the face (spectrum slope)",
    "face.spec_hf": "amount of fine detail in the face",
    "face.spec_hf_dev": "fine detail in the face compared with a natural photo's",
    "face.spec_peak": "periodic patterns in the face (up-sampling traces)",
    # the whole image
    "image.spec_slope": "fall-off of fine detail in the picture (spectrum slope)",
    "image.spec_hf": "amount of fine detail in the picture",
    "image.spec_hf_dev": "fine detail in the picture compared with a natural photo's",
    "image.spec_peak": "periodic patterns in the picture (up-sampling traces)",
    "image.noise": "noise level of the picture",
    "image.chan_corr": "correlation of the colour channels in the picture",
    "image.face_bg_noise": "noise in the face compared with the rest of the picture",
    "image.face_bg_sharp": "sharpness of the face compared with the rest of the picture",
    "image.face_bg_chan_corr": "colour statistics of the face compared with the background",
    "image.resample_face": "resampling traces in the face region (pasted or scaled)",
    "image.resample": "resampling traces in the picture",
    # compression history
    "jpeg.block": "JPEG block edges",
    "jpeg.dct_zero": "JPEG quantisation (how much detail was compressed away)",
    "jpeg.dct_comb": "traces of an earlier JPEG compression",
    # provenance
    "meta.n_fields": "amount of metadata in the file",
    "meta.camera": "camera details in the metadata",
    "meta.edit_software": "editing software named in the metadata",
    "meta.ai_marker": "an AI generator named in the metadata",
    "meta.c2pa": "a C2PA content-credentials manifest",
    # against the person's authentic reference photos
    "ref.available": "authentic reference photos to compare with",
    "ref.id_sim_max": "likeness to the closest reference photo",
    "ref.id_sim_mean": "likeness to the reference photos on average",
    "ref.id_sim_rel": "likeness to the references compared with how alike they are",
    "ref.sim_inner": "likeness of the inner face (eyes, nose, mouth) to the references",
    "ref.sim_outer": "likeness of hair, ears and jaw to the references",
    "ref.sim_io_gap": "inner face more like the person than the head around it (swap sign)",
    "ref.d_noise": "face noise compared with the reference photos",
    "ref.d_sharp": "face sharpness compared with the reference photos",
    "ref.d_noise_io": "noise inside vs around the face, compared with the references",
    "ref.d_sharp_io": "sharpness inside vs around the face, compared with the references",
    "ref.d_chan_corr": "colour-channel correlation compared with the references",
    "ref.d_spec_slope": "fall-off of fine detail compared with the references",
    "ref.d_spec_hf": "fine detail compared with the references",
    "ref.d_spec_hf_dev": "unnatural fine detail compared with the references",
    "ref.d_sat_mean": "skin saturation compared with the references",
    "ref.d_lab_a": "skin redness compared with the references",
    "ref.d_lab_b": "skin yellowness compared with the references",
    "ref.absz_noise": "how unusual the face noise is for this person",
    "ref.absz_sharp": "how unusual the face sharpness is for this person",
    "ref.absz_spec_hf": "how unusual the fine detail is for this person",
    "ref.absz_lab_a": "how unusual the skin redness is for this person",
    "ref.absz_lab_b": "how unusual the skin yellowness is for this person",
    "ref.geom_dist": "face proportions compared with the references",
    "ref.geom_jaw": "jaw shape compared with the references",
    # identity-space evidence of the ArcFace-class embedder (issue 8)
    "ref.id_sim_min": "likeness to the least similar reference photo",
    "ref.id_gap_refs": "likeness to the person compared with how well her own photos match",
    "ref.id_below_refs": "share of references it matches worse than her photos match each other",
    "ref.inner_gap_refs": "inner-face likeness compared with how her own inner faces match",
    "ref.ctx_sim_max": "likeness of the face with hair, ears and neck to the references",
    "ref.ctx_sim_mean": "likeness of the face with its surroundings to the references on average",
    "ref.ctx_gap": "face with surroundings more or less like her than the face alone",
    "ref.ctx_gap_refs": "face-with-surroundings likeness compared with her own photos",
    "id.inner_outer": "inner face and the head around it look like the same person",
    "id.inner_whole": "inner face and whole face look like the same person",
    "id.outer_whole": "head around the face and whole face look like the same person",
    "id.context_whole": "wider view (hair, ears, neck) and face look like the same person",
}

GROUP_PHRASES = {
    "face": "statistics of the face itself",
    "image": "the picture around the face (noise, detail, resampling)",
    "jpeg": "compression history",
    "ref": "comparison with the person's authentic reference photos",
    "meta": "file metadata",
    "clip": "CLIP image features",
}

_MIN_SHOWN = 0.05  # logit units: smaller contributions say nothing


@dataclass(frozen=True)
class Signal:
    name: str  # feature (or group) name
    phrase: str  # what it measures, in words
    contribution: float  # logit units; positive: towards fake
    per_feature: bool  # False: a whole group's sum

    @property
    def direction(self) -> str:
        return "towards fake" if self.contribution > 0 else "towards real"

    @property
    def strength(self) -> str:
        a = abs(self.contribution)
        return "strong" if a >= 1.0 else "moderate" if a >= 0.3 else "weak"

    @property
    def sentence(self) -> str:
        return f"{self.phrase[:1].upper()}{self.phrase[1:]}: {self.strength}, {self.direction}"


def phrase(name: str) -> str:
    """Plain words for a feature name (its name, readable, when unknown)."""
    if name in PHRASES:
        return PHRASES[name]
    group, _, rest = name.partition(".")
    what = rest.replace("_", " ") if rest else name
    return f"{GROUP_PHRASES.get(group, group)}: {what}"


def signals(parts: dict | None, top: int = 5) -> list[Signal]:
    """The largest contributions behind a verdict, strongest first."""
    parts = parts or {}
    per_feature = [
        Signal(k[len("contrib.") :], phrase(k[len("contrib.") :]), float(v), True)
        for k, v in parts.items()
        if k.startswith("contrib.") and isinstance(v, int | float)
    ]
    if per_feature:
        chosen = per_feature
    else:
        chosen = [
            Signal(g, GROUP_PHRASES.get(g, g), float(v), False)
            for k, v in parts.items()
            if k.startswith("logit.")
            and (g := k[len("logit.") :]) != "bias"
            and isinstance(v, int | float)
        ]
    chosen.sort(key=lambda sig: -abs(sig.contribution))
    return [sig for sig in chosen if abs(sig.contribution) >= _MIN_SHOWN][:top]


def provenance_flags(parts: dict | None) -> list[str]:
    """Provenance facts the detector saw (reported beside the score, not in it)."""
    parts = parts or {}
    flags = []
    if parts.get("meta.ai_marker"):
        flags.append("metadata names an AI generator or face-swap tool")
    if parts.get("meta.c2pa"):
        flags.append("has a C2PA content-credentials manifest")
    if parts.get("meta.edit_software"):
        flags.append("metadata names editing software")
    if parts.get("meta.camera"):
        flags.append("metadata has camera details")
    return flags
