"""outside-hello's result (no torch)."""

from __future__ import annotations

from dataclasses import dataclass, field

from interpcore import Result


@dataclass
class HelloResult(Result):
    backbone: str
    embed_dim: int
    images: list = field(default_factory=list)
    closest: list = field(default_factory=list)
    vocabulary: str | None = None

    def __str__(self) -> str:
        lines = [f"Hello from interp-outside: {self.backbone} embeds into {self.embed_dim} dimensions."]
        for image, word in zip(self.images, self.closest):
            lines.append(f"\t{image}\t{word if word is not None else '(no text encoder)'}")
        return "\n".join(lines)
