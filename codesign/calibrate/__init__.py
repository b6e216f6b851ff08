"""Measuring a target and fitting its efficiency model (`codesign calibrate`).

`suites` says what to measure (GEMM grids, attention, memory-bound kernels, launches), as
small models compiled by codesign itself; `profile` runs a compiled model and times each of
its kernels beside the cost model's features for it; `fit` turns those measurements into a
`Calibration` (deterministically: the same raw data gives the same file, byte for byte);
`validate` compares a calibrated model's predictions with measurements of models the fit
never saw.
"""
