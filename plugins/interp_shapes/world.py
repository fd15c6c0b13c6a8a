"""The shapes world: a synthetic image world whose ground truth is known.

Images (32 x 32 RGB by default) show one or two coloured shapes on a textured background.
Every sample is a pure function of ``(seed, split, index)``, so datasets are random-access
and reproducible without storing any image. Only numpy and PIL are used here.

Attributes of an object: ``color`` (8), ``shape`` (6), ``size`` (small / large), ``position``
(5). Attribute of the image: ``background`` (5 textures). Captions are drawn from several
templates with synonyms and optional parts, so that the language is not a fixed list of
slots; :func:`vocabulary_phrases` lists every word and phrase the captions can contain.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 32
SUPERSAMPLE = 4

# --------------------------------------------------------------------------------------
# Attributes and their words
# --------------------------------------------------------------------------------------

#: Object colours (saturated, so that they do not look like the muted background textures).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (230, 25, 25),
    "green": (20, 210, 40),
    "blue": (30, 70, 255),
    "yellow": (250, 235, 20),
    "purple": (140, 30, 200),
    "orange": (255, 135, 0),
    "pink": (255, 105, 200),
    "cyan": (0, 235, 235),
}
SHAPES = ("circle", "square", "triangle", "star", "cross", "hexagon")
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right", "center")
BACKGROUNDS = ("grass", "water", "sand", "snow", "brick")

COLOR_SYNONYMS = {
    "red": ["red", "red", "crimson", "scarlet"],
    "green": ["green", "green", "lime"],
    "blue": ["blue", "blue", "azure"],
    "yellow": ["yellow", "yellow", "golden"],
    "purple": ["purple", "purple", "violet"],
    "orange": ["orange", "orange", "tangerine"],
    "pink": ["pink", "pink", "rose"],
    "cyan": ["cyan", "cyan", "turquoise"],
}
SHAPE_SYNONYMS = {
    "circle": ["circle", "circle", "disk", "round shape"],
    "square": ["square", "square", "box"],
    "triangle": ["triangle", "triangle"],
    "star": ["star", "star"],
    "cross": ["cross", "cross", "plus sign"],
    "hexagon": ["hexagon", "hexagon"],
}
SIZE_SYNONYMS = {
    "small": ["small", "small", "tiny", "little"],
    "large": ["large", "large", "big"],
}
POSITION_PHRASES = {
    "top left": ["in the top left", "in the top left", "at the top left", "in the upper left"],
    "top right": ["in the top right", "in the top right", "at the top right", "in the upper right"],
    "bottom left": ["in the bottom left", "in the bottom left", "at the bottom left",
                    "in the lower left"],
    "bottom right": ["in the bottom right", "in the bottom right", "at the bottom right",
                     "in the lower right"],
    "center": ["in the center", "in the center", "in the middle"],
}
BACKGROUND_PHRASES = {
    "grass": ["on grass", "on grass", "on a grassy field", "on the lawn"],
    "water": ["on water", "on water", "on the sea", "over water"],
    "sand": ["on sand", "on sand", "on a beach", "on the sand"],
    "snow": ["on snow", "on snow", "in the snow", "on a snowy field"],
    "brick": ["on brick", "on a brick wall", "on brick", "against bricks"],
}
#: Generic nouns used when a caption does not name the shape.
GENERIC_NOUNS = ["object", "shape", "thing"]
PREFIXES = ["a photo of", "a photo of", "an image of", "a picture of", "", "there is"]

#: Zero-shot prompt templates per attribute (used by the quality command; every word in
#: them appears in training captions). ``{}`` is replaced by the canonical attribute name.
ZEROSHOT_TEMPLATES = {
    "color": ["a photo of a {} object", "a {} shape", "a picture of a {} thing"],
    "shape": ["a photo of a {}", "a {}", "an image of a {}"],
    "size": ["a photo of a {} object", "a {} shape", "an image of a {} thing"],
    "position": ["a photo of an object {}", "a shape {}", "a picture of a thing {}"],
    "background": ["a photo of a shape {}", "an image of an object {}", "a thing {}"],
}
#: How an attribute value becomes the text put into a zero-shot template.
ZEROSHOT_CLASSNAMES = {
    "color": {c: c for c in COLORS},
    "shape": {s: s for s in SHAPES},
    "size": {s: s for s in SIZES},
    "position": {p: POSITION_PHRASES[p][0] for p in POSITIONS},
    "background": {b: BACKGROUND_PHRASES[b][0] for b in BACKGROUNDS},
}

ATTRIBUTES = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "size": SIZES,
    "position": POSITIONS,
    "background": BACKGROUNDS,
}

# Object centres (in [0, 1] image coordinates) and radii (fraction of the image side).
_CENTERS = {
    "top left": (0.25, 0.25),
    "top right": (0.75, 0.25),
    "bottom left": (0.25, 0.75),
    "bottom right": (0.75, 0.75),
    "center": (0.5, 0.5),
}
_RADIUS = {"small": 0.13, "large": 0.22}
_JITTER = 0.03  # centre jitter, fraction of the image side


def article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


# --------------------------------------------------------------------------------------
# Backgrounds: fixed texture tiles, cropped at a random offset per image
# --------------------------------------------------------------------------------------

_TILE = 96


def _smooth_noise(rng, n, scale):
    """Value noise: random grid of size n/scale, bilinearly upsampled to n x n."""
    g = max(2, n // scale + 2)
    coarse = rng.random((g, g))
    img = Image.fromarray((coarse * 255).astype(np.uint8)).resize(
        (n + 2 * scale, n + 2 * scale), Image.BILINEAR)
    return np.asarray(img, dtype=np.float32)[scale:scale + n, scale:scale + n] / 255.0


@functools.lru_cache(maxsize=None)
def background_tile(name: str) -> np.ndarray:
    """A ``(_TILE, _TILE, 3)`` uint8 texture tile for a background name (fixed seed)."""
    seed = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    n = _TILE
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    fine = rng.random((n, n)).astype(np.float32)
    if name == "grass":
        # dark olive green with vertical blade streaks
        streak = _smooth_noise(rng, n, 2)
        blades = np.asarray(Image.fromarray((rng.random((n // 6, n)) * 255).astype(np.uint8))
                            .resize((n, n), Image.BILINEAR), np.float32) / 255
        t = 0.5 * streak + 0.5 * blades
        base = np.array([55, 95, 35], np.float32)
        rgb = base[None, None] * (0.7 + 0.6 * t[..., None]) + 10 * (fine[..., None] - 0.5)
    elif name == "water":
        # deep blue-teal with horizontal waves
        waves = 0.5 + 0.5 * np.sin(yy * 0.9 + 2.0 * np.sin(xx * 0.25))
        t = 0.6 * waves + 0.4 * _smooth_noise(rng, n, 6)
        rgb = (np.array([25, 55, 95], np.float32)[None, None]
               + t[..., None] * np.array([25, 45, 55], np.float32)[None, None])
    elif name == "sand":
        # pale tan with fine grain and soft dunes
        t = 0.6 * _smooth_noise(rng, n, 12) + 0.4 * fine
        rgb = (np.array([175, 150, 105], np.float32)[None, None]
               + (t[..., None] - 0.5) * np.array([50, 45, 35], np.float32)[None, None])
    elif name == "snow":
        # light blue-grey with sparse bright speckles
        t = _smooth_noise(rng, n, 8)
        rgb = (np.array([200, 205, 215], np.float32)[None, None]
               + (t[..., None] - 0.5) * 30)
        speck = fine > 0.93
        rgb[speck] = 250
    elif name == "brick":
        # brown-red bricks with grey mortar lines in a running bond
        rgb = np.empty((n, n, 3), np.float32)
        rgb[:] = np.array([120, 60, 45], np.float32)
        shade = rng.random((n // 6 + 1, n // 8 + 2)) * 0.3 + 0.85
        row = (yy // 6).astype(int)
        col = ((xx + (row % 2) * 4) // 8).astype(int)
        rgb *= shade[row, col][..., None]
        mortar = (yy % 6 == 0) | (((xx + (row % 2) * 4) % 8) == 0)
        rgb[mortar] = np.array([150, 145, 135], np.float32)
        rgb += 8 * (fine[..., None] - 0.5)
    else:  # pragma: no cover - guarded by BACKGROUNDS
        raise ValueError(name)
    return np.clip(rgb, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------
# Shapes
# --------------------------------------------------------------------------------------


def _polygon(shape: str, cx: float, cy: float, r: float, rot: float):
    if shape == "square":
        k, r0, off = 4, r * 1.0, np.pi / 4
        ang = off + rot + np.arange(k) * 2 * np.pi / k
        return [(cx + r0 * 1.2 * np.cos(a), cy + r0 * 1.2 * np.sin(a)) for a in ang]
    if shape == "triangle":
        ang = -np.pi / 2 + rot + np.arange(3) * 2 * np.pi / 3
        return [(cx + r * 1.2 * np.cos(a), cy + r * 1.2 * np.sin(a) + 0.15 * r) for a in ang]
    if shape == "hexagon":
        ang = rot + np.arange(6) * 2 * np.pi / 6
        return [(cx + r * 1.05 * np.cos(a), cy + r * 1.05 * np.sin(a)) for a in ang]
    if shape == "star":
        pts = []
        for j in range(10):
            a = -np.pi / 2 + rot + j * np.pi / 5
            rr = r * 1.25 if j % 2 == 0 else r * 0.5
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        return pts
    if shape == "cross":
        w = r * 0.38
        L = r * 1.1
        base = [(-w, -L), (w, -L), (w, -w), (L, -w), (L, w), (w, w), (w, L), (-w, L),
                (-w, w), (-L, w), (-L, -w), (-w, -w)]
        c, s = np.cos(rot), np.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(shape)


def shape_alpha(shape: str, cx: float, cy: float, r: float, rot: float = 0.0,
                size: int = IMAGE_SIZE) -> np.ndarray:
    """Antialiased coverage ``(size, size)`` float32 in [0, 1] of one shape (pixels units)."""
    ss = SUPERSAMPLE
    im = Image.new("L", (size * ss, size * ss), 0)
    d = ImageDraw.Draw(im)
    if shape == "circle":
        d.ellipse([(cx - r) * ss, (cy - r) * ss, (cx + r) * ss, (cy + r) * ss], fill=255)
    else:
        d.polygon([(x * ss, y * ss) for x, y in _polygon(shape, cx, cy, r, rot)], fill=255)
    small = im.resize((size, size), Image.BOX)
    return np.asarray(small, dtype=np.float32) / 255.0


# --------------------------------------------------------------------------------------
# Scenes and samples
# --------------------------------------------------------------------------------------


@dataclass
class ObjectSpec:
    color: str
    shape: str
    size: str
    position: str

    def to_dict(self) -> dict:
        return {"color": self.color, "shape": self.shape, "size": self.size,
                "position": self.position}


@dataclass
class Scene:
    background: str
    objects: list[ObjectSpec] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {"background": self.background, "objects": [o.to_dict() for o in self.objects]}
        if len(self.objects) == 1:
            d.update(self.objects[0].to_dict())
        return d


_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def split_id(split: str) -> int:
    if split in _SPLIT_IDS:
        return _SPLIT_IDS[split]
    return int(hashlib.sha256(split.encode()).hexdigest()[:8], 16)


def sample_rng(seed: int, split: str, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of sample ``index``: depends only on its arguments."""
    return np.random.default_rng([int(seed), split_id(split), int(index), int(stream)])


