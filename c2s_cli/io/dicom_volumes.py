"""From the instances of one DICOM series to volumes: several instances per slice position (4-D classic series:
DWI, fMRI, multi-echo, dynamics) and Siemens mosaic files (one volume per file)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from c2s_cli.errors import InputError


_VOLUME_KEYS = (
    ("TemporalPositionIdentifier", lambda ds: ds.get("TemporalPositionIdentifier")),
    ("AcquisitionNumber", lambda ds: ds.get("AcquisitionNumber")),
    ("EchoNumbers", lambda ds: ds.get("EchoNumbers")),
    ("DiffusionBValue and gradient", lambda ds: (ds.get((0x0018, 0x9087)).value if (0x0018, 0x9087) in ds else None,
                                                 tuple(ds[0x0018, 0x9089].value) if (0x0018, 0x9089) in ds else None)),
    ("TriggerTime", lambda ds: ds.get("TriggerTime")),
)


def split_volumes(
    path: Path, members: list[tuple[Path, Any]],
) -> tuple[list[list[tuple[Path, Any]]], str | None, list[str]]:
    """Split a series with several instances at each slice position into volumes (4-D: DWI, fMRI, multi-echo,
    dynamics) by the first attribute that gives every volume exactly one instance per position; InstanceNumber order
    is the last resort. One instance per position: one volume. Returns the volumes, what told them apart, and
    warnings (localizers left out of a 4-D series)."""
    need = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
    if not all(all(t in ds for t in need) for _, ds in members):
        return [members], None, []  # _geometry names what is missing
    keys = [(tuple(np.round(np.asarray(ds.ImageOrientationPatient, float), 4)), int(ds.Rows), int(ds.Columns),
             tuple(np.round(np.asarray(ds.PixelSpacing, float), 4))) for _, ds in members]
    dominant = max(set(keys), key=keys.count)
    iop = np.asarray(dominant[0])
    normal = np.cross(iop[:3], iop[3:])
    everything = members
    members = [m for m, k in zip(everything, keys) if k == dominant]
    rest = [m for m, k in zip(everything, keys) if k != dominant]
    if any("LOCALIZER" not in [str(v).upper() for v in ds.get("ImageType", [])] for _, ds in rest):
        return [everything], None, []  # another geometry that is not a localizer: _geometry refuses the mix
    pos = [round(float(np.asarray(ds.ImagePositionPatient, float) @ normal), 2) for _, ds in members]
    counts = {p: pos.count(p) for p in set(pos)}
    n_vols = max(counts.values())
    if n_vols == 1:
        return [everything], None, []  # one volume: _geometry sorts it and handles localizers
    others = len(everything) - len(members)
    dropped = [f"skipped {others} image(s) of another orientation (localizers?) in a 4-D series"] if others else []
    uids = [str(ds.SOPInstanceUID) for _, ds in members]
    if len(set(uids)) != len(uids):
        dup = next(u for u in uids if uids.count(u) > 1)
        names = [p.name for (p, _), u in zip(members, uids) if u == dup]
        raise InputError(f"{path}: {names[0]} and {names[1]} are copies of one instance (same SOPInstanceUID); "
                         "remove the duplicate")
    if len(set(counts.values())) != 1:
        k = next(i for i in range(len(pos)) if counts[pos[i]] > 1)
        twins = [members[i][0].name for i in range(len(pos)) if pos[i] == pos[k]]
        raise InputError(f"{path}: two images at the same slice position ({twins[0]}, {twins[1]}) but not every "
                         "position has as many: duplicated or missing images, not a 4-D series")
    for name, key in _VOLUME_KEYS:
        try:
            keys = [key(ds) for _, ds in members]
        except Exception:  # noqa: BLE001 - a damaged value: try the next attribute
            continue
        if any(k is None or k == (None, None) for k in keys):
            continue
        groups: dict[Any, list[int]] = defaultdict(list)
        for i, k in enumerate(keys):
            groups[k].append(i)
        if len(groups) == n_vols and all(sorted(pos[i] for i in g) == sorted(set(pos)) for g in groups.values()):
            first = {k: _first_instance(members, g) if name.startswith("Diffusion") else 0 for k, g in groups.items()}
            order = sorted(groups, key=lambda k: (first[k], str(type(k)), k))
            return [[members[i] for i in groups[k]] for k in order], name, dropped
    inst = [int(ds.InstanceNumber) if ds.get("InstanceNumber") not in (None, "") else None for _, ds in members]
    if None not in inst and len(set(inst)) == len(inst):  # last resort: the t-th instance at each position
        rank: dict[float, int] = {}
        vols: list[list[tuple[Path, Any]]] = [[] for _ in range(n_vols)]
        for i in sorted(range(len(members)), key=lambda i: inst[i]):  # type: ignore[arg-type,return-value]
            t = rank.get(pos[i], 0)
            rank[pos[i]] = t + 1
            vols[t].append(members[i])
        return vols, "InstanceNumber order", dropped
    k = next(i for i in range(len(pos)) if counts[pos[i]] > 1)
    twins = [members[i][0].name for i in range(len(pos)) if pos[i] == pos[k]]
    raise InputError(f"{path}: {n_vols} images at each slice position (e.g. {twins[0]}, {twins[1]}) and nothing tells "
                     "the volumes apart: it would need TemporalPositionIdentifier, AcquisitionNumber, EchoNumbers, "
                     "the diffusion b-value or InstanceNumber to differ")



def _first_instance(members: list[tuple[Path, Any]], group: list[int]) -> int:
    """The smallest InstanceNumber of a volume's images: a DWI's volumes told apart by b-value and direction go in the
    order they were acquired (as dcm2niix writes them), not sorted by b-value and direction; 0 when some image has
    none (then the b-value and direction order)."""
    try:
        return min(int(members[i][1].InstanceNumber) for i in group)
    except (AttributeError, TypeError, ValueError):
        return 0


def mosaic_layout(members: list[tuple[Path, Any]]) -> Any:
    """The series' mosaic tiling when every instance is a mosaic (else None; a mix is refused)."""
    from c2s_cli.io.mosaic import mosaic_of

    tilings = [mosaic_of(ds) for _, ds in members]
    if all(t is None for t in tilings):
        return None
    if any(t is None for t in tilings) or len(set(tilings)) != 1:
        raise InputError(f"{members[0][0].parent}: the series mixes mosaic and other images (or mosaics of other "
                         "tilings); choose the files of one acquisition")
    return tilings[0]


