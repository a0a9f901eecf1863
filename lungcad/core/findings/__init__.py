"""Findings, not cubes: a nodule's mask in patient mm gives its centre, size (three ways),
type and Lung-RADS category, and tells which findings are one nodule."""
