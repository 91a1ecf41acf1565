"""The model a user prunes: reference architectures (`reference`), a user's own factories (`sources`), checkpoints
that record where a model came from (`checkpoint`), the analysis of its layers into channel groups and KernelSpecs
(`graph`), and the surgery that applies a candidate, narrowing channels and masking weight blocks (`apply`)."""
