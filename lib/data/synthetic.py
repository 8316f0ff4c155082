"""Synthetic longitudinal knee-ultrasound frames of the suprapatellar recess, with ground truth.

The paper's clinical data are private, so the project ships a generator whose
frames look like a longitudinal suprapatellar B-mode scan (proximal on the
left, distal on the right, skin at the top):

- skin entry echo; hypoechoic subcutaneous fat with bright septa; the
  quadriceps tendon with its bright parallel fibrils; under it the muscle
  (proximally) and the echogenic suprapatellar fat pad (distally); the
  **recess**; the echogenic prefemoral fat pad; the bright femoral cortex with
  an acoustic shadow below it, and, when the probe sits far enough distally,
  the upper pole of the patella with its own shadow;
- the recess is a thin dark line between two bright synovial walls (normal)
  or a dark lens/triangle of fluid (distended: anechoic, or hypoechoic with
  internal echoes, sediment or synovial thickening), of varying size;
- image formation, not painted noise: a complex Gaussian scattering field
  scaled by the tissue's backscatter amplitude plus coherent specular
  reflectors (cortex), attenuated along each scan line by the cumulative
  attenuation of the tissue above (shadow under bone, enhancement under
  fluid), with receiver noise, time-gain compensation and focus, filtered by
  a point-spread function (axial < lateral), envelope-detected (Rayleigh
  speckle) and log-compressed to a dynamic range;
- scanner margins: a linear (rectangular) or trapezoid field of view on a
  black frame, depth scale, focus marker and a few labels.

Each patient has its own depth setting, gain, dynamic range, tissue
thicknesses, femur shape and tilt; each of a patient's frames moves the probe
a little (shift, pressure, tilt, gain, new speckle). About a quarter of the
frames are distended (whole patients where possible). Borderline cases are
deliberate: mildly distended recesses, often hypoechoic rather than black, and
normal recesses that are thicker and darker than usual, so that the mean
darkness inside the box does not separate the classes perfectly.

Ground truth: a ``bool`` mask of the fluid (distended frames only) and the box
a clinician would draw around the recess (a margin around the thin line or the
collection, with per-annotator margins and per-edge noise). A distended
recess's box is taller, as on real data; :mod:`lib.data.summary` reports how
much the box shape alone says about the class.

Everything is deterministic for a seed (``numpy.random.Generator`` streams per
patient) and vectorized numpy/scipy: a 640 x 480 frame takes under a tenth of a
second of one core.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from lib.data.records import Box, Record
from lib.errors import DataError

DEFAULT_IMAGE_SIZE = (640, 480)
"""``(width, height)`` of a generated frame, as many scanners export."""

DEFAULT_DISTENDED_FRACTION = 0.25
DEFAULT_IMAGES_PER_PATIENT = (4, 6)

_MIN_SIDE = 32
_MAX_SIDE = 4096
_GRID_STEP = 0.25  # mm, resolution of the per-patient tissue texture fields
_GRID_X = (-60.0, 60.0)  # mm, anatomical lateral range covered by the texture fields
_GRID_Z = (-2.0, 75.0)  # mm, depth range covered by the texture fields


@dataclass(frozen=True)
class SyntheticImage:
    """One generated frame and its ground truth.

    Attributes:
        name: image name (file name without extension), unique in the data set.
        patient_id: the patient the frame belongs to.
        label: ``"normal"`` or ``"distended"``.
        image: ``uint8`` ``(H, W)`` grayscale B-mode frame.
        box: the annotated recess box ``(x_min, y_min, x_max, y_max)``, pixels, max exclusive.
        mask: ``bool`` ``(H, W)`` fluid region of a distended recess; None for normal frames.
        recess_mm: maximum recess thickness in millimetres (thin line or collection).
        borderline: True for a mildly distended recess or a thick, dark normal one.
        pixel_mm: millimetres per pixel (the same along x and y).
        imaging_region: the field of view's bounding box ``(x_min, y_min, x_max, y_max)``, max exclusive;
            the scanner's labels and scales lie outside it.
    """

    name: str
    patient_id: str
    label: str
    image: np.ndarray
    box: Box
    mask: np.ndarray | None
    recess_mm: float
    borderline: bool
    pixel_mm: float = 1.0
    imaging_region: Box | None = None


IMAGE_FORMATS = ("png", "dicom")
"""How :func:`write_sample_data` stores frames: 8-bit gray PNG, or RGB DICOM ultrasound with its calibration."""


def parse_image_size(text: str) -> tuple[int, int]:
    """Parse ``"WxH"`` (e.g. ``"640x480"``) into ``(width, height)`` in pixels.

    Raises:
        DataError: not two positive integers separated by ``x``, or a side outside 32..4096.
    """
    parts = str(text).lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise DataError(f"--image-size: expected WIDTHxHEIGHT in pixels such as 640x480, got {text!r}")
    width, height = (int(p) for p in parts)
    for side, value in (("width", width), ("height", height)):
        if not _MIN_SIDE <= value <= _MAX_SIDE:
            raise DataError(f"--image-size: {side} {value} is outside {_MIN_SIDE}..{_MAX_SIDE} pixels (got {text!r})")
    return width, height


# --------------------------------------------------------------------------- random helpers


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma) -> np.ndarray:
    """Zero-mean, unit-std Gaussian noise smoothed by a Gaussian of ``sigma`` cells (periodic edges).

    Filtered in the Fourier domain: the cost does not grow with ``sigma``.
    """
    sigma = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (len(shape),))
    spectrum = np.fft.rfftn(rng.standard_normal(shape))
    for axis, (n, s) in enumerate(zip(shape, sigma)):
        freq = np.fft.rfftfreq(n) if axis == len(shape) - 1 else np.fft.fftfreq(n)
        gain = np.exp(-2.0 * (np.pi * freq * s) ** 2)
        spectrum *= gain.reshape([-1 if a == axis else 1 for a in range(len(shape))])
    field = np.fft.irfftn(spectrum, s=shape).astype(np.float32)
    return (field - field.mean()) / (field.std() + 1e-8)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-t))


class _TextureGrid:
    """Per-patient tissue texture fields on an anatomical (depth, lateral) millimetre grid.

    Fields belong to the patient, not the frame, so the same septa and fibrils
    reappear (shifted) in every frame of a patient.
    """

    def __init__(self, rng: np.random.Generator):
        self.nz = int(round((_GRID_Z[1] - _GRID_Z[0]) / _GRID_STEP)) + 1
        self.nx = int(round((_GRID_X[1] - _GRID_X[0]) / _GRID_STEP)) + 1
        s = 1.0 / _GRID_STEP  # cells per mm
        shape = (self.nz, self.nx)
        self.fields = {
            # name: (sigma_z, sigma_x) in mm
            "septa": _smooth_noise(rng, shape, (0.9 * s, 9.0 * s)),
            "septa_break": _smooth_noise(rng, shape, (0.5 * s, 2.5 * s)),
            "lobules": _smooth_noise(rng, shape, (0.9 * s, 1.4 * s)),
            "fiber_warp": _smooth_noise(rng, shape, (2.5 * s, 9.0 * s)),
            "fiber_break": _smooth_noise(rng, shape, (0.35 * s, 3.0 * s)),
            "pennate": _smooth_noise(rng, shape, (1.5 * s, 4.0 * s)),
            "fat_septa": _smooth_noise(rng, shape, (0.6 * s, 2.0 * s)),
            "fluid": _smooth_noise(rng, shape, (0.5 * s, 0.8 * s)),
        }

    def sample(self, name: str, xa: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Bilinear samples of field ``name`` at lateral ``xa`` (W,) and depth ``z`` (H,) mm -> (H, W)."""
        field = self.fields[name]
        fx = np.clip((xa - _GRID_X[0]) / _GRID_STEP, 0, self.nx - 1.001)
        ix = fx.astype(np.int64)
        wx = (fx - ix).astype(np.float32)
        cols = field[:, ix] * (1 - wx) + field[:, ix + 1] * wx  # (nz, W)
        fz = np.clip((z - _GRID_Z[0]) / _GRID_STEP, 0, self.nz - 1.001)
        iz = fz.astype(np.int64)
        wz = (fz - iz).astype(np.float32)[:, None]
        return cols[iz] * (1 - wz) + cols[iz + 1] * wz


