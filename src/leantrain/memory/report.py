"""What one training step holds, as a dataclass with a table renderer and a JSON-ready dict."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from leantrain.memory.peak import PeakMemory
from leantrain.memory.saved_tensors import SavedBytes

MIB = 2**20


@dataclass
class MemoryReport:
    """Bytes of one full training step (forward, backward, optimizer step) of ``model_type``."""

    model_type: str
    loss: float
    saved: SavedBytes
    parameter_bytes: int
    trainable_parameter_bytes: int
    buffer_bytes: int
    gradient_bytes: int
    optimizer_state_bytes: int
    batch_bytes: int
    peak: PeakMemory | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_table(self, top: int = 10) -> str:
        """Totals, saved bytes by module type, and the ``top`` module names that save the most."""
        saved_total = max(self.saved.total, 1)
        lines = [f"one training step of {self.model_type} (loss {self.loss:.4f})", "",
                 f"{'what':<52}{'MiB':>10}{'share':>8}"]

        def row(what: str, size: int, share: str = "") -> None:
            lines.append(f"{what:<52}{size / MIB:>10.2f}{share:>8}")

        row("saved for backward (activations)", self.saved.total)
        for kind, size in sorted(self.saved.by_type.items(), key=lambda kv: -kv[1]):
            row(f"  {kind}", size, f"{100 * size / saved_total:.1f}%")
        row("parameters", self.parameter_bytes)
        row("  of which trainable", self.trainable_parameter_bytes)
        row("buffers", self.buffer_bytes)
        row("gradients", self.gradient_bytes)
        row("optimizer states", self.optimizer_state_bytes)
        row("batch", self.batch_bytes)
        if self.peak is not None:
            row("measured peak of the step above resident", self.peak.step_bytes)
            row("  resident before the step", self.peak.resident_bytes)
            if self.peak.total_bytes is not None:
                row("measured total: peak above the RSS before the build", self.peak.total_bytes)
            lines.append(f"  (peak measured by {self.peak.method})")
        lines += ["", f"top {top} modules by bytes saved for backward:"]
        for name, size in sorted(self.saved.by_name.items(), key=lambda kv: -kv[1])[:top]:
            row(f"  {name or '(model itself)'}", size, f"{100 * size / saved_total:.1f}%")
        return "\n".join(lines)