def random_scene(rng: np.random.Generator, one_object_prob: float = 0.7, *,
                 colors=None, shapes=None, sizes=None, positions=None,
                 backgrounds=None) -> Scene:
    colors = list(colors or COLORS)
    shapes = list(shapes or SHAPES)
    sizes = list(sizes or SIZES)
    positions = list(positions or POSITIONS)
    backgrounds = list(backgrounds or BACKGROUNDS)
    bg = backgrounds[rng.integers(len(backgrounds))]
    n_obj = 1 if rng.random() < one_object_prob else 2
    pos = rng.choice(len(positions), size=min(n_obj, len(positions)), replace=False)
    objs = []
    for k in range(len(pos)):
        objs.append(ObjectSpec(
            color=colors[rng.integers(len(colors))],
            shape=shapes[rng.integers(len(shapes))],
            size=sizes[rng.integers(len(sizes))],
            position=positions[pos[k]],
        ))
    if len(objs) == 2:
        # draw a centre object last so that it is not hidden behind a corner one
        objs.sort(key=lambda o: o.position == "center")
        # two objects of identical colour and shape would make "a red circle" ambiguous to
        # count; keep them distinct in at least one of colour / shape
        if objs[0].color == objs[1].color and objs[0].shape == objs[1].shape:
            others = [s for s in shapes if s != objs[0].shape] or shapes
            objs[1].shape = others[rng.integers(len(others))]
    return Scene(bg, objs)


