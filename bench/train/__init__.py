"""Training and the shared preference machinery methods call: the accelerate loop, models,
verifiers, the micro base build, multi-process helpers."""