def _noise_1d(rng: np.random.Generator, sigma_mm: float) -> np.ndarray:
    """A smooth unit-std 1D profile over the anatomical lateral grid."""
    n = int(round((_GRID_X[1] - _GRID_X[0]) / _GRID_STEP)) + 1
    return _smooth_noise(rng, (n,), sigma_mm / _GRID_STEP)


def _profile(values: np.ndarray, xa: np.ndarray) -> np.ndarray:
    grid = np.linspace(_GRID_X[0], _GRID_X[1], values.size)
    return np.interp(xa, grid, values)


# --------------------------------------------------------------------------- the patient


@dataclass
class _Patient:
    """Everything that stays fixed across one patient's frames (lengths in mm, gains in dB)."""

    depth_mm: float
    top_fraction: float
    bottom_fraction: float
    centre_offset: float
    footprint_mm: float
    trapezoid: bool
    gain_db: float
    dynamic_range_db: float
    gamma: float
    tgc_points: np.ndarray  # dB wobble at 5 equally spaced depths
    tgc_compensation: float
    focus_fraction: float
    noise_db: float
    psf_axial_mm: float
    psf_lateral_mm: float
    smoothing_px: float
    skin_mm: float
    subcut_mm: float
    tendon_mm: float
    upper_mm: float
    fat_pad_x: float
    prefemoral_min_mm: float
    prefemoral_max_mm: float
    prefemoral_x: float
    femur_depth_mm: float
    femur_slope: float
    femur_bump_mm: float
    trochlea_x: float
    trochlea_drop: float
    patella_x: float
    patella_rise_mm: float
    recess_x0: float
    recess_x1: float
    recess_thin_mm: float
    thick_normal: bool
    lens_center_x: float
    lens_half_left: float
    lens_half_right: float
    lens_power: float
    lens_up_fraction: float
    lens_max_mm: float
    mild: bool
    fluid_echo: float
    internal_echo_density: float
    sediment: float
    synovitis_mm: float
    pennate_angle: float
    fibrils: float
    annot_margin_y: float
    annot_margin_x: float
    annot_noise: float
    annot_crop: float
    profiles: dict
    texture: _TextureGrid