def render(scene: Scene, rng: np.random.Generator, size: int = IMAGE_SIZE):
    """Draw a scene; returns ``(image uint8 (H, W, 3), mask int (H, W))``."""
    tile = background_tile(scene.background)
    oy, ox = rng.integers(0, _TILE - size, size=2)
    img = tile[oy:oy + size, ox:ox + size].astype(np.float32)
    mask = np.zeros((size, size), dtype=np.int64)
    for k, obj in enumerate(scene.objects, start=1):
        fx, fy = _CENTERS[obj.position]
        jx, jy = rng.uniform(-_JITTER, _JITTER, size=2)
        cx, cy = (fx + jx) * size, (fy + jy) * size
        r = _RADIUS[obj.size] * size * rng.uniform(0.92, 1.08)
        rot = 0.0 if obj.shape == "circle" else rng.uniform(-0.2, 0.2)
        a = shape_alpha(obj.shape, cx, cy, r, rot, size)[..., None]
        col = np.array(COLORS[obj.color], np.float32)
        # slight shading so that objects are not perfectly flat
        col = np.clip(col * rng.uniform(0.9, 1.05), 0, 255)
        img = img * (1 - a) + col[None, None] * a
        mask[a[..., 0] >= 0.5] = k
    return np.clip(img + 0.5, 0, 255).astype(np.uint8), mask


