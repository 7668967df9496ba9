"""Memory-lean companions: exact drop-in replacements that keep less for backward."""

from leantrain.lean.config import CHUNKED_LOSS_ONLY, LeanConfig
from leantrain.lean.surgery import apply_lean, lean_modules, remove_lean