def _draw_patient(rng: np.random.Generator, distended_frames: bool) -> _Patient:
    u = rng.uniform
    subcut = float(np.exp(rng.normal(np.log(5.0), 0.35)))
    tendon = u(3.5, 6.5)
    upper = u(2.5, 6.0)
    skin = u(1.0, 1.8)
    thick_normal = bool(rng.random() < 0.3)
    thin = float(np.clip(np.exp(rng.normal(np.log(0.85), 0.3)), 0.5, 1.5))
    if thick_normal:
        thin = u(1.2, 1.8)
    mild = bool(rng.random() < 0.3)
    lens_max = u(2.0, 3.8) if mild else float(np.clip(np.exp(rng.normal(np.log(6.5), 0.4)), 3.8, 14.0))
    prefemoral_max = u(3.0, 7.0)
    stack = skin + subcut + tendon + upper + thin + prefemoral_max * 0.6
    swelling = 0.35 * lens_max if distended_frames else 0.0
    femur_depth = stack + u(-1.0, 2.0) + swelling
    depth = float(np.clip(math.ceil((femur_depth + u(7.0, 14.0)) / 5.0) * 5.0, 25.0, 60.0))
    recess_x0 = u(-24.0, -8.0)
    recess_x1 = u(5.0, 15.0)
    patella_x = recess_x1 + u(3.0, 12.0)
    half_l, half_r = u(8.0, 16.0), u(6.0, 13.0)
    lens_center = u(recess_x0 + 0.5 * half_l, recess_x1 - 0.3 * half_r)
    hypo = rng.random() < (0.7 if mild else 0.35)
    return _Patient(
        depth_mm=depth,
        top_fraction=u(0.07, 0.11),
        bottom_fraction=u(0.03, 0.05),
        centre_offset=u(-0.03, 0.03),
        footprint_mm=u(38.0, 50.0),
        trapezoid=bool(rng.random() < 0.3),
        gain_db=float(np.clip(rng.normal(0.0, 3.0), -6.0, 6.0)),
        dynamic_range_db=u(48.0, 62.0),
        gamma=u(0.85, 1.2),
        tgc_points=rng.normal(0.0, 2.0, size=5),
        tgc_compensation=u(0.85, 1.0),
        focus_fraction=u(0.35, 0.7),
        noise_db=u(-66.0, -58.0),
        psf_axial_mm=u(0.07, 0.11),
        psf_lateral_mm=u(0.2, 0.32),
        smoothing_px=u(0.2, 0.6),
        skin_mm=skin,
        subcut_mm=subcut,
        tendon_mm=tendon,
        upper_mm=upper,
        fat_pad_x=u(-8.0, 4.0),
        prefemoral_min_mm=u(1.2, 2.5),
        prefemoral_max_mm=prefemoral_max,
        prefemoral_x=u(-5.0, 8.0),
        femur_depth_mm=femur_depth,
        femur_slope=rng.normal(0.0, 0.05),
        femur_bump_mm=u(-1.0, 2.0),
        trochlea_x=patella_x + u(-4.0, 3.0),
        trochlea_drop=u(0.03, 0.09),
        patella_x=patella_x,
        patella_rise_mm=u(2.0, 4.5),
        recess_x0=recess_x0,
        recess_x1=recess_x1,
        recess_thin_mm=thin,
        thick_normal=thick_normal,
        lens_center_x=lens_center,
        lens_half_left=half_l,
        lens_half_right=half_r,
        lens_power=u(0.55, 1.2),
        lens_up_fraction=u(0.65, 0.9),
        lens_max_mm=lens_max,
        mild=mild,
        fluid_echo=u(0.025, 0.07) if hypo else u(0.006, 0.02),
        internal_echo_density=u(0.001, 0.008) if hypo else u(0.0, 0.002),
        sediment=u(0.3, 1.0) if rng.random() < 0.25 else 0.0,
        synovitis_mm=u(0.4, 1.5) if rng.random() < 0.3 else 0.0,
        pennate_angle=math.radians(u(8.0, 20.0)),
        fibrils=u(1.8, 2.8),
        annot_margin_y=u(0.8, 2.2),
        annot_margin_x=u(0.5, 3.0),
        annot_noise=u(0.2, 0.6),
        annot_crop=u(0.75, 1.0),
        profiles={
            "subcut": _noise_1d(rng, 8.0),
            "tendon": _noise_1d(rng, 10.0),
            "upper": _noise_1d(rng, 6.0),
            "prefemoral": _noise_1d(rng, 5.0),
            "recess": _noise_1d(rng, 3.0),
            "wall": _noise_1d(rng, 1.5),
            "cortex": _noise_1d(rng, 2.0),
            "synovium": _noise_1d(rng, 1.0),
        },
        texture=_TextureGrid(rng),
    )


# --------------------------------------------------------------------------- one frame


@dataclass
class _Frame:
    """The per-frame probe placement.

    Attributes:
        shift_mm: lateral probe shift (anatomy moves by this many mm).
        pressure: thickness factor of the compressible layers (subcutaneous fat, thin recess); < 1 = pressed.
        tilt: added slope of all layers, mm of depth per mm across.
        gain_db: gain change from the patient's setting.
        lens_scale: size factor of a distended collection (fluid moves with pressure and position).
    """

    shift_mm: float
    pressure: float
    tilt: float
    gain_db: float
    lens_scale: float


