"""Memory accounting: what one training step holds, by module, and its measured peak."""

from leantrain.memory.measure import measure_memory
from leantrain.memory.peak import PeakMemory, PickledStep
from leantrain.memory.report import MemoryReport
from leantrain.memory.saved_tensors import SavedBytes, saved_tensor_bytes, track_saved_tensors