# --------------------------------------------------------------------------------------
# Captions
# --------------------------------------------------------------------------------------


def _pick(rng, items):
    return items[rng.integers(len(items))]


def _object_phrase(rng, obj: ObjectSpec, *, p_color=0.85, p_shape=0.8, p_size=0.5,
                   p_pos=0.65, force_shape=False) -> str:
    words = []
    if rng.random() < p_size:
        words.append(_pick(rng, SIZE_SYNONYMS[obj.size]))
    if rng.random() < p_color:
        words.append(_pick(rng, COLOR_SYNONYMS[obj.color]))
    if force_shape or rng.random() < p_shape:
        words.append(_pick(rng, SHAPE_SYNONYMS[obj.shape]))
    else:
        words.append(_pick(rng, GENERIC_NOUNS))
    phrase = " ".join(words)
    phrase = f"{article(phrase)} {phrase}"
    if rng.random() < p_pos:
        phrase += " " + _pick(rng, POSITION_PHRASES[obj.position])
    return phrase


def caption(scene: Scene, rng: np.random.Generator, *, p_background: float = 0.5,
            shape_weight: float = 0.8, p_position: float = 0.65, p_size: float = 0.5) -> str:
    """One caption of a scene, drawn from the templates with synonyms and optional parts.

    ``p_background`` / ``shape_weight`` / ``p_position`` / ``p_size``: how often the
    background, the shape's name (else a generic noun), the position and the size are
    mentioned (the training of the CLIP raises them to 1 for its contrast groups).
    """
    bg = " " + _pick(rng, BACKGROUND_PHRASES[scene.background]) if rng.random() < p_background else ""
    prefix = _pick(rng, PREFIXES)
    if len(scene.objects) == 0:
        return f"a photo of {_pick(rng, BACKGROUND_PHRASES[scene.background]).split(' ', 1)[1]}"
    if len(scene.objects) == 1:
        obj = scene.objects[0]
        form = rng.random()
        if form < 0.12 and rng.random() < 0.9:
            # "a circle that is red", "a shape that is small and red"
            noun = _pick(rng, SHAPE_SYNONYMS[obj.shape]) if rng.random() < shape_weight else _pick(rng, GENERIC_NOUNS)
            adjs = [_pick(rng, COLOR_SYNONYMS[obj.color])]
            if rng.random() < (0.4 if p_size == 0.5 else p_size):
                adjs.insert(0, _pick(rng, SIZE_SYNONYMS[obj.size]))
            text = f"{article(noun)} {noun} that is {' and '.join(adjs)}"
            if rng.random() < (0.5 if p_position == 0.65 else p_position):
                text += " " + _pick(rng, POSITION_PHRASES[obj.position])
            return (f"{prefix} {text}".strip()) + bg
        text = _object_phrase(rng, obj, p_shape=shape_weight, p_pos=p_position, p_size=p_size)
    else:
        a, b = scene.objects
        text = (_object_phrase(rng, a, p_pos=0.7, p_shape=shape_weight) + " and "
                + _object_phrase(rng, b, p_pos=0.7, p_shape=shape_weight))
        if rng.random() < 0.2:
            prefix = "two shapes:" if rng.random() < 0.5 else "two objects:"
    return (f"{prefix} {text}".strip()) + bg