def _kernel_energy(sigma: float) -> float:
    """Sum of squares of scipy's 1D Gaussian kernel of ``sigma`` pixels (for speckle normalization)."""
    delta = np.zeros(8 * int(math.ceil(sigma)) + 9)
    delta[delta.size // 2] = 1.0
    return float(np.sum(ndimage.gaussian_filter1d(delta, sigma) ** 2))


def _render(p: _Patient, f: _Frame, size: tuple[int, int], distended: bool, rng: np.random.Generator):
    """Render one frame. Returns ``(image uint8 (H, W), mask bool (H, W) or None, box, recess_mm, mm per pixel,
    imaging region)``; the region is the field of view's bounding box (pixels, max exclusive)."""
    width, height = size
    top = int(round(height * p.top_fraction))
    bottom = height - int(round(height * p.bottom_fraction))
    ppm = (bottom - top) / p.depth_mm  # pixels per mm, isotropic
    footprint = min(p.footprint_mm, 0.8 * width / ppm)
    cx = width / 2.0 + p.centre_offset * width
    half_top = footprint * ppm / 2.0
    half_bottom = half_top * (1.25 if p.trapezoid else 1.0)
    half_bottom = min(half_bottom, min(cx, width - cx) - 2)
    half_top = min(half_top, half_bottom)

    cols = np.arange(width, dtype=np.float64)
    rows = np.arange(height, dtype=np.float64)
    x_mm = (cols + 0.5 - cx) / ppm
    z = (rows + 0.5 - top) / ppm  # depth below the skin, mm (H,)
    xa = x_mm + f.shift_mm  # anatomical lateral position (W,)
    tilt = f.tilt * x_mm  # mm of depth added by the probe tilt (W,)
    prof = {k: _profile(v, xa) for k, v in p.profiles.items()}

    # ---- layer boundaries, mm below the skin, one value per column
    femur = (
        p.femur_depth_mm
        + p.femur_slope * xa
        - p.femur_bump_mm * np.exp(-((xa - p.prefemoral_x) / 15.0) ** 2)
        + p.trochlea_drop * np.maximum(0.0, xa - p.trochlea_x) ** 2
        + tilt
    )
    prefemoral = p.prefemoral_min_mm + (p.prefemoral_max_mm - p.prefemoral_min_mm) * _sigmoid(
        (xa - p.prefemoral_x) / 5.0
    )
    prefemoral = prefemoral * (1.0 + 0.12 * prof["prefemoral"])
    centre = femur - prefemoral
    window = _smoothstep((xa - p.recess_x0) / 4.0) * _smoothstep((p.recess_x1 - xa) / 4.0)
    thin = p.recess_thin_mm * f.pressure * window * np.clip(1.0 + 0.2 * prof["recess"], 0.6, 1.25)
    lens = np.zeros_like(xa)
    if distended:
        half = np.where(xa < p.lens_center_x, p.lens_half_left, p.lens_half_right) * f.lens_scale
        s = (xa - p.lens_center_x) / half
        lens = p.lens_max_mm * f.lens_scale * np.clip(1.0 - s * s, 0.0, None) ** p.lens_power
        lens = lens * (1.0 + 0.06 * prof["wall"]) * (lens > 0.05)
    extra = np.maximum(lens - thin, 0.0)  # the collection widens the thin line to the lens thickness
    wall_top = centre - 0.5 * thin - p.lens_up_fraction * extra
    wall_bottom = centre + 0.5 * thin + (1.0 - p.lens_up_fraction) * extra
    excess = np.maximum(0.0, wall_bottom - (femur - 1.5))  # keep >= 1.5 mm of prefemoral fat
    wall_top, wall_bottom = wall_top - excess, wall_bottom - excess

    skin = p.skin_mm * np.ones_like(xa)
    nominal_sc = p.subcut_mm * f.pressure * (1.0 + 0.15 * prof["subcut"])
    nominal_t = p.tendon_mm * (1.0 + 0.1 * prof["tendon"])
    nominal_up = p.upper_mm * (1.0 + 0.25 * prof["upper"])
    scale = np.clip((wall_top - skin) / (nominal_sc + nominal_t + nominal_up), 0.2, None)
    subcut_bottom = skin + nominal_sc * scale
    tendon_bottom = subcut_bottom + nominal_t * scale

    # patella: upper pole at patella_x, anterior surface rising distally, rounded tip
    d = xa - p.patella_x
    pole = float(np.interp(p.patella_x, xa, tendon_bottom)) if xa[0] <= p.patella_x <= xa[-1] else tendon_bottom[-1]
    pole_depth = pole + 0.5
    tip = 3.0  # mm, radius of the rounded upper pole
    patella = pole_depth - p.patella_rise_mm * (1.0 - np.exp(-np.maximum(d, 0.0) / 4.0))
    patella = patella + tip - np.sqrt(np.clip(tip**2 - (tip - np.clip(d, 0.0, tip)) ** 2, 0.0, None))
    patella = np.where(d >= 0.0, np.maximum(patella, subcut_bottom + 0.8), np.inf)
    cartilage = 2.0 * _smoothstep((xa - p.trochlea_x + 2.0) / 6.0)

    # the per-pixel work below runs in float32 (half the memory traffic of float64)
    femur, wall_top, wall_bottom, subcut_bottom, tendon_bottom, patella, cartilage, lens, thin, skin = (
        np.asarray(a, dtype=np.float32)
        for a in (femur, wall_top, wall_bottom, subcut_bottom, tendon_bottom, patella, cartilage, lens, thin, skin)
    )
    prof = {k: v.astype(np.float32) for k, v in prof.items()}
    Z = z.astype(np.float32)[:, None]
    region_z = (Z >= 0.0) & (Z <= p.depth_mm)
    tex = p.texture
    lob = tex.sample("lobules", xa, z)

    # ---- backscatter amplitude A (1 = average soft tissue) and attenuation (dB/mm, round trip)
    A = np.empty((height, width), dtype=np.float32)
    att = np.empty((height, width), dtype=np.float32)

    in_skin = Z < skin
    in_subcut = ~in_skin & (Z < subcut_bottom)
    in_tendon = (Z >= subcut_bottom) & (Z < tendon_bottom)
    in_upper = (Z >= tendon_bottom) & (Z < wall_top)
    in_recess = (Z >= wall_top) & (Z < wall_bottom)
    in_cart = (Z >= femur - cartilage) & (Z < femur) & ~in_recess
    in_prefem = (Z >= wall_bottom) & (Z < femur) & ~in_cart
    in_bone = Z >= femur
    in_patella = Z >= patella

    septa = tex.sample("septa", xa, z)
    septa_on = np.clip(0.3 + 0.6 * tex.sample("septa_break", xa, z), 0.0, 1.0)
    A_sc = 0.22 * np.exp(0.3 * lob) + 2.2 * septa_on * np.exp(-((septa / 0.07) ** 2))
    v = (Z - subcut_bottom) / np.maximum(tendon_bottom - subcut_bottom, 0.3)
    n_fib = max(3.0, p.tendon_mm / 0.6)
    phase = v * n_fib + 0.9 * tex.sample("fiber_warp", xa, z)
    fib = (0.5 + 0.5 * np.cos(2 * np.pi * phase)) ** 6
    brk = np.clip(0.35 + 0.6 * tex.sample("fiber_break", xa, z), 0.0, 1.0)
    A_t = 0.6 + p.fibrils * fib * brk + 0.2 * np.exp(0.3 * lob)
    along = Z * math.cos(p.pennate_angle) + xa.astype(np.float32) * math.sin(p.pennate_angle)
    stripes = along / 1.1 + 0.4 * tex.sample("pennate", xa, z)
    A_muscle = 0.28 * np.exp(0.25 * lob) + 1.6 * (0.5 + 0.5 * np.cos(2 * np.pi * stripes)) ** 10
    fat_sep = tex.sample("fat_septa", xa, z)
    A_fatpad = 1.1 * np.exp(0.4 * lob) + 1.3 * np.exp(-((fat_sep / 0.12) ** 2))
    w_fat = _sigmoid((xa - p.fat_pad_x) / 3.0)
    A_up = A_muscle * (1 - w_fat) + A_fatpad * w_fat
    A_pf = 0.8 * np.exp(0.4 * lob) + 1.1 * np.exp(-((fat_sep / 0.1) ** 2))

    # recess content: a near-anechoic slit, or fluid with internal echoes / sediment / synovium
    if distended:
        fluid_tex = tex.sample("fluid", xa, z)
        depth_in = np.clip((Z - wall_top) / np.maximum(wall_bottom - wall_top, 0.2), 0.0, 1.0)
        A_fluid = p.fluid_echo * np.exp(0.4 * fluid_tex) * (1.0 + p.sediment * 2.0 * depth_in**3)
        dots = (rng.random((height, width)) < p.internal_echo_density).astype(np.float32)
        A_fluid = A_fluid + 0.5 * dots
        if p.synovitis_mm > 0:
            syn = p.synovitis_mm * np.clip(0.7 + 0.6 * prof["synovium"], 0.1, None)
            syn = np.minimum(syn, 0.25 * lens) * (lens > 0.3)
            near_wall = (Z - wall_top < syn) | (wall_bottom - Z < syn * 0.7)
            A_fluid = np.where(near_wall, 0.3 * np.exp(0.4 * fluid_tex), A_fluid)
        A_rec = np.where(lens[None, :] > thin[None, :], A_fluid, 0.035)
    else:
        A_rec = 0.035 * (0.5 if p.thick_normal else 1.0) * np.ones((1, width))

    A[:] = 2.2 * np.exp(0.3 * lob)  # skin: entry echo and echogenic dermis
    A[in_subcut] = A_sc[in_subcut]
    A[in_tendon] = A_t[in_tendon]
    A[in_upper] = A_up[in_upper]
    np.copyto(A, np.broadcast_to(A_rec, A.shape), where=in_recess)
    A[in_prefem] = A_pf[in_prefem]
    A[in_cart] = 0.05
    A[in_bone] = 0.5
    A[in_patella] = 0.5

    att[:] = 1.2
    att[in_subcut] = 0.9
    att[in_tendon] = 1.3
    att[in_upper] = 1.0
    att[in_recess] = 0.05
    att[in_prefem] = 0.9
    att[in_cart] = 0.3
    att[in_bone | in_patella] = 9.0
    att[~region_z[:, 0], :] = 0.0

    # bright synovial walls (and the fat-fat interface where the recess collapses)
    wall_amp = 1.4 * np.clip(1.0 + 0.4 * prof["wall"], 0.3, None)
    sig_wall = max(0.12, 0.6 / ppm)
    A += (wall_amp * np.exp(-(((Z - wall_top + 1.2 * sig_wall) / sig_wall) ** 2))).astype(np.float32)
    A += (0.8 * wall_amp * np.exp(-(((Z - wall_bottom - 1.2 * sig_wall) / sig_wall) ** 2))).astype(np.float32)
    # paratenon lines above and below the tendon
    A += (0.8 * np.exp(-(((Z - subcut_bottom) / sig_wall) ** 2))).astype(np.float32)
    A += (0.8 * np.exp(-(((Z - tendon_bottom) / sig_wall) ** 2))).astype(np.float32)

    # coherent specular reflectors: femoral cortex and patellar surface
    sig_cortex = max(0.13, 0.6 / ppm)
    cortex_amp = 5.0 * np.clip(1.0 + 0.3 * prof["cortex"], 0.3, None)
    C = cortex_amp * np.exp(-(((Z - femur) / sig_cortex) ** 2))
    C += np.where(in_tendon, 0.5 * p.fibrils * fib * brk, 0.0)  # fibrils reflect partly specularly
    C += 4.5 * np.exp(-(((Z - patella) / sig_cortex) ** 2))
    att_above = np.cumsum(att, axis=0) / ppm  # dB lost on the way down and back
    att_above -= att / ppm  # the reflector itself is not attenuated by its own pixel

    # ---- image formation
    tgc_depths = np.linspace(0.0, p.depth_mm, p.tgc_points.size)
    tgc = p.tgc_compensation * 1.0 * z + np.interp(z, tgc_depths, p.tgc_points)
    focus = 2.0 * np.exp(-(((z - p.focus_fraction * p.depth_mm) / (0.25 * p.depth_mm)) ** 2))
    edge = np.abs(x_mm * ppm) - half_top
    lateral_db = -6.0 * np.exp(np.clip(edge, None, 0.0) / (1.5 * ppm))  # beam fall-off at the array ends
    gain_db = ((tgc + focus + p.gain_db + f.gain_db)[:, None] + lateral_db[None, :]).astype(np.float32)

    tissue = 10.0 ** (-att_above / 20.0)
    noise = 10.0 ** (p.noise_db / 20.0)
    sigma_rand = np.sqrt((A * tissue) ** 2 + noise**2)
    field = rng.standard_normal((2, height, width), dtype=np.float32)
    gain = 10.0 ** (gain_db / 20.0)
    real = (field[0] * sigma_rand * np.sqrt(0.5) + C * tissue) * gain
    imag = field[1] * sigma_rand * np.sqrt(0.5) * gain
    sy = max(0.55, p.psf_axial_mm * ppm)
    sx = max(0.7, p.psf_lateral_mm * ppm)
    real = ndimage.gaussian_filter(real.astype(np.float32), (sy, sx), mode="nearest")
    imag = ndimage.gaussian_filter(imag.astype(np.float32), (sy, sx), mode="nearest")
    energy = _kernel_energy(sy) * _kernel_energy(sx)
    intensity = (real * real + imag * imag) / energy
    # spatial compounding / speckle reduction: average the intensity over about one speckle cell
    intensity = ndimage.gaussian_filter(intensity, (0.4 * sy, 0.8 * sx), mode="nearest")
    db = 10.0 * np.log10(intensity + 1e-12)
    gray = np.clip(db / p.dynamic_range_db + 0.62, 0.0, 1.0) ** p.gamma
    if p.smoothing_px > 0:
        gray = ndimage.gaussian_filter(gray, p.smoothing_px * max(1.0, ppm / 10.0), mode="nearest")

    # ---- field of view and scanner overlays
    yy = rows[:, None] + 0.5
    frac = np.clip((yy - top) / max(bottom - top, 1), 0.0, 1.0)
    half = half_top + (half_bottom - half_top) * frac
    fov = (yy >= top) & (yy <= bottom) & (np.abs(cols[None, :] + 0.5 - cx) <= half)
    gray = np.where(fov, gray, 0.0)
    image = np.clip(np.rint(gray * 255.0), 0, 255).astype(np.uint8)
    _draw_overlays(image, p, ppm, top, bottom, cx, half_top, half_bottom, rng)

    # ---- ground truth (pixel coordinates)
    mask = None
    if distended:
        mask = in_recess & (lens[None, :] > thin[None, :] + 0.1) & fov & ~in_patella
        if not mask.any():  # the probe moved the collection out of view: keep its visible rim
            mask = in_recess & fov
    box = _annotate(p, rng, in_recess & fov, mask, thin, ppm, fov, size)
    recess_mm = float(np.max(np.maximum(thin, lens)))
    ys, xs = np.nonzero(fov)
    region = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return image, mask, box, recess_mm, 1.0 / ppm, region


def _draw_overlays(image, p: _Patient, ppm, top, bottom, cx, half_top, half_bottom, rng) -> None:
    """Depth scale, focus marker and a few labels in the black margins (drawn in place)."""
    height, width = image.shape
    pil = Image.fromarray(image, mode="L")
    draw = ImageDraw.Draw(pil)
    x_scale = int(min(width - 3, cx + half_bottom + max(3, width * 0.012)))
    for mm in range(0, int(p.depth_mm) + 1, 5):
        y = top + mm * ppm
        if y > bottom + 1:
            break
        length = max(2, int(width * (0.012 if mm % 10 == 0 else 0.006)))
        draw.line([(x_scale, y), (min(width - 1, x_scale + length), y)], fill=170)
    y_focus = top + p.focus_fraction * p.depth_mm * ppm
    x_focus = int(max(2, cx - half_bottom - max(4, width * 0.015)))
    r = max(2, int(height * 0.008))
    draw.polygon([(x_focus, y_focus - r), (x_focus + r + 1, y_focus), (x_focus, y_focus + r)], fill=200)
    if width >= 320 and height >= 240 and top >= 18:
        try:
            font = ImageFont.load_default(size=max(10, int(height * 0.026)))
        except TypeError:  # Pillow < 10.1
            font = ImageFont.load_default()
        draw.text((int(width * 0.02), int(top * 0.2)), "MSK  KNEE  L12-5", fill=190, font=font)
        second_line = (int(width * 0.02), int(top * 0.2) + int(height * 0.032))
        draw.text(second_line, f"G {62 + p.gain_db:.0f}  DR {p.dynamic_range_db:.0f}", fill=150, font=font)
        draw.text((int(width * 0.80), int(top * 0.2)), f"D {p.depth_mm / 10:.1f} cm", fill=190, font=font)
    image[:] = np.asarray(pil)


def _annotate(p: _Patient, rng, recess, mask, thin, ppm: float, fov, size) -> Box:
    """The box a clinician would draw: the thin line's visible stretch, or the collection, plus margins."""
    width, height = size
    if mask is not None:
        ys, xs = np.nonzero(mask)
        x0, x1 = xs.min(), xs.max() + 1
        y0, y1 = ys.min(), ys.max() + 1
        extra = rng.uniform(0.0, 5.0) * ppm  # some annotators include a bit of the thin recess beyond
        x0, x1 = x0 - extra * rng.random(), x1 + extra * rng.random()
    else:
        visible = recess & (thin[None, :] >= 0.35 * max(float(thin.max()), 1e-6))
        if not visible.any():
            visible = recess
        if not visible.any():  # nothing of the recess in view: box the middle of the frame
            ys, xs = np.nonzero(fov)
            cy = (ys.min() + ys.max()) / 2
            visible = np.zeros_like(fov)
            visible[int(cy) : int(cy) + 2, xs.min() : xs.max()] = True
        ys, xs = np.nonzero(visible)
        x0, x1 = float(xs.min()), float(xs.max() + 1)
        y0, y1 = float(ys.min()), float(ys.max() + 1)
        length = x1 - x0
        keep = p.annot_crop * length  # annotators box the clearly seen part of the line
        start = x0 + rng.uniform(0.0, length - keep)
        x0, x1 = start, start + keep
    noise = p.annot_noise * ppm
    my, mx = p.annot_margin_y * ppm, p.annot_margin_x * ppm
    bx0 = x0 - max(mx + rng.normal(0, noise), -0.5 * ppm)
    bx1 = x1 + max(mx + rng.normal(0, noise), -0.5 * ppm)
    by0 = y0 - max(my + rng.normal(0, noise), 0.2 * ppm)
    by1 = y1 + max(my + rng.normal(0, noise), 0.2 * ppm)
    ys, xs = np.nonzero(fov)
    bx0, bx1 = np.clip([bx0, bx1], xs.min(), xs.max() + 1)
    by0, by1 = np.clip([by0, by1], ys.min(), ys.max() + 1)
    box = [int(math.floor(bx0)), int(math.floor(by0)), int(math.ceil(bx1)), int(math.ceil(by1))]
    box[2] = max(box[2], box[0] + 2)
    box[3] = max(box[3], box[1] + 2)
    box[0], box[2] = (min(box[0], width - 2), min(box[2], width))
    box[1], box[3] = (min(box[1], height - 2), min(box[3], height))
    return tuple(int(v) for v in box)


# --------------------------------------------------------------------------- the data set


def _plan(patients: int, seed: int, distended_fraction: float, images_per_patient) -> list[list[bool]]:
    """Which frames of which patient are distended: whole patients first, the last one split (other knee)."""
    rng = np.random.default_rng([seed, 0x5A4D])
    lo, hi = images_per_patient
    counts = rng.integers(lo, hi + 1, size=patients)
    target = int(round(distended_fraction * counts.sum()))
    plan = [[False] * int(n) for n in counts]
    for i in rng.permutation(patients):
        if target <= 0:
            break
        k = min(target, int(counts[i]))
        plan[i] = [j < k for j in range(int(counts[i]))]
        target -= k
    return plan


def generate(
    patients: int = 10,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    distended_fraction: float = DEFAULT_DISTENDED_FRACTION,
    images_per_patient: tuple[int, int] = DEFAULT_IMAGES_PER_PATIENT,
) -> Iterator[SyntheticImage]:
    """Yield the frames of a synthetic data set, patient by patient.

    Args:
        patients: number of patients (>= 1).
        seed: the same seed gives the same frames, boxes and masks.
        image_size: ``(width, height)`` of every frame in pixels.
        distended_fraction: fraction of frames that are distended (rounded to whole frames).
        images_per_patient: inclusive range of frames per patient.

    Raises:
        DataError: a parameter out of range.
    """
    if int(patients) < 1:
        raise DataError(f"--patients must be at least 1, got {patients}")
    if not 0.0 <= float(distended_fraction) <= 1.0:
        raise DataError(f"--distended-fraction must be between 0 and 1, got {distended_fraction}")
    width, height = (int(v) for v in image_size)
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise DataError(f"image size {width}x{height} is outside {_MIN_SIDE}..{_MAX_SIDE} pixels per side")
    lo, hi = (int(v) for v in images_per_patient)
    if not 1 <= lo <= hi:
        raise DataError(f"images per patient must be a range 1 <= min <= max, got {images_per_patient}")
    plan = _plan(int(patients), int(seed), float(distended_fraction), (lo, hi))
    for index, states in enumerate(plan):
        rng = np.random.default_rng([seed, index])
        patient = _draw_patient(rng, any(states))
        patient_id = f"p{index + 1:03d}"
        for k, distended in enumerate(states):
            frame = _Frame(
                shift_mm=rng.normal(0.0, 2.5),
                pressure=rng.uniform(0.85, 1.08),
                tilt=rng.normal(0.0, 0.03),
                gain_db=rng.normal(0.0, 1.2),
                lens_scale=rng.uniform(0.88, 1.1),
            )
            image, mask, box, recess_mm, pixel_mm, region = _render(patient, frame, (width, height), distended, rng)
            yield SyntheticImage(
                name=f"{patient_id}_{k + 1:02d}",
                patient_id=patient_id,
                label="distended" if distended else "normal",
                image=image,
                box=box,
                mask=mask,
                recess_mm=recess_mm,
                borderline=patient.mild if distended else patient.thick_normal,
                pixel_mm=pixel_mm,
                imaging_region=region,
            )


@dataclass(frozen=True)
class CineLoop:
    """A synthetic cine loop: one patient's probe sweeping slowly over the recess.

    Attributes:
        name: the loop's name (file name without extension).
        patient_id: the patient.
        label: ``"normal"`` or ``"distended"`` (every frame of a loop has the same class).
        frames: ``uint8`` ``(F, H, W)``.
        boxes: each frame's annotated box.
        box: the union of the frames' boxes: one box that holds the recess in every frame.
        masks: each frame's fluid mask (distended loops), else None.
        pixel_mm: millimetres per pixel (x and y).
        imaging_region: the field of view's bounding box (the union over the frames).
        most_distended: the frame whose fluid mask is largest (distended loops), else None.
    """

    name: str
    patient_id: str
    label: str
    frames: np.ndarray
    boxes: tuple
    box: Box
    masks: tuple | None
    pixel_mm: float
    imaging_region: Box
    most_distended: int | None


def generate_cine(frames: int, patients: int = 1, seed: int = 0, image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
                  distended_fraction: float = 0.5) -> Iterator[CineLoop]:
    """Yield one cine loop per patient: ``frames`` frames of a slow sweep (the probe slides 4 mm and rocks a
    little; a collection swells and shrinks as the probe presses). Deterministic for a seed.

    Raises:
        DataError: a parameter out of range.
    """
    if int(frames) < 2:
        raise DataError(f"a cine loop has at least 2 frames, got {frames}")
    if int(patients) < 1:
        raise DataError(f"--patients must be at least 1, got {patients}")
    width, height = (int(v) for v in image_size)
    if not (_MIN_SIDE <= width <= _MAX_SIDE and _MIN_SIDE <= height <= _MAX_SIDE):
        raise DataError(f"image size {width}x{height} is outside {_MIN_SIDE}..{_MAX_SIDE} pixels per side")
    count = int(frames)
    plan = _plan(int(patients), int(seed) + 7919, float(distended_fraction), (1, 1))
    for index, (distended,) in enumerate(plan):
        rng = np.random.default_rng([seed, index, 0xC1E])
        patient = _draw_patient(rng, distended)
        phase = np.linspace(0.0, 1.0, count)
        images, boxes, masks, regions, pixel_mm = [], [], [], [], 1.0
        for t in phase:
            frame = _Frame(shift_mm=-2.0 + 4.0 * t, pressure=1.0 - 0.08 * math.sin(math.pi * t),
                           tilt=0.02 * math.sin(2 * math.pi * t), gain_db=0.0,
                           lens_scale=0.9 + 0.2 * math.sin(math.pi * t))
            image, mask, box, _recess, pixel_mm, region = _render(patient, frame, (width, height), distended, rng)
            images.append(image)
            boxes.append(box)
            masks.append(mask)
            regions.append(region)
        union = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
        region = (min(r[0] for r in regions), min(r[1] for r in regions),
                  max(r[2] for r in regions), max(r[3] for r in regions))
        sizes = [int(m.sum()) if m is not None else 0 for m in masks]
        yield CineLoop(
            name=f"p{index + 1:03d}_cine", patient_id=f"p{index + 1:03d}",
            label="distended" if distended else "normal", frames=np.stack(images), boxes=tuple(boxes), box=union,
            masks=tuple(masks) if distended else None, pixel_mm=pixel_mm, imaging_region=region,
            most_distended=int(np.argmax(sizes)) if distended else None,
        )


def write_cine_dicom(path: str | os.PathLike, loop: CineLoop, rgb: bool = True) -> Path:
    """Write a loop as a DICOM US Multi-frame image with its region calibration
    (:func:`lib.data.dicom.write_ultrasound_dicom`)."""
    from lib.data.dicom import write_ultrasound_dicom

    return write_ultrasound_dicom(path, loop.frames, (loop.pixel_mm, loop.pixel_mm), loop.imaging_region,
                                  patient_id=loop.patient_id, rgb=rgb)


def write_frame_dicom(path: str | os.PathLike, item: SyntheticImage, rgb: bool = True, **uids) -> Path:
    """Write a frame as an RGB DICOM US image with its region calibration, as scanners export
    (:func:`lib.data.dicom.write_ultrasound_dicom`)."""
    from lib.data.dicom import write_ultrasound_dicom

    return write_ultrasound_dicom(path, item.image, (item.pixel_mm, item.pixel_mm), item.imaging_region,
                                  patient_id=item.patient_id, rgb=rgb, **uids)


def write_sample_data(
    out_dir: str | os.PathLike,
    patients: int = 10,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    distended_fraction: float = DEFAULT_DISTENDED_FRACTION,
    images_per_patient: tuple[int, int] = DEFAULT_IMAGES_PER_PATIENT,
    *,
    overwrite: bool = True,
    preview: str | os.PathLike | None = None,
    image_format: str = "png",
    cine_frames: int = 0,
) -> list[Record]:
    """Generate a data set and write it in the flat layout, all or nothing.

    Writes ``out_dir/images/<name>.png`` (8-bit grayscale) -- or, with ``image_format="dicom"``,
    ``out_dir/images/<name>.dcm`` (RGB DICOM ultrasound with the field of view as its imaging region
    and the calibration in mm, one study per patient) -- ``out_dir/masks/<name>.png``
    (0/255, distended frames only) and ``out_dir/labels.csv`` with the columns
    ``image,patient_id,label,x_min,y_min,x_max,y_max`` (box in pixels, max exclusive) through
    :func:`lib.data.flat.write_flat`: the folder appears only once everything is
    written and read back. An existing flat data set at ``out_dir`` is replaced
    when ``overwrite``; a non-empty folder that is not one is never touched.

    With ``cine_frames`` >= 2, also one DICOM cine loop per patient in ``out_dir/cine/<patient>_cine.dcm``
    (:func:`generate_cine`) and ``out_dir/cine/loops.csv``
    (``loop,patient_id,label,frames,pixel_mm,most_distended_frame,x_min,y_min,x_max,y_max``; the box holds
    the recess in every frame), moved into place with the data set.

    With ``preview``, also saves :func:`render_preview` of frames of this very data
    set (same names) at that path.

    Returns:
        The records of the written data set, pointing into ``out_dir``.

    Raises:
        DataError: a parameter out of range, or ``out_dir`` cannot be replaced.
    """
    import csv
    import shutil
    import tempfile

    from lib.data.flat import FlatItem, write_flat

    if image_format not in IMAGE_FORMATS:
        raise DataError(f"unknown image format {image_format!r}; valid formats are {', '.join(IMAGE_FORMATS)}")
    if cine_frames and int(cine_frames) < 2:
        raise DataError(f"--cine-frames: a cine loop has at least 2 frames, got {cine_frames}")
    frames = list(generate(patients, seed, image_size, distended_fraction, images_per_patient))
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", dir=out_dir.parent) as staging:
        staging = Path(staging)
        pixels: dict[str, object] = {x.name: x.image for x in frames}
        if image_format == "dicom":
            from pydicom.uid import generate_uid

            studies = {pid: generate_uid() for pid in sorted({x.patient_id for x in frames})}
            series = {pid: generate_uid() for pid in studies}
            for k, x in enumerate(frames):
                pixels[x.name] = write_frame_dicom(staging / f"{x.name}.dcm", x, study_uid=studies[x.patient_id],
                                                   series_uid=series[x.patient_id], instance_number=k + 1)
        cine_dir = None
        if cine_frames:
            cine_dir = staging / "cine"
            cine_dir.mkdir()
            rows = []
            for loop in generate_cine(int(cine_frames), patients, seed, image_size, max(distended_fraction, 0.5)):
                write_cine_dicom(cine_dir / f"{loop.name}.dcm", loop)
                most = "" if loop.most_distended is None else loop.most_distended
                rows.append([loop.name, loop.patient_id, loop.label, len(loop.frames), f"{loop.pixel_mm:.6f}", most,
                             *loop.box])
            with open(cine_dir / "loops.csv", "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["loop", "patient_id", "label", "frames", "pixel_mm", "most_distended_frame",
                                 "x_min", "y_min", "x_max", "y_max"])
                writer.writerows(rows)
        items = [FlatItem(x.name, x.patient_id, x.label, x.box, pixels[x.name], x.mask) for x in frames]
        records = write_flat(out_dir, items, overwrite=overwrite)
        if cine_dir is not None:
            shutil.rmtree(out_dir / "cine", ignore_errors=True)
            os.replace(cine_dir, out_dir / "cine")
    if preview is not None:
        render_preview(preview, items=frames)
    return records


