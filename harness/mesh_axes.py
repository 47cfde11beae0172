"""Names of the device-mesh axes shared by every part of the harness."""

DATA = "data"
FSDP = "fsdp"
CONTEXT = "context"
TENSOR = "tensor"
AXES = (DATA, FSDP, CONTEXT, TENSOR)
BATCH_AXES = (DATA, FSDP)