# --------------------------------------------------------------------------------------
# The language, as a list of words and short phrases
# --------------------------------------------------------------------------------------


def vocabulary_phrases() -> list[str]:
    """Every word and short phrase of the caption language, deduplicated, in a stable order.

    Built from the same lists the caption generator draws from, so nothing here is a word
    the CLIP never saw in training (templates' function words such as "a", "of", "the" and
    "is" are left out: they carry no concept).
    """
    out: list[str] = []

    def add(x):
        if x and x not in out:
            out.append(x)

    for c in COLORS:
        for s in COLOR_SYNONYMS[c]:
            add(s)
    for s in SHAPES:
        for w in SHAPE_SYNONYMS[s]:
            add(w)
    for s in SIZES:
        for w in SIZE_SYNONYMS[s]:
            add(w)
    for p in POSITIONS:
        add(p)
        for w in POSITION_PHRASES[p]:
            add(w)
        add(p.replace("top", "upper").replace("bottom", "lower") if p != "center" else "middle")
    for b in BACKGROUNDS:
        add(b)
        for w in BACKGROUND_PHRASES[b]:
            add(w)
    for w in GENERIC_NOUNS:
        add(w)
    for w in ["photo", "image", "picture", "two shapes", "two objects"]:
        add(w)
    # colour + shape and size + shape phrases (seen as adjacent words in captions)
    for c in COLORS:
        for s in SHAPES:
            add(f"{c} {s}")
    for z in SIZES:
        for s in SHAPES:
            add(f"{z} {s}")
    for z in SIZES:
        for c in COLORS:
            add(f"{z} {c}")
    return out


def make_sample(scene: Scene, rng: np.random.Generator, size: int = IMAGE_SIZE, **caption_kw) -> dict:
    img, mask = render(scene, rng, size)
    return {
        "image": Image.fromarray(img),
        "mask": mask,
        "caption": caption(scene, rng, **caption_kw),
        "attributes": scene.to_dict(),
    }


# --------------------------------------------------------------------------------------
# The example images shipped in examples/ (README)
# --------------------------------------------------------------------------------------

EXAMPLES_SEED = 2024


def example_scenes() -> dict[str, Scene]:
    """The scenes of the images in the repository's ``examples/`` folder, by file stem."""
    O = ObjectSpec
    return {
        "red_circle": Scene("grass", [O("red", "circle", "large", "top left")]),
        "blue_square_on_water": Scene("water", [O("blue", "square", "large", "center")]),
        "yellow_star_and_purple_cross": Scene(
            "sand", [O("yellow", "star", "large", "top right"), O("purple", "cross", "small", "bottom left")]),
        "green_triangle_on_snow": Scene("snow", [O("green", "triangle", "small", "bottom right")]),
        "orange_hexagon_on_brick": Scene("brick", [O("orange", "hexagon", "large", "center")]),
    }


def render_examples(size: int = IMAGE_SIZE) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{stem: (image, mask)}`` for :func:`example_scenes` (deterministic)."""
    return {name: render(scene, sample_rng(EXAMPLES_SEED, "examples", i), size)
            for i, (name, scene) in enumerate(example_scenes().items())}