def _pick_examples(items: Sequence[SyntheticImage], label: str, count: int) -> list[SyntheticImage]:
    """Up to ``count`` frames of ``label`` from different patients, the last one borderline when there is one."""
    firsts: dict[str, SyntheticImage] = {}
    for item in items:
        if item.label == label:
            firsts.setdefault(item.patient_id, item)
    plain = [x for x in firsts.values() if not x.borderline]
    borderline = [x for x in firsts.values() if x.borderline]
    chosen = plain[: count - 1] + borderline[:1]
    chosen += [x for x in plain[count - 1 :] + borderline[1:]][: count - len(chosen)]
    return chosen


def render_preview(
    path: str | os.PathLike,
    seed: int = 0,
    image_size: tuple[int, int] = DEFAULT_IMAGE_SIZE,
    columns: int = 3,
    patients: int = 8,
    items: Sequence[SyntheticImage] | None = None,
) -> Path:
    """Save a PNG figure of sample frames (normal and distended) with boxes and mask contours.

    Shows ``columns`` normal frames on the top row and ``columns`` distended frames
    on the bottom row (one per patient, borderline ones included when present),
    boxes in yellow, fluid-mask contours in cyan. Regenerate the README picture with
    ``python -m lib sample-data --out DIR --preview docs/sample_data.png``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lib.data.atomic import atomic_path

    if items is None:
        items = list(generate(patients, seed, image_size, 0.4))
    picked = {label: _pick_examples(items, label, columns) for label in ("normal", "distended")}
    rows = [r for r in ("normal", "distended") if picked[r]]
    height, width = items[0].image.shape
    fig, axes = plt.subplots(
        len(rows), columns, figsize=(4.0 * columns, (4.0 * height / width + 0.35) * len(rows)), squeeze=False
    )
    for r, label in enumerate(rows):
        for c in range(columns):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(picked[label]):
                continue
            item = picked[label][c]
            ax.imshow(item.image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            x0, y0, x1, y1 = item.box
            ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="yellow", lw=1.0))
            if item.mask is not None:
                ax.contour(item.mask.astype(float), levels=[0.5], colors="cyan", linewidths=0.8)
            tag = ", borderline" if item.borderline else ""
            ax.set_title(f"{item.name}: {label}{tag}, recess {item.recess_mm:.1f} mm", fontsize=8, pad=3)
    fig.tight_layout(pad=0.4, h_pad=0.8)
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
