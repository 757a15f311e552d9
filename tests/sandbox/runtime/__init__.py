"""The runtime's tests import it as a jail does: `stepwell`, `boot`, `zygote` and
`json_codec` as top-level modules, from the runtime directory put first on sys.path
here, before any of them (or another test file that imports activations) is imported."""

import sys

from execution.sandbox.config import RUNTIME_DIR

if str(RUNTIME_DIR) not in sys.path:
    sys.path.insert(0, str(RUNTIME_DIR))
