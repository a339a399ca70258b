"""Appearance of a synthetic identity: garments, hair, build and belongings drawn from small palettes.

Colours are BGR (OpenCV order). The garment palette is deliberately small so that many identities share
each colour; identities differ by the *combination* of attributes, not by one colour.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

Color = tuple[int, int, int]

# Garment palette, most common colours first; ``palette_size`` keeps the first N.
PALETTE: tuple[tuple[str, Color], ...] = (
    ("black", (32, 32, 34)), ("white", (222, 224, 226)), ("grey", (128, 126, 124)),
    ("navy", (92, 46, 26)), ("red", (40, 36, 178)), ("khaki", (112, 160, 182)),
    ("green", (62, 122, 48)), ("lightblue", (214, 164, 110)), ("yellow", (46, 192, 222)),
    ("pink", (168, 130, 222)), ("purple", (128, 52, 110)), ("orange", (30, 120, 226)),
)
SHOES: tuple[tuple[str, Color], ...] = (
    ("black", (25, 25, 25)), ("white", (230, 230, 230)), ("brown", (40, 70, 110)),
    ("grey", (110, 110, 110)), ("red", (40, 40, 170)),
)
HAIR: tuple[tuple[str, Color], ...] = (
    ("black", (20, 20, 24)), ("darkbrown", (30, 45, 65)), ("brown", (45, 75, 115)),
    ("blonde", (110, 175, 210)), ("grey", (165, 165, 160)),
)
SKIN: tuple[Color, ...] = ((190, 210, 240), (160, 185, 225), (130, 160, 200), (95, 125, 170), (60, 85, 120))

PATTERNS = ("plain", "stripes", "logo")
LOWER_TYPES = ("trousers", "shorts", "skirt")
HAIR_STYLES = ("short", "long", "cap")
BELONGINGS = ("none", "backpack", "bag")


@dataclass(frozen=True)
class Identity:
    """Everything that makes one person look like themselves, in every camera and frame."""

    upper: str                 # palette colour names
    upper_color: Color
    sleeves: str               # "long" | "short"
    pattern: str               # one of PATTERNS
    pattern_color: Color       # stripe / logo colour
    lower: str
    lower_color: Color
    lower_type: str            # one of LOWER_TYPES
    shoes: str
    shoes_color: Color
    hair: str
    hair_color: Color
    hair_style: str            # one of HAIR_STYLES
    cap_color: Color
    skin_color: Color
    belongings: str            # one of BELONGINGS
    belongings_color: Color
    bag_side: str              # "l" | "r": shoulder-bag side
    build: float               # width factor, ~0.85..1.2
    head_scale: float          # head size factor
    leg_ratio: float           # hip height as a share of body height
    gait_speed: float          # gait phase advance per frame (rad)
    arm_swing: float           # arm swing amplitude (rad)

    def signature(self) -> tuple:
        """The categorical attributes; two identities with equal signatures are look-alikes."""
        return (self.upper, self.sleeves, self.pattern, self.lower, self.lower_type, self.shoes,
                self.hair, self.hair_style, self.belongings)

    def attributes(self) -> dict:
        """Categorical and numeric attributes as plain values (for ``identities.csv``)."""
        d = asdict(self)
        return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d.items() if not k.endswith("color")}


def _jitter(rng: np.random.Generator, color: Color, amount: int = 12) -> Color:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in color)  # type: ignore[return-value]


def _pick(rng: np.random.Generator, table: tuple, p: list[float] | None = None) -> tuple:
    return table[int(rng.choice(len(table), p=p))]


def _palette_probs(n: int) -> np.ndarray:
    w = 1.0 / (1.0 + 0.15 * np.arange(n))      # dark/common colours a little more likely
    return w / w.sum()


def sample_identity(rng: np.random.Generator, palette_size: int) -> Identity:
    """Draw one identity's appearance from ``rng``."""
    pal = PALETTE[:palette_size]
    probs = list(_palette_probs(len(pal)))
    upper, upper_c = _pick(rng, pal, probs)
    lower, lower_c = _pick(rng, pal, probs)
    pattern = PATTERNS[int(rng.choice(3, p=[0.6, 0.2, 0.2]))]
    others = [c for c in pal if c[0] != upper]
    _, pattern_c = others[int(rng.integers(len(others)))]
    shoes, shoes_c = _pick(rng, SHOES, [0.35, 0.25, 0.2, 0.12, 0.08])
    hair, hair_c = _pick(rng, HAIR, [0.35, 0.25, 0.2, 0.12, 0.08])
    _, cap_c = _pick(rng, pal)
    _, bag_c = _pick(rng, pal)
    return Identity(
        upper=upper, upper_color=_jitter(rng, upper_c), sleeves="long" if rng.random() < 0.55 else "short",
        pattern=pattern, pattern_color=_jitter(rng, pattern_c),
        lower=lower, lower_color=_jitter(rng, lower_c),
        lower_type=LOWER_TYPES[int(rng.choice(3, p=[0.65, 0.2, 0.15]))],
        shoes=shoes, shoes_color=_jitter(rng, shoes_c, 8), hair=hair, hair_color=_jitter(rng, hair_c, 8),
        hair_style=HAIR_STYLES[int(rng.choice(3, p=[0.5, 0.3, 0.2]))], cap_color=_jitter(rng, cap_c),
        skin_color=_jitter(rng, SKIN[int(rng.integers(len(SKIN)))], 8),
        belongings=BELONGINGS[int(rng.choice(3, p=[0.5, 0.28, 0.22]))], belongings_color=_jitter(rng, bag_c),
        bag_side="l" if rng.random() < 0.5 else "r",
        build=float(rng.uniform(0.85, 1.2)), head_scale=float(rng.uniform(0.92, 1.08)),
        leg_ratio=float(rng.uniform(0.5, 0.55)), gait_speed=float(rng.uniform(0.32, 0.5)),
        arm_swing=float(rng.uniform(0.25, 0.5)),
    )


def sample_identities(rng: np.random.Generator, n: int, palette_size: int,
                      taken: set[tuple] | None = None) -> list[Identity]:
    """Draw ``n`` identities whose signatures differ from each other and from ``taken`` (updated in place).

    Gives up on uniqueness after a few tries (tiny palettes), so it always returns ``n`` identities.
    """
    taken = set() if taken is None else taken
    out = []
    for _ in range(n):
        for _attempt in range(20):
            ident = sample_identity(rng, palette_size)
            if ident.signature() not in taken:
                break
        taken.add(ident.signature())
        out.append(ident)
    return out