def read_mosaics(
    members: list[tuple[Path, Any]], mosaic: Any, pixels: Callable[[Path], NDArray[np.float32]],
) -> tuple[list[tuple[Path, Any]], NDArray[np.float64], NDArray[np.float32], dict[str, Any]]:
    """Mosaic files → (X, Y, Z) or (X, Y, Z, T), one volume per file in acquisition order; ``pixels`` reads one
    file's (rows, columns) image in modality units."""
    from c2s_cli.io.mosaic import mosaic_affine, order_volumes, unpack

    members, order = order_volumes(members) if len(members) > 1 else (members, "single file")
    affine = mosaic_affine(members[0][1], mosaic)
    for p, ds in members[1:]:
        if not np.allclose(mosaic_affine(ds, mosaic), affine, atol=1e-3):
            raise InputError(f"{p}: its mosaic geometry differs from {members[0][0].name}; one series, one geometry")
    vols = []
    for p, _ in members:
        image = pixels(p)
        vols.append(unpack(image, mosaic))
    data = vols[0] if len(vols) == 1 else np.stack(vols, axis=-1)
    layout = {"layout": "mosaic", "mosaic": {"slices": mosaic.n, "grid": mosaic.grid}, "volumes": len(vols),
              "volumes_by": order}
    return members, affine, data, layout

