"""Memory accounting: what one training step holds, by module."""

from leantrain.memory.saved_tensors import SavedBytes, saved_tensor_bytes
